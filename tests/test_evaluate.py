"""``fastinterp evaluate --quick`` end to end with its defaults (the shipped CNNs and generators,
as CI runs it): every table cell filled and finite, figures written; the statistics it prints;
the generator-only call the CGM ablation uses."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import fastinterp
from fastinterp import pretrained
from fastinterp.cli.evaluate import main as main_evaluate
from fastinterp.evaluation.report import DEFAULT_CNNS, DEFAULT_GENERATORS
from fastinterp.evaluation.stats import mean_se, paired


def table_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-:|]+\|?", line.replace(" ", "")):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_evaluate_quick_fills_every_cell(tmp_path):
    assert main_evaluate(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    report = (tmp_path / "evaluation.md").read_text()
    rows = table_rows(report)
    assert len(rows) > 20
    for row in rows:
        for cell in row:
            assert cell and cell not in ("-", "—"), f"empty cell in {row}"
            assert not re.search(r"\bnan\b|\binf\b", cell, re.IGNORECASE), f"non-finite cell in {row}"
    for cnn in DEFAULT_CNNS:
        assert f"## {cnn}" in report
        assert (tmp_path / "figures" / f"grid_{cnn}.png").stat().st_size > 10_000
    first = DEFAULT_CNNS[0]  # the CGM ablation runs on the first CNN (the generators' domain)
    assert (tmp_path / "figures" / f"ablation_{first}.png").stat().st_size > 10_000
    # every baseline and every shipped generator has a row in each quality table
    labels = ["Grad-CAM", "Grad-CAM++", "LayerCAM", "Score-CAM", "RISE", *DEFAULT_GENERATORS]
    quality = [row[0] for row in rows if len(row) == 11]
    for label in labels:
        assert sum(name == label or name.startswith(label + " (") for name in quality) == len(DEFAULT_CNNS)
    state = json.loads((tmp_path / "evaluation.json").read_text())

    def finite(value):
        if isinstance(value, dict):
            return all(finite(v) for v in value.values())
        if isinstance(value, list):
            return all(finite(v) for v in value)
        return not isinstance(value, float) or math.isfinite(value)

    assert finite(state["results"]) and finite(state["ablations"])
    assert "Targets:" in report and "fastinterp evaluate --quick" in report
    # --render-only rewrites the same report from the JSON, with a reading, computing nothing
    (tmp_path / "reading.md").write_text("The generator reads the last CGM.")
    assert main_evaluate(["--render-only", "--out", str(tmp_path), "--reading", str(tmp_path / "reading.md")]) == 0
    rendered = (tmp_path / "evaluation.md").read_text()
    assert rendered.replace("\n## Reading\n\nThe generator reads the last CGM.\n", "") == report


def test_statistics_helpers():
    assert mean_se([1.0]) == (1.0, 0.0)
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3 / 4))
    assert paired([2.0, 3.0, 5.0], [1.0, 2.0, 4.0]) == (1.0, 0.0)  # same images: no spread in the difference


def test_generate_equals_explain_on_its_own_cgm():
    cnn_path, generator_path = pretrained.path("digits-mobilenet_v3_small"), pretrained.path("fast")
    from fastinterp.datasets.zoo import load_cnn

    cnn, _ = load_cnn(cnn_path)
    explainer = fastinterp.compile(cnn, generator_path)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = explainer.explain(images, return_cgm=True)
    assert torch.allclose(explainer.generate(images, out.cgm), out.maps, atol=1e-6)
    changed = out.cgm.clone()
    changed[:, 7] = 0
    assert (explainer.generate(images, changed) - out.maps).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cgm"):
        explainer.generate(images, out.cgm[:, :4])
    with pytest.raises(ValueError, match="images"):
        explainer.generate(images[:2], out.cgm)


def test_ranking_and_targets_logic_on_hand_made_results():
    from fastinterp.evaluation.report import _separability, _targets

    methods = {"gradcam": {"label": "Grad-CAM", "kind": "baseline", "teacher": None},
               "rise": {"label": "RISE", "kind": "baseline", "teacher": None},
               "fast": {"label": "fast (gradient)", "kind": "generator", "teacher": "gradcam"}}
    n = 10
    row = lambda d, i, p: {"deletion": [d] * n, "insertion": [i] * n, "drop": [1.0] * n, "increase": [0.0] * n,
                           "road": [0.1] * n, "pointing": p, "energy": [0.5] * n, "iou": [0.3] * n}
    result = {"methods": methods, "per_image": {
        "gradcam": row(0.30, 0.70, [1.0] * 5 + [0.0] * 5),
        "rise": row(0.10, 0.90, [1.0] * 9 + [0.0]),
        # the generator: deletion worse than its teacher by 0.05 on every image (SE 0): missed;
        # insertion better: met; pointing 6 of 10 vs Grad-CAM's 5: met
        "fast": row(0.35, 0.75, [1.0] * 6 + [0.0] * 4)}}
    ranking = "\n".join(_separability(result))
    assert "Deletion AUC: best RISE, runner-up Grad-CAM" in ranking  # lower deletion is better
    assert "Insertion AUC: best RISE, runner-up fast (gradient)" in ranking  # higher insertion is better
    targets = "\n".join(_targets(result))
    assert "Deletion AUC: +0.0500 ± 0.0000 (paired) -> **missed**" in targets
    assert "Insertion AUC: +0.0500 ± 0.0000 (paired) -> **met**" in targets
    assert "0.600 vs Grad-CAM 0.500" in targets and "-> **met**" in targets.splitlines()[-1]
    assert _separability({"methods": methods, "per_image": {"rise": result["per_image"]["rise"]}}) == [
        "- one method only: nothing to rank"]


def test_distillation_table_on_hand_made_results():
    from fastinterp.evaluation.report import distillation_table

    n = 4
    row = lambda d, i: {"deletion": [d] * n, "insertion": [i] * n, "pointing": [1.0, 1.0, 0.0, 0.0]}
    methods = {"score-cam": {"label": "Score-CAM", "kind": "baseline", "teacher": None},
               "rise": {"label": "RISE", "kind": "baseline", "teacher": None},
               "sc": {"label": "sc (gradient)", "kind": "generator", "teacher": "score-cam"},
               "ri": {"label": "ri (gradient)", "kind": "generator", "teacher": "rise"},
               "gc": {"label": "gc (gradient)", "kind": "generator", "teacher": "gradcam"}}
    result = {"methods": methods,
              "per_image": {"score-cam": row(0.10, 0.90), "rise": row(0.10, 0.90),
                            "sc": row(0.105, 0.82),  # 91% of the insertion, deletion +5%: both met
                            "ri": row(0.12, 0.80),  # 89% of the insertion, deletion +20%: both missed
                            "gc": row(0.5, 0.5)},
              "cost": {"score-cam": {"ms_per_image": 800.0}, "rise": {"ms_per_image": 600.0},
                       "sc": {"ms_per_image": 40.0}, "ri": {"ms_per_image": 6.0}, "gc": {"ms_per_image": 1.0}},
              "fidelity": {"sc": {"teacher": "score-cam", "mae": [0.1] * n, "pearson": [0.9] * n}}}
    lines = distillation_table(result)
    assert len(lines) == 4  # header, rule, one row per generator taught by Score-CAM or RISE (not Grad-CAM)
    sc, ri = table_rows("\n".join(lines))[1:]
    assert sc[:2] == ["sc (gradient)", "Score-CAM"] and sc[3] == "0.820 / 0.900 (91%)" and sc[8] == "5.00%"
    assert sc[9] == "insertion >= 90% **met**, deletion within 10% **met**, cost <= 5% **met**"
    assert ri[9] == "insertion >= 90% **missed**, deletion within 10% **missed**, cost <= 1% **met**"
    assert ri[5] == "-" and sc[6] == "0.900 ± 0.000"
    assert distillation_table({**result, "methods": {k: methods[k] for k in ("score-cam", "gc")}}) == []


@pytest.mark.slow
def test_a_tiny_distillation_end_to_end(tmp_path, capsys):
    """Score-CAM as the teacher: dataset -> generator -> compile says what it imitates -> the
    report's distillation table and a section of another command, all in seconds."""
    from fastinterp.cli.train_generator import main as main_train
    from fastinterp.cli.build_dataset import main as main_build
    from fastinterp.datasets.reader import ExplanationDataset

    cnn = pretrained.path("digits-mobilenet_v3_small")
    assert main_build(["--cnn", str(cnn), "--dataset", "digits", "--n", "4", "--out", str(tmp_path / "data"),
                       "--teacher-method", "score-cam", "--teacher-option", "batch_size=256", "--no-progress"]) == 0
    assert ExplanationDataset(tmp_path / "data").config["teacher_method"] == "score-cam"
    assert main_train(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "gen"), "--steps", "2",
                       "--batch-size", "4"]) == 0
    generator = tmp_path / "gen" / "generator.safetensors"
    from fastinterp.datasets.zoo import load_cnn

    assert "imitates score-cam" in repr(fastinterp.compile(load_cnn(cnn)[0], generator))
    with pytest.raises(SystemExit):
        main_evaluate(["--quick", "--cnn", str(cnn), "--generator", f"score-cam={generator}", "--out", str(tmp_path)])
    (tmp_path / "report" / "sections").mkdir(parents=True)
    (tmp_path / "report" / "sections" / "aa.md").write_text("## A section lying there, not asked for\n")
    (tmp_path / "zz.md").write_text("## A section of another command\n")
    capsys.readouterr()
    assert main_evaluate(["--quick", "--n", "4", "--cnn", str(cnn), "--generator", f"sc={generator}", "--baselines",
                          "score-cam", "--ablation-n", "0", "--out", str(tmp_path / "report"), "--no-progress",
                          "--section", str(tmp_path / "zz.md")]) == 0
    report = (tmp_path / "report" / "evaluation.md").read_text()
    assert "Distillation:" in report and "| sc (gradient) | Score-CAM |" in report
    assert report.rstrip().endswith("## A section of another command")  # the one passed, explicitly
    assert "not asked for" not in report  # the package reads no file it was not given
    assert not (tmp_path / "report" / "figures" / f"ablation_{cnn.stem}.png").exists()  # --ablation-n 0
