"""``fastinterp evaluate``: every baseline and every generator on held-out images of each CNN,
written as ``<out>/evaluation.md`` with PNG figures (``<out>/figures/``) and the per-image
numbers (``<out>/evaluation.json``).

Default: the shipped CNNs (the demo's digits mobilenet_v3_small and the textured-shapes one) and
the shipped generators (the demo's fast generator on the gradient representation, the
forward-only one, and the paper's GSFT). ``--quick`` runs a few images with cheap settings (CI: every cell filled).

Sections made by other commands (``benchmarks/distill.py``, ``benchmarks/generalisation.py``) are
``<out>/sections/*.md``; the report ends with each of them, in name order.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from importlib import resources
from pathlib import Path

import torch

from fastinterp._version import __version__
from fastinterp.evaluation.run import FAITHFULNESS, FIDELITY, LOCALISATION, EvaluationConfig

__all__ = ["distillation_table", "main_evaluate", "shipped_cnns", "shipped_generators", "write_report"]


def _pretrained(*parts: str) -> Path:
    return Path(str(resources.files("fastinterp").joinpath("pretrained", *parts)))


def shipped_cnns() -> dict[str, Path]:
    """name -> checkpoint of the CNNs shipped with the package."""
    return {"digits-mobilenet_v3_small": _pretrained("demo", "cnn.safetensors"),
            "shapes-mobilenet_v3_small": _pretrained("shapes", "cnn.safetensors")}


def shipped_generators() -> dict[str, Path]:
    """name -> checkpoint of the generators shipped with the package."""
    return {"fast": _pretrained("demo", "generator.safetensors"),
            "fast-fo": _pretrained("forward_only", "generator.safetensors"),
            "gsft": _pretrained("paper", "gsft.safetensors")}


# ---- statistics --------------------------------------------------------------------------------

def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for n = 1)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and SE of a - b over the same images."""
    return mean_se([x - y for x, y in zip(a, b)])


def _cell(values: list[float], digits: int = 3) -> str:
    mean, se = mean_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


# ---- figures -----------------------------------------------------------------------------------

def _grid_figure(path: Path, grid: dict, labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grid["maps"])
    rows, cols = grid["images"].shape[0], 2 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.5 * rows), squeeze=False)
    for r in range(rows):
        image = grid["images"][r].permute(1, 2, 0).clamp(0, 1).numpy()
        panels = [(image, None, f"label {int(grid['labels'][r])}"), (grid["masks"][r].float().numpy(), "gray", "GT mask")]
        panels += [(grid["maps"][n][r].numpy(), "jet", labels[n]) for n in names]
        for c, (data, cmap, title) in enumerate(panels):
            ax = axes[r][c]
            if cmap == "jet":
                ax.imshow(image)
                ax.imshow(data, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(data, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ablation_figure(path: Path, ablations: dict[str, dict], labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    keys = (("change", "mean |map change| when CGM j -> its mean"), ("deletion", "deletion AUC increase (worse)"),
            ("insertion", "insertion AUC decrease (worse)"))
    width = 0.8 / max(1, len(ablations))
    for ax, (key, title) in zip(axes, keys):
        for i, (name, result) in enumerate(ablations.items()):
            stats = [mean_se(v) for v in result[key]]
            xs = [j + (i - (len(ablations) - 1) / 2) * width for j in range(len(stats))]
            ax.bar(xs, [m for m, _ in stats], width, yerr=[2 * s for _, s in stats], capsize=2, label=labels[name])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("CGM j (cumulative map; see the table for each generator's order)", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    """The issue's targets, checked on this CNN's images."""
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
# may take (issue 13: Score-CAM 5%, RISE 1%)
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
                 machine: str | None = None) -> None:
    import torchvision

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
    for section in sorted((path.parent / "sections").glob("*.md")):  # written by other commands, each
        lines += [section.read_text().strip(), ""]                   # naming the command that made it
    path.write_text("\n".join(lines))


# ---- command -----------------------------------------------------------------------------------

def _batching_overhead(cnn, dataset: str, n: int, steps: int, batch: int, seed: int) -> dict:
    from fastinterp.baselines import baseline_map
    from fastinterp.datasets.images import synthetic_dataset
    from fastinterp.maps.eval_view import eval_view
    from fastinterp.metrics import deletion

    images, _, _ = synthetic_dataset(dataset, n, size=cnn.input_size, seed=seed, split="test").batch(range(n))
    maps = torch.cat([baseline_map("gradcam", cnn, images[i:i + 128]) for i in range(0, n, 128)])
    start = time.perf_counter()
    deletion(cnn, images, maps, steps=steps, batch_size=batch)
    metric_s = time.perf_counter() - start
    forwards = (steps + 1) * n  # steps perturbed curve points and the clean forward (= step 0)
    view = eval_view(cnn)
    start = time.perf_counter()
    with torch.no_grad():
        done = 0
        while done < forwards:
            m = min(batch, forwards - done)
            view(images[done % n:done % n + m] if done % n + m <= n else images[:m])
            done += m
    forwards_s = time.perf_counter() - start
    return {"cnn": cnn.arch, "n": n, "steps": steps, "batch": batch, "forwards": forwards, "metric_s": metric_s,
            "forwards_s": forwards_s, "ratio": metric_s / forwards_s}


def _named_paths(items: list[str] | None, default: dict[str, Path], flag: str) -> dict[str, Path]:
    if not items:
        return default
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if not Path(path).is_file():
            raise SystemExit(f"{flag}: {path} is not a file")
        out[name] = Path(path)
    return out


def main_evaluate(argv: list[str] | None = None) -> int:
    from fastinterp.cli import command_parser
    from fastinterp.evaluation.ablation import cgm_ablation
    from fastinterp.evaluation.methods import baseline_methods, generator_method
    from fastinterp.evaluation.run import evaluate_cnn
    from fastinterp.datasets.zoo import load_cnn

    parser = command_parser("evaluate")
    parser.add_argument("--cnn", nargs="+", metavar="[NAME=]CHECKPOINT",
                        help="zoo CNN checkpoints (default: the shipped digits and shapes CNNs); each is evaluated on "
                             "the held-out test split of the dataset it was trained on")
    parser.add_argument("--generator", nargs="*", metavar="[NAME=]CHECKPOINT",
                        help="generator checkpoints (default: the shipped fast, forward-only fast and gsft generators); "
                             "--generator with no value: baselines only")
    parser.add_argument("--baselines", nargs="*", default=None, help="baselines (default: all)")
    parser.add_argument("--n", type=int, default=None, help="images per CNN (default 128; --quick 8)")
    parser.add_argument("--ablation-n", type=int, default=None,
                        help="images of the CGM ablation, run on the first CNN only (default 48; 0: skip)")
    parser.add_argument("--rise-masks", type=int, default=None, help="RISE masks (default 500)")
    parser.add_argument("--steps", type=int, default=None, help="deletion / insertion steps (default 16)")
    parser.add_argument("--overhead-n", type=int, default=None,
                        help="images of the batching-overhead measurement (default 1000; 0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder of evaluation.md and figures/")
    parser.add_argument("--reading", type=Path, default=None, help="markdown appended as the report's reading")
    parser.add_argument("--quick", action="store_true", help="a few images, cheap settings (seconds; for CI)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite <out>/evaluation.md from <out>/evaluation.json (e.g. with a new --reading); "
                             "computes nothing")
    args = parser.parse_args(argv)
    if args.render_only:
        state = json.loads((args.out / "evaluation.json").read_text())
        config = EvaluationConfig(**{**state["config"], "road_fractions": tuple(state["config"]["road_fractions"])})
        reading = args.reading.read_text() if args.reading is not None else None
        write_report(args.out / "evaluation.md", state["results"], state["ablations"], config, state["command"],
                     state["wall_s"], state["overhead"], reading, state["figures"], machine=state["machine"])
        print(f"wrote {args.out / 'evaluation.md'} from {args.out / 'evaluation.json'}")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from fastinterp.baselines import BASELINES
    from fastinterp.demo import _require_matplotlib

    _require_matplotlib()
    quick = args.quick
    config = EvaluationConfig(
        n=args.n or (8 if quick else 128), batch=8 if quick else 32, steps=args.steps or (4 if quick else 16),
        road_fractions=(0.5,) if quick else (0.2, 0.4, 0.6, 0.8), rise_masks=args.rise_masks or (16 if quick else 500),
        seed=args.seed, timing_repeats=1 if quick else 3)
    ablation_n = min(config.n, args.ablation_n if args.ablation_n is not None else (4 if quick else 48))
    overhead_n = args.overhead_n if args.overhead_n is not None else (0 if quick else 1000)
    cnn_paths = _named_paths(args.cnn, shipped_cnns(), "--cnn")
    generator_paths = _named_paths(args.generator, shipped_generators(), "--generator") \
        if args.generator is None or args.generator else {}
    baselines = tuple(args.baselines) if args.baselines is not None else BASELINES
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        parser.error(f"--baselines: unknown {unknown}; expected some of {BASELINES}")
    clash = sorted(set(generator_paths) & set(BASELINES))
    if clash:
        parser.error(f"--generator: the names {clash} are baselines' names; name the generators otherwise (NAME=PATH)")

    start = time.perf_counter()
    results, ablations = [], {}
    for cnn_name, path in cnn_paths.items():
        cnn, meta = load_cnn(path)
        methods = baseline_methods(cnn, baselines, rise_masks=config.rise_masks, batch_size=config.score_batch,
                                   seed=config.seed)
        generators = [generator_method(cnn, name, gpath) for name, gpath in generator_paths.items()]
        print(f"{cnn_name}: {meta['arch']} on {meta['dataset']}, {len(methods)} baselines + {len(generators)} generators",
              flush=True)
        result = evaluate_cnn(cnn, meta["dataset"], [*methods, *generators], config, progress=not args.no_progress)
        result["cnn"] = cnn_name
        ablations[cnn_name] = {}
        for g in generators if not results and ablation_n else ():  # the first CNN only: the training domain
            ablations[cnn_name][g.name] = cgm_ablation(cnn, g.explainer, result["images"][:ablation_n],
                                                       result["labels"][:ablation_n], steps=config.steps,
                                                       batch=config.batch, score_batch=config.score_batch,
                                                       deletion_substrate=config.deletion_substrate,
                                                       insertion_substrate=config.insertion_substrate)
        results.append(result)
    overhead = None
    if overhead_n:
        cnn, meta = load_cnn(next(iter(cnn_paths.values())))
        overhead = _batching_overhead(cnn, meta["dataset"], overhead_n, config.steps, config.score_batch, config.seed)
    wall = time.perf_counter() - start

    out = args.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, str]] = {"grid": {}, "ablation": {}}
    for result in results:
        cnn = result["cnn"]
        labels = {n: m["label"] for n, m in result["methods"].items()}
        figures["grid"][cnn] = f"grid_{cnn}.png"
        _grid_figure(out / "figures" / figures["grid"][cnn], result["grid"], labels)
        if ablations.get(cnn):
            figures["ablation"][cnn] = f"ablation_{cnn}.png"
            _ablation_figure(out / "figures" / figures["ablation"][cnn], ablations[cnn], labels)
    command = "fastinterp evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    reading = args.reading.read_text() if args.reading is not None else None
    write_report(out / "evaluation.md", results, ablations, config, command, wall, overhead, reading, figures)
    keep = ("cnn", "dataset", "n", "scanned", "indices", "forward_ms", "per_image", "cost", "fidelity", "methods")
    (out / "evaluation.json").write_text(json.dumps(
        {"command": command, "machine": _machine(), "config": config.as_dict(), "wall_s": wall, "overhead": overhead,
         "figures": figures, "results": [{k: r[k] for k in keep} for r in results], "ablations": ablations}))
    print(f"wrote {out / 'evaluation.md'} ({wall / 60:.1f} min)")
    return 0
