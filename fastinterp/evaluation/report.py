"""``fastinterp evaluate``: every baseline and every generator on held-out images of each CNN,
written as ``<out>/evaluation.md`` with PNG figures (``<out>/figures/``) and the per-image
numbers (``<out>/evaluation.json``).

Default: the shipped CNNs (the demo's digits mobilenet_v3_small and the textured-shapes one) and
the shipped generators (the demo's fast generator on the gradient representation, the
forward-only one, and the paper's GSFT), by their names in ``fastinterp.pretrained``.
``quick_config()`` runs a few images with cheap settings (CI: every cell filled).

Sections written elsewhere (e.g. the distillation and generalisation experiments' markdown) are
appended when passed as ``sections``: the package reads no file it was not given.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision

from fastinterp import pretrained
from fastinterp._core.extras import require
from fastinterp._version import __version__
from fastinterp.baselines import BASELINES
from fastinterp.datasets.zoo import load_cnn
from fastinterp.evaluation.ablation import cgm_ablation
from fastinterp.evaluation.figures import ablation_figure, grid_figure
from fastinterp.evaluation.methods import baseline_methods, generator_method
from fastinterp.evaluation.run import (FAITHFULNESS, FIDELITY, LOCALISATION, EvaluationConfig, batching_overhead,
                                       evaluate_cnn)
from fastinterp.evaluation.stats import cell as _cell
from fastinterp.evaluation.stats import mean_se, paired

__all__ = ["DEFAULT_CNNS", "DEFAULT_GENERATORS", "DISTILLED_COST", "distillation_table", "quick_config",
           "render_report", "run_evaluation", "write_report"]

DEFAULT_CNNS = ("digits-mobilenet_v3_small", "shapes-mobilenet_v3_small")  # names in fastinterp.pretrained
DEFAULT_GENERATORS = ("fast", "fast-fo", "gsft")


# ---- markdown ----------------------------------------------------------------------------------

def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, {platform.system()} {platform.machine()}"


def _quality_table(result: dict) -> list[str]:
    metrics = {**FAITHFULNESS, **LOCALISATION}
    head = " | ".join(f"{label} {'↑' if up else '↓'}" for label, up in metrics.values())
    lines = [f"| method | {head} | ms / image | x forward |", "|---|" + "---:|" * (len(metrics) + 2)]
    for name, row in result["per_image"].items():
        label = result["methods"][name]["label"]
        cells = [_cell(row[key], 2 if key in ("drop", "increase") else 3) for key in metrics]
        cost = result["cost"][name]
        lines.append(f"| {label} | {' | '.join(cells)} | {cost['ms_per_image']:.1f} | {cost['x_forward']:.1f} |")
    return lines


def _separability(result: dict) -> list[str]:
    """For each metric: is the best method ahead of the runner-up by more than 2 paired SE?"""
    out = []
    if len(result["per_image"]) < 2:
        return ["- one method only: nothing to rank"]
    for key, (label, up) in {**FAITHFULNESS, **LOCALISATION}.items():
        ranked = sorted(result["per_image"], key=lambda n: mean_se(result["per_image"][n][key])[0], reverse=up)
        best, second = ranked[0], ranked[1]
        diff, se = paired(result["per_image"][best][key], result["per_image"][second][key])
        verdict = "separated" if abs(diff) > 2 * se else "**not separated** (within 2 SE)"
        out.append(f"- {label}: best {result['methods'][best]['label']}, runner-up {result['methods'][second]['label']}, "
                   f"paired difference {diff:+.3f} ± {se:.3f}: {verdict}")
    return out


def _targets(result: dict) -> list[str]:
    """The evaluation's targets, checked on this CNN's images: each generator no worse than its
    teacher by more than 2 paired SE in deletion and insertion AUC; the best generator's pointing
    game at least Grad-CAM's."""
    lines = []
    rows = result["per_image"]
    generators = [n for n, m in result["methods"].items() if m["kind"] == "generator"]
    for name in generators:
        teacher = result["methods"][name]["teacher"]
        if teacher not in rows:
            continue
        for key, lower_better in (("deletion", True), ("insertion", False)):
            diff, se = paired(rows[name][key], rows[teacher][key])
            worse = diff if lower_better else -diff
            ok = worse <= 2 * se
            lines.append(f"- {result['methods'][name]['label']} vs its teacher {result['methods'][teacher]['label']}, "
                         f"{FAITHFULNESS[key][0]}: {diff:+.4f} ± {se:.4f} (paired) -> "
                         f"{'**met**' if ok else '**missed**'} (no worse by more than 2 SE)")
    if generators and "gradcam" in rows:
        best = max(generators, key=lambda n: mean_se(rows[n]["pointing"])[0])
        g, gc = mean_se(rows[best]["pointing"])[0], mean_se(rows["gradcam"]["pointing"])[0]
        diff, se = paired(rows[best]["pointing"], rows["gradcam"]["pointing"])
        lines.append(f"- Pointing game of the best generator ({result['methods'][best]['label']}) {g:.3f} vs "
                     f"Grad-CAM {gc:.3f} (paired {diff:+.3f} ± {se:.3f}) -> {'**met**' if g >= gc else '**missed**'} "
                     "(the target compares the means; the best generator is picked on these images)")
    return lines


# an expensive explanation distilled into a generator: the share of the teacher's cost the generator
# may take (Score-CAM 5%, RISE 1%: the distillation's targets, reports/evaluation.md)
DISTILLED_COST = {"score-cam": 0.05, "rise": 0.01}


def distillation_table(result: dict) -> list[str]:
    """Each generator taught by an expensive method (Score-CAM, RISE) against that method on the
    same images and batches: quality kept (insertion >= 90% of the teacher's, deletion within 10%)
    and cost paid (ms per image as a share of the teacher's, same run)."""
    rows, cost = result["per_image"], result["cost"]
    taught = [n for n, m in result["methods"].items()
              if m["kind"] == "generator" and m["teacher"] in DISTILLED_COST and m["teacher"] in rows]
    if not taught:
        return []
    lines = ["| generator | teacher | deletion AUC ↓ (gen / teacher) | insertion AUC ↑ (gen / teacher) | "
             "pointing game ↑ (gen / teacher) | fidelity MAE ↓ | fidelity r ↑ | ms / image (gen / teacher) | "
             "cost share | targets |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in taught:
        teacher = result["methods"][name]["teacher"]
        d_g, d_t = mean_se(rows[name]["deletion"])[0], mean_se(rows[teacher]["deletion"])[0]
        i_g, i_t = mean_se(rows[name]["insertion"])[0], mean_se(rows[teacher]["insertion"])[0]
        p_g, p_t = mean_se(rows[name]["pointing"])[0], mean_se(rows[teacher]["pointing"])[0]
        ms_g, ms_t = cost[name]["ms_per_image"], cost[teacher]["ms_per_image"]
        share = ms_g / ms_t
        checks = {"insertion >= 90%": i_g >= 0.9 * i_t, "deletion within 10%": d_g <= 1.1 * d_t,
                  f"cost <= {DISTILLED_COST[teacher]:.0%}": share <= DISTILLED_COST[teacher]}
        verdict = ", ".join(f"{label} {'**met**' if ok else '**missed**'}" for label, ok in checks.items())
        fid = result["fidelity"].get(name, {})
        mae_cell = _cell(fid["mae"]) if fid else "-"
        r_cell = _cell(fid["pearson"]) if fid else "-"
        lines.append(f"| {result['methods'][name]['label']} | {result['methods'][teacher]['label']} | "
                     f"{d_g:.3f} / {d_t:.3f} ({d_g / d_t:.0%}) | {i_g:.3f} / {i_t:.3f} ({i_g / i_t:.0%}) | "
                     f"{p_g:.3f} / {p_t:.3f} | {mae_cell} | {r_cell} | {ms_g:.1f} / {ms_t:.1f} | {share:.2%} | {verdict} |")
    return lines


def _fidelity_table(result: dict) -> list[str]:
    if not result["fidelity"]:
        return []
    lines = ["| generator | teacher | " + " | ".join(f"{l} {'↑' if up else '↓'}" for l, up in FIDELITY.values()) + " |",
             "|---|---|" + "---:|" * len(FIDELITY)]
    for name, row in result["fidelity"].items():
        teacher = result["methods"][row["teacher"]]["label"]
        lines.append(f"| {result['methods'][name]['label']} | {teacher} | "
                     + " | ".join(_cell(row[key]) for key in FIDELITY) + " |")
    return lines


def _ablation_table(ablations: dict[str, dict], methods: dict[str, dict]) -> list[str]:
    lines = []
    for name, result in ablations.items():
        k = len(result["change"])
        order = methods[name]["details"].get("representation", {}).get("order", "first_to_last")
        first, last = ("the first", "last") if order == "first_to_last" else ("the last", "first")
        lines += [f"**{methods[name]['label']}**: order {order}, so CGM 0 is {first} conv layer's map alone and "
                  f"CGM {k - 1} the mean of all layers' maps (from {first} to the {last}). Mean ± SE over images; "
                  "> 0 in the AUC columns: faithfulness lost without CGM j.",
                  "", "| CGM j | map change | deletion AUC + | insertion AUC - |", "|---:|---:|---:|---:|"]
        for j in range(k):
            lines.append(f"| {j} | {_cell(result['change'][j], 4)} | {_cell(result['deletion'][j], 4)} | "
                         f"{_cell(result['insertion'][j], 4)} |")
        change = [mean_se(v)[0] for v in result["change"]]
        order = sorted(range(k), key=lambda j: -change[j])
        ends = {0, k - 1}
        lines += ["", f"Largest map change: CGMs {order[:3]} (in that order); the paper's finding (the first and last "
                  f"CGMs matter most) {'holds' if set(order[:2]) == ends else 'does not hold'} here.", ""]
    return lines


def write_report(path: Path, results: list[dict], ablations: dict[str, dict[str, dict]], config: EvaluationConfig,
                 command: str, wall_s: float, overhead: dict | None, reading: str | None, figures: dict,
                 machine: str | None = None, sections: Sequence[str | Path] = ()) -> None:
    """``path`` (markdown) from an evaluation's results; ``sections``: markdown files appended in the
    order given, each a section written elsewhere (naming the command that made it)."""
    lines = ["# Evaluation: faithfulness, localisation and fidelity of fastinterp's explanations", "",
             "Made by one command (rerun it to rebuild this file and its figures):", "", "```bash", command, "```", "",
             f"fastinterp {__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"Python {platform.python_version()}; {machine or _machine()}; {wall_s / 60:.1f} min wall time.", "",
             f"Settings: {json.dumps(config.as_dict())}. Images: the first {config.n} correctly classified "
             f"images of each dataset's held-out test split (seed {config.seed}), explained for their predicted "
             "(= true) class. ± is the standard error of the mean over images; differences between methods are "
             "paired (same images), so they are tighter than the two SEs suggest.", "",
             "Metrics: deletion / insertion AUC (Petsiuk et al. 2018; softmax probability, "
             f"{config.steps} steps; removed pixels become {config.deletion_substrate}, inserted ones start from "
             f"{'the image mean colour' if config.insertion_substrate == 'mean' else config.insertion_substrate}: "
             "not the paper's blur, which leaves 64 px digits readable), Average Drop % and Increase in Confidence % (Chattopadhay et al. "
             f"2018), ROAD (Rong et al. 2022; noisy linear imputation at {list(config.road_fractions)} of the "
             "pixels, (LeRF - MoRF) / 2), pointing game (no tolerance), energy pointing game (share of the map's "
             f"mass in the mask), IoU of the top {config.top_k:.0%} pixels with the mask. Cost: wall time of "
             "computing the maps (not the metrics), per image, and as a multiple of a plain no-grad forward of the "
             "same CNN on the same batches, measured in this run. All methods explain the last conv layer that runs "
             "(RISE: the input).", ""]
    for result in results:
        cnn = result["cnn"]
        lines += [f"## {cnn} ({result['dataset']}, n = {result['n']})", "",
                  f"Forward: {result['forward_ms']:.2f} ms per image (batch {config.batch}). "
                  f"{result['n']} of the first {result['scanned']} test images are classified correctly and used.", "",
                  *_quality_table(result), "", "Ranking (is the best ahead of the runner-up by more than 2 paired SE?):",
                  "", *_separability(result), ""]
        fid = _fidelity_table(result)
        if fid:
            lines += ["Fidelity of each generator to its teacher (the baseline it was trained to imitate), same "
                      "images:", "", *fid, ""]
        distilled = distillation_table(result)
        if distilled:
            lines += ["Distillation: each generator taught by an expensive method, against that method (same images, "
                      "same batches, same run):", "", *distilled, ""]
        targets = _targets(result)
        if targets:
            lines += ["Targets:", "", *targets, ""]
        if ablations.get(cnn):
            n_ab = len(next(iter(ablations[cnn].values()))["change"][0])
            lines += [f"### Which CGMs the generators rely on ({cnn}, first {n_ab} images)", "",
                      f"![CGM ablation](figures/{figures['ablation'][cnn]})", "",
                      *_ablation_table(ablations[cnn], result["methods"])]
        lines += [f"### Qualitative ({cnn})", "", f"![maps](figures/{figures['grid'][cnn]})", ""]
    if overhead is not None:
        lines += ["## Batching overhead", "",
                  f"Deletion AUC ({overhead['steps']} steps) of {overhead['n']} images on {overhead['cnn']}: "
                  f"{overhead['metric_s']:.1f} s for {overhead['forwards']:,} forwards; the same number of plain "
                  f"forwards in batches of {overhead['batch']} took {overhead['forwards_s']:.1f} s: "
                  f"**{overhead['ratio']:.2f}x** (target <= 2x).", ""]
    if reading:
        lines += ["## Reading", "", reading.strip(), ""]
    for section in sections:
        lines += [Path(section).read_text().strip(), ""]
    path.write_text("\n".join(lines))


def quick_config(seed: int = 0) -> EvaluationConfig:
    """A few images with cheap settings: every cell of the report filled in seconds, numbers
    meaningless (CI)."""
    return EvaluationConfig(n=8, batch=8, steps=4, road_fractions=(0.5,), rise_masks=16, seed=seed, timing_repeats=1)


def run_evaluation(out: str | Path, config: EvaluationConfig = EvaluationConfig(), *,
                   cnns: dict[str, Path] | None = None, generators: dict[str, Path] | None = None,
                   baselines: Sequence[str] = BASELINES, ablation_n: int = 48, overhead_n: int = 1000,
                   reading: str | None = None, sections: Sequence[str | Path] = (), command: str = "",
                   progress: bool = True) -> Path:
    """Evaluate every baseline and generator on every CNN; write ``<out>/evaluation.md``,
    ``<out>/evaluation.json`` and ``<out>/figures/``. Returns the markdown's path.

    Args:
        cnns: name -> zoo checkpoint, each evaluated on the held-out test split of the dataset it
            was trained on (default: ``DEFAULT_CNNS`` of ``fastinterp.pretrained``).
        generators: name -> generator checkpoint (default: ``DEFAULT_GENERATORS``; {}: baselines only).
        baselines: some of ``fastinterp.baselines.BASELINES``.
        ablation_n: images of the CGM ablation, run on the first CNN only (0: skip).
        overhead_n: images of the batching-overhead measurement (0: skip).
        reading: markdown appended as the report's reading.
        sections: markdown files appended at the end, in this order.
        command: the command line recorded in the report (how to rebuild it).
    """
    require("matplotlib", "eval", "fastinterp evaluate draws its figures")  # before minutes of work, not after
    out = Path(out)
    cnns = {name: pretrained.path(name) for name in DEFAULT_CNNS} if cnns is None else dict(cnns)
    generators = {name: pretrained.path(name) for name in DEFAULT_GENERATORS} if generators is None else dict(generators)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"baselines: unknown {unknown}; expected some of {BASELINES}")
    clash = sorted(set(generators) & set(BASELINES))
    if clash:
        raise ValueError(f"generators: the names {clash} are baselines' names; name the generators otherwise")
    ablation_n = min(config.n, ablation_n)
    start = time.perf_counter()
    results, ablations = [], {}
    for cnn_name, path in cnns.items():
        cnn, meta = load_cnn(path)
        methods = baseline_methods(cnn, tuple(baselines), rise_masks=config.rise_masks, batch_size=config.score_batch,
                                   seed=config.seed)
        taught = [generator_method(cnn, name, gpath) for name, gpath in generators.items()]
        print(f"{cnn_name}: {meta['arch']} on {meta['dataset']}, {len(methods)} baselines + {len(taught)} generators",
              flush=True)
        result = evaluate_cnn(cnn, meta["dataset"], [*methods, *taught], config, progress=progress)
        result["cnn"] = cnn_name
        ablations[cnn_name] = {}
        for g in taught if not results and ablation_n else ():  # the first CNN only: the training domain
            ablations[cnn_name][g.name] = cgm_ablation(cnn, g.explainer, result["images"][:ablation_n],
                                                       result["labels"][:ablation_n], steps=config.steps,
                                                       batch=config.batch, score_batch=config.score_batch,
                                                       deletion_substrate=config.deletion_substrate,
                                                       insertion_substrate=config.insertion_substrate)
        results.append(result)
    overhead = None
    if overhead_n:
        cnn, meta = load_cnn(next(iter(cnns.values())))
        overhead = batching_overhead(cnn, meta["dataset"], overhead_n, config.steps, config.score_batch, config.seed)
    wall = time.perf_counter() - start

    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, str]] = {"grid": {}, "ablation": {}}
    for result in results:
        cnn = result["cnn"]
        labels = {n: m["label"] for n, m in result["methods"].items()}
        figures["grid"][cnn] = f"grid_{cnn}.png"
        grid_figure(out / "figures" / figures["grid"][cnn], result["grid"], labels)
        if ablations.get(cnn):
            figures["ablation"][cnn] = f"ablation_{cnn}.png"
            ablation_figure(out / "figures" / figures["ablation"][cnn], ablations[cnn], labels)
    write_report(out / "evaluation.md", results, ablations, config, command, wall, overhead, reading, figures,
                 sections=sections)
    keep = ("cnn", "dataset", "n", "scanned", "indices", "forward_ms", "per_image", "cost", "fidelity", "methods")
    (out / "evaluation.json").write_text(json.dumps(
        {"command": command, "machine": _machine(), "config": config.as_dict(), "wall_s": wall, "overhead": overhead,
         "figures": figures, "results": [{k: r[k] for k in keep} for r in results], "ablations": ablations}))
    print(f"wrote {out / 'evaluation.md'} ({wall / 60:.1f} min)")
    return out / "evaluation.md"


def render_report(out: str | Path, reading: str | None = None, sections: Sequence[str | Path] = ()) -> Path:
    """Rewrite ``<out>/evaluation.md`` from ``<out>/evaluation.json`` (e.g. with a new reading or new
    sections); computes nothing."""
    out = Path(out)
    state = json.loads((out / "evaluation.json").read_text())
    config = EvaluationConfig(**{**state["config"], "road_fractions": tuple(state["config"]["road_fractions"])})
    write_report(out / "evaluation.md", state["results"], state["ablations"], config, state["command"],
                 state["wall_s"], state["overhead"], reading, state["figures"], machine=state["machine"],
                 sections=sections)
    return out / "evaluation.md"
