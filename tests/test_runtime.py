"""fastinterp.compile / Explainer.explain: equal to the hand-written pipeline, thread-safe, the
user's models untouched, no growth over many calls, clear errors, pictures, fastinterp-bench."""

from __future__ import annotations

import gc
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_state, build, model_state
from torch import nn

import fastinterp
from fastinterp.generator.checkpoint import save_generator
from fastinterp.generator.networks import build_generator
from fastinterp.maps.preprocess import IMAGENET, IMAGENET_MEAN, IMAGENET_STD


def generator(k: int = 8, size: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_generator("fast", k=k, size=size).eval()


def pictures(batch: int, side: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def by_hand(cnn, gen, images, options, targets=None):
    """The README's pipeline: representation, the generator's image resize, generator, resize back."""
    rep = fastinterp.cnn_representation(cnn, images, targets=targets, **options)
    small = fastinterp.resize_images(images, options["size"])
    with torch.no_grad():
        out = gen(small, rep.cgm)[:, 0]
    if out.shape[-2:] != images.shape[-2:]:
        out = F.interpolate(out[:, None], size=images.shape[-2:], mode="bilinear", antialias=True,
                            align_corners=False)[:, 0].clamp(0, 1)
    return rep, out


# squeezenet1_1 and vgg13 have in-place ReLUs right after convs; densenet121 a functional head
@pytest.mark.parametrize("arch, side", [("resnet18", 80), ("vgg13", 64), ("densenet121", 48),
                                        ("mobilenet_v3_small", 64), ("squeezenet1_1", 64)])
def test_explain_equals_the_hand_written_pipeline(arch, side):
    cnn, gen, x = build(arch), generator(), pictures(3, side)
    with fastinterp.compile(cnn, gen, input_size=side, representation="gradient") as explainer:
        out = explainer.explain(x, return_cgm=True)
    rep, expected = by_hand(cnn, gen, x, fastinterp.DEFAULT_REPRESENTATION)
    assert out.maps.shape == (3, side, side) and out.maps.dtype == torch.float32
    assert float(out.maps.min()) >= 0 and float(out.maps.max()) <= 1
    torch.testing.assert_close(out.maps, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.cgm, rep.cgm, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, cnn(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(out.targets, out.logits.argmax(1))


# GAP + Linear by module hooks; Linear-Hardswish-Linear; a functional pool (TorchFunctionMode
# tap); a head that pools a conv's output (squeezenet: the logits are the pooled map)
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "densenet121", "squeezenet1_1"])
def test_activation_explain_equals_its_hand_written_pipeline(arch):
    cnn, gen, x = build(arch), generator(), pictures(2, 64)
    with fastinterp.compile(cnn, gen, representation="activation", input_size=64) as explainer:
        out = explainer.explain(x, targets=[1, 2])
        assert explainer.representation["kind"] == "activation"
    _, expected = by_hand(cnn, gen, x, {**fastinterp.ACTIVATION_REPRESENTATION, "teacher": None},
                          targets=[1, 2])
    torch.testing.assert_close(out.maps, expected, rtol=0, atol=1e-5)
    assert out.targets.tolist() == [1, 2]


def test_generator_from_a_checkpoint_uses_its_representation(tmp_path):
    cnn, gen = build("resnet18"), generator()
    options = {**fastinterp.ACTIVATION_REPRESENTATION}
    path = save_generator(tmp_path / "g.safetensors", gen, representation={**options, "image_resize": "bilinear-antialias"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing overridden: no warning
        explainer = fastinterp.compile(cnn, path, input_size=64)
    assert explainer.representation == {**options}
    loaded, _ = fastinterp.load_generator(path)
    assert fastinterp.compile(cnn, loaded, input_size=64).representation == explainer.representation
    with pytest.warns(UserWarning, match="trained on kind='activation'"):
        fastinterp.compile(cnn, path, representation="gradient", input_size=64)
    # a bare module: no guess; representation= names the kind, at the module's own k and size
    with pytest.raises(ValueError, match="representation: the generator module carries no metadata"):
        fastinterp.compile(cnn, generator(k=6, size=32), input_size=64)
    bare = fastinterp.compile(cnn, generator(k=6, size=32), input_size=64, representation="gradient")
    assert bare.representation == {**fastinterp.DEFAULT_REPRESENTATION, "k": 6, "size": 32}


def test_mismatches_raise_at_compile_naming_both_sides():
    cnn, gen = build("resnet18"), generator()
    with pytest.raises(ValueError, match="k=4, but the generator takes k=8"):
        fastinterp.compile(cnn, gen, representation={"k": 4})
    with pytest.raises(ValueError, match="size=32, but the generator takes size=64"):
        fastinterp.compile(cnn, gen, representation={"size": 32})
    tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="takes k=8 cumulative maps, but Sequential gives 2 layer maps"):
        fastinterp.compile(tiny, gen, input_size=32, representation="gradient")
    no_pool = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 3)).eval()
    with pytest.raises(ValueError, match="runs no average pooling"):
        fastinterp.compile(no_pool, generator(k=2), representation="activation", input_size=32)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="takes 1-channel images, but the generator takes 3-channel"):
        fastinterp.compile(gray, generator(k=2), input_size=32, representation="gradient")
    with pytest.raises(TypeError, match="generator: expected a generator"):
        fastinterp.compile(cnn, nn.Conv2d(3, 3, 1))
    with pytest.raises(FileNotFoundError, match="generator: no checkpoint file"):
        fastinterp.compile(cnn, "missing.safetensors")
    with pytest.raises(ValueError, match="representation: expected one of"):
        fastinterp.compile(cnn, gen, representation="gradients")
    with pytest.raises(ValueError, match="dtype: expected None"):
        fastinterp.compile(cnn, gen, dtype=torch.int8, representation="gradient")
    with pytest.raises(ValueError, match="batch_sizes"):
        fastinterp.compile(cnn, gen, batch_sizes=[0], input_size=64, representation="gradient")


@pytest.fixture(scope="module")
def explainer():
    cnn, gen = build("resnet18"), generator()
    with fastinterp.compile(cnn, gen, input_size=64, representation="gradient") as ex:
        yield ex


def test_numpy_in_numpy_out_and_single_images(explainer):
    x = pictures(2, 64)
    as_tensor = explainer(x)
    as_numpy = explainer.explain(x.numpy(), targets=np.array(as_tensor.targets.numpy()))
    assert isinstance(as_numpy.maps, np.ndarray) and as_numpy.maps.dtype == np.float32
    assert isinstance(as_numpy.logits, np.ndarray) and as_numpy.targets.dtype == np.int64
    np.testing.assert_allclose(as_numpy.maps, as_tensor.maps.numpy(), rtol=0, atol=1e-6)
    one = explainer.explain(x[1])
    torch.testing.assert_close(one.maps[0], as_tensor.maps[1], rtol=0, atol=1e-5)
    assert one.maps.shape == (1, 64, 64) and as_numpy.cgm is None


@pytest.mark.parametrize("images, targets, error, match", [
    (torch.rand(64, 64), None, ValueError, r"images: expected \(B, C, H, W\), \(B, H, W, C\), one image"),
    (torch.rand(1, 1, 3, 64, 64), None, ValueError, r"images: expected \(B, C, H, W\)"),
    (torch.rand(2, 1, 64, 64), None, ValueError, "images"),
    (torch.rand(2, 3, 64, 64, dtype=torch.float64), None, TypeError, "images: dtype torch.float64 but the model"),
    (torch.full((1, 3, 64, 64), float("nan")), None, ValueError, "images"),
    (torch.rand(0, 3, 64, 64), None, ValueError, "images"),
    (torch.rand(2, 3, 64, 64), [1], ValueError, "targets"),
    (torch.rand(2, 3, 64, 64), [1, 1000], ValueError, r"targets: class indices must be in \[0, 10\)"),
    (torch.rand(2, 3, 64, 64, device="meta"), None, ValueError, "images: on meta, but the explainer runs on cpu"),
    (np.zeros((2, 3, 64, 64), dtype=np.float64), None, TypeError, "numpy array of dtype float32"),
    (np.zeros((2, 3, 64, 64), dtype=np.int32), None, TypeError, "images: expected uint8 pixels .* got dtype int32"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.bool), None, TypeError, "images: expected uint8 pixels"),
    (np.zeros((2, 64, 64, 3, 1), dtype=np.uint8), None, ValueError, "images: expected"),
    (np.zeros((1, 3, 64, 3), dtype=np.float32), None, ValueError, "ambiguous.*layout='CHW' or layout='HWC'"),
    (np.zeros((1, 64, 64, 4), dtype=np.float32), None, ValueError, r"channels first \(B, 3, H, W\) or last"),
    ([], None, ValueError, "images: an empty list"),
    ([[0.0]], None, TypeError, "images\\[0\\]: a list's images must be PIL images, file paths, numpy arrays"),
    ("/no/such/file.png", None, ValueError, "images: no image file at /no/such/file.png"),
    ([np.zeros((8, 8, 3), np.uint8), torch.zeros(3, 8, 8)], None, TypeError, "mixes torch tensors"),
    ([np.zeros((8, 8, 3), np.float64), np.zeros((8, 8, 3), np.float32)], None, TypeError, "different dtypes"),
    ({"x": 1}, None, TypeError, "images: expected a torch tensor or numpy array"),
])
def test_bad_inputs_raise_clear_errors(explainer, images, targets, error, match):
    with pytest.raises(error, match=match):
        explainer.explain(images, targets)


def test_closed_explainer_raises():
    explainer = fastinterp.compile(build("resnet18"), generator(), input_size=64, representation="gradient")
    explainer.close()
    with pytest.raises(RuntimeError, match="explainer: it was closed"):
        explainer.explain(pictures(1, 64))
    assert "closed" in repr(explainer)


@pytest.mark.parametrize("kind", ["gradient", "activation"])
def test_threads_get_the_sequential_results(kind):
    cnn, gen = build("mobilenet_v3_small"), generator()
    cnn.train()  # explained in eval semantics: BatchNorm statistics must not move
    before = model_state(cnn)
    explainer = fastinterp.compile(cnn, gen, representation=kind, input_size=64)
    batches = [pictures(2, 64, seed=s) for s in range(8)]
    sequential = [explainer.explain(b).maps for b in batches]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                results[i] = explainer.explain(batches[i]).maps
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        torch.testing.assert_close(results[i], sequential[i], rtol=0, atol=1e-6)
    explainer.close()
    assert_same_state(before, model_state(cnn))


def test_models_untouched_before_during_and_after():
    cnn, gen = build("vgg13"), generator()
    cnn.train()
    x = pictures(2, 64)
    torch.manual_seed(5)
    own_before = cnn(x)  # train mode: BatchNorm-free vgg13, dropout draws from the seeded RNG
    states = model_state(cnn), model_state(gen)
    explainer = fastinterp.compile(cnn, gen, input_size=64, representation="gradient")
    explainer.explain(x)
    assert_same_state(states[0], model_state(cnn))
    assert_same_state(states[1], model_state(gen))
    torch.manual_seed(5)
    torch.testing.assert_close(cnn(x), own_before, rtol=0, atol=0)  # its own calls: as before
    explainer.close()
    assert_same_state(states[0], model_state(cnn))
    assert cnn.training and all(m.training for m in cnn.modules())


@pytest.mark.parametrize("kind", ["gradient", "activation"])
def test_a_call_leaves_nothing_for_the_garbage_collector(kind):
    """No reference cycle per call: the eval view, its hooks and the layer outputs they hold are
    freed when the call returns, not at the collector's next pass (a view once held a cycle through
    the function that made it, and with it 52 activation tensors)."""
    cnn = build("mobilenet_v3_small")
    explainer = fastinterp.compile(cnn, generator(), representation=kind, input_size=64)
    x = pictures(2, 64)
    explainer.explain(x)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            explainer.explain(x)
            fastinterp.layer_maps(cnn, x)
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.slow
def test_a_thousand_calls_grow_nothing(small_cnn):
    small_cnn.eval()
    hooks = model_state(small_cnn)["hooks"]
    explainer = fastinterp.compile(small_cnn, generator(k=2, size=16), input_size=32, representation="gradient")
    x = pictures(2, 32)

    def rss_mb() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    for _ in range(50):
        explainer.explain(x)
    gc.collect()
    objects, rss = len(gc.get_objects()), rss_mb()
    for _ in range(1000):
        explainer.explain(x)
    gc.collect()
    assert len(gc.get_objects()) - objects < 200
    assert rss_mb() - rss < 20  # MB: allocator noise only
    assert model_state(small_cnn)["hooks"] == hooks


def test_autocast_dtype_returns_float32():
    cnn, gen, x = build("resnet18"), generator(), pictures(2, 64)
    explainer = fastinterp.compile(cnn, gen, dtype=torch.bfloat16, input_size=64, representation="gradient")
    out = explainer.explain(x, return_cgm=True)
    assert out.maps.dtype == out.logits.dtype == out.cgm.dtype == torch.float32
    full = fastinterp.compile(cnn, gen, input_size=64, representation="gradient").explain(x)
    assert float((out.maps - full.maps).abs().mean()) < 0.05  # bfloat16 CNN: close, not equal


def test_overlay_and_save(explainer, tmp_path):
    from PIL import Image

    x = pictures(3, 64)
    out = explainer.explain(x)
    picture = out.overlay(x, alpha=0.0)
    assert picture.shape == (3, 64, 64, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture, np.rint(255 * x.permute(0, 2, 3, 1).numpy()).astype(np.uint8))
    heat = out.overlay(x, alpha=1.0, colormap="gray")  # gray colormap: the map itself in every channel
    np.testing.assert_allclose(heat[..., 0] / 255, out.maps.numpy(), atol=1 / 255 + 1e-6)
    normalised = out.overlay((x - 0.5) * 4, alpha=0.0)  # not in [0, 1]: min-max scaled per image
    assert normalised.min() == 0 and normalised.max() == 255
    path = out.save(tmp_path / "grid.png", images=x)
    with Image.open(path) as png:
        assert png.size[0] > png.size[1] > 64  # three titled panels in a row
    with pytest.raises(ValueError, match="alpha"):
        out.overlay(x, alpha=2)
    with pytest.raises(ValueError, match="colormap"):
        out.overlay(x, colormap="no-such-map")
    with pytest.raises(ValueError, match="original: expected 3 pictures"):
        out.overlay(x[:2])


def test_profile_names_every_stage(explainer):
    stages = explainer.profile(pictures(2, 64))
    assert list(stages) == ["forward", "backward", "maps", "resize", "generator", "total"]
    assert all(np.isfinite(v) and v >= 0 for v in stages.values())
    assert stages["total"] >= sum(v for k, v in stages.items() if k != "total") - 1e-6


@pytest.mark.slow
def test_bench_quick_report_is_complete(tmp_path, capsys):
    from fastinterp.cli.bench import main

    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-progress", "--no-memory", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    methods = {r["method"] for r in report["rows"]}
    assert {"forward", "gradcam", "explain-gradient", "explain-activation", "hand-gradient",
            "hand-activation"} <= methods
    assert report["memory"] is None and all(row["peak_mb"] is None for row in report["rows"])
    for row in report["rows"]:
        for key in ("p50_ms", "p95_ms", "p99_ms", "images_per_s", "ratio_to_forward"):
            assert np.isfinite(row[key]) and row[key] > 0, (row["method"], key)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert {b["kind"] for b in report["breakdown"]} == {"gradient", "activation"}
    table = capsys.readouterr().out
    threads = torch.get_num_threads()  # the default: torch's
    assert {r["threads"] for r in report["rows"]} == {threads}
    assert table.count(f"\n| {threads} | 2 |") == len(report["rows"]) + len(report["breakdown"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak resident memory: Linux /proc only")
def test_bench_measures_each_methods_memory_in_a_fresh_process(tmp_path, capsys):
    from fastinterp.cli.bench import main

    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-progress", "--representations", "gradient", "--backends", "torch", "onnxruntime",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    methods = {r["method"] for r in report["rows"]}
    assert {"forward", "gradcam", "hand-gradient", "explain-gradient", "ort-forward", "ort-explain-gradient"} <= methods
    assert report["memory"] and report["weights_mb"]["cnn"] > 40  # resnet18: 11.2 M parameters
    for row in report["rows"]:  # each from a child that built that method alone (ONNX Runtime too)
        assert row["peak_mb"] is not None and row["peak_mb"] >= 0, row["method"]
        assert row["held_mb"] > 100 and row["peak_rss_mb"] >= row["held_mb"] + row["peak_mb"] - 1, row["method"]
    table = capsys.readouterr().out
    assert "fresh process" in table and "Weights, held before every call" in table
    assert table.count("\n| ") >= 2 * len(report["rows"])  # the main table and the memory table


USER_CNN = """
from torch import nn


def factory():
    layers, channels = [], 3
    for out, stride in ((8, 1), (16, 2), (16, 2), (32, 2)):
        layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1), nn.ReLU()]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5))
"""


def user_pair(tmp_path):
    """A user's CNN (a 4-conv factory in model.py) and a generator checkpoint made for it (activation
    representation, ImageNet normalisation, 48x40 inputs recorded, as `fastinterp fit` records them)."""
    (tmp_path / "model.py").write_text(USER_CNN)
    options = {**fastinterp.ACTIVATION_REPRESENTATION, "k": 4, "size": 32}
    ckpt = save_generator(tmp_path / "mine.safetensors", generator(k=4, size=32), representation=options,
                          preprocess=IMAGENET, input_size=[48, 40])
    return f"{tmp_path}/model.py:factory", ckpt


def test_bench_profiles_a_users_cnn_and_generator(tmp_path, capsys):
    from fastinterp.cli.bench import main

    spec, ckpt = user_pair(tmp_path)
    out = tmp_path / "bench.json"
    assert main(["--cnn", spec, "--generator", str(ckpt), "--quick", "--threads", "1", "--no-progress",
                 "--no-pytorch-grad-cam", "--no-memory", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    methods = {r["method"] for r in report["rows"]}
    assert methods == {"forward", "gradcam", "hand-activation", "explain-activation"}  # the generator's kind only
    assert report["representations"] == ["activation"] and report["input"] == "3x48x40"  # its recorded size
    assert spec in report["model"] and str(ckpt) in report["model"] and "normalised: imagenet" in report["model"]
    for row in report["rows"]:
        assert np.isfinite(row["ratio_to_forward"]) and row["ratio_to_forward"] > 0, row["method"]
        assert row["outside_ops_ms"] is None or row["outside_ops_ms"] >= 0, row["method"]
    assert all(row["outside_ops_ms"] is not None for row in report["rows"])  # batch 2 is the smallest
    assert spec in capsys.readouterr().out


def test_bench_forward_baseline_has_the_generators_normalisation(tmp_path):
    """Like with like: every baseline runs the CNN behind the normalisation compile applies."""
    from fastinterp.runtime.bench import BenchConfig, _models

    spec, ckpt = user_pair(tmp_path)
    pair = _models(BenchConfig(cnn=spec, generator=str(ckpt)))
    x = pictures(2, 48)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(pair.model(x), pair.explained((x - mean) / std))
    assert pair.kind == "activation" and pair.size == (48, 40)
    with pytest.raises(ValueError, match="normalize: the generator records"):
        _models(BenchConfig(cnn=spec, generator=str(ckpt), normalize="0,0,0/1,1,1"))
    with pytest.raises(ValueError, match=r"generator: 'nope' is neither .* shipped generator \(one of demo, fast"):
        _models(BenchConfig(cnn=spec, generator="nope"))


def test_bench_python_time_cannot_go_negative():
    """Per profiled call: its own wall time minus the union of its ops' intervals (overlapping ops
    of two threads and nested ops counted once, record_function ranges not counted)."""
    from types import SimpleNamespace

    from fastinterp.runtime.bench import _busy_ms, _outside_ops_ms

    def event(start, end, annotation=False):
        return SimpleNamespace(time_range=SimpleNamespace(start=start, end=end), is_user_annotation=annotation)

    events = [event(0, 1000), event(100, 200), event(500, 1500), event(0, 9000, annotation=True), event(2000, 2500)]
    assert _busy_ms(events) == pytest.approx(2.0)  # 0-1500 and 2000-2500 us
    big = torch.rand(700, 700)
    values = _outside_ops_ms({"one-op": lambda: torch.mm(big, big), "python": lambda: sum(range(20000))}, iters=3)
    assert 0 <= values["one-op"] < 5 and values["python"] > 0


def test_concurrent_explainers_of_one_cnn_do_not_interfere():
    cnn = build("resnet18")
    explainers = [fastinterp.compile(cnn, generator(seed=s), representation=kind, input_size=64)
                  for s, kind in enumerate(["gradient", "activation", "gradient"])]
    x = pictures(2, 64)
    sequential = [e.explain(x).maps for e in explainers]
    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = explainers[i % 3].explain(x).maps

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        torch.testing.assert_close(results[i], sequential[i % 3], rtol=0, atol=1e-6)


def test_explain_inside_inference_mode_and_no_grad_gives_ordinary_tensors(explainer):
    x = pictures(2, 64)
    plain = explainer.explain(x)
    with torch.inference_mode():
        inside = explainer.explain(torch.rand(2, 3, 64, 64).copy_(x))  # an inference tensor in
    with torch.no_grad():
        no_grad = explainer.explain(x, return_cgm=True)
    for out in (inside, no_grad):
        torch.testing.assert_close(out.maps, plain.maps, rtol=0, atol=1e-6)
    for tensor in (plain.maps, plain.logits, inside.maps, no_grad.cgm):
        assert not tensor.is_inference() and not tensor.requires_grad
        tensor.mul_(1)  # writable like any tensor


def test_bad_targets_and_representation_fields(explainer):
    x = pictures(2, 64)
    with pytest.raises(ValueError, match="targets: on meta, but the explainer runs on cpu"):
        explainer.explain(x, torch.zeros(2, dtype=torch.int64, device="meta"))
    with pytest.raises(TypeError, match="targets: expected class indices"):
        explainer.explain(x, np.array([1.0, 2.0]))
    cnn, gen = build("resnet18"), generator()
    with pytest.raises(TypeError, match="representation: skip_1x1: expected True or False"):
        fastinterp.compile(cnn, gen, representation={"skip_1x1": "no"})
    with pytest.raises(TypeError, match="representation: teacher: expected .pooled., .last., .first. or a module name"):
        fastinterp.compile(cnn, gen, representation={"teacher": 12345})
    switched = fastinterp.compile(cnn, gen, representation={"kind": "activation"}, input_size=64)
    assert switched.representation["order"] == "last_to_first"  # the new kind's default order
    with pytest.raises(TypeError):
        switched.representation["kind"] = "gradient"  # read-only: threads share it


def test_compile_errors_name_the_generator_side_and_the_probe(tmp_path):
    no_pool = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 28 * 28, 3)).eval()
    path = save_generator(tmp_path / "g.safetensors", generator(k=2),
                          representation={**fastinterp.ACTIVATION_REPRESENTATION, "k": 2})
    with pytest.raises(ValueError, match="generator was trained on the activation representation.*runs no average"):
        fastinterp.compile(no_pool, path, input_size=32)
    with pytest.raises(RuntimeError, match=r"compile: the probe run of Sequential on a \(1, 3, 224, 224\) input failed"):
        fastinterp.compile(no_pool, generator(k=2), representation="gradient")  # made for 32 x 32 images: the default 224 fails


def test_a_bfloat16_cnn_on_the_cpu():
    cnn, gen = build("resnet18").to(torch.bfloat16), generator()
    explainer = fastinterp.compile(cnn, gen, input_size=64, representation="gradient")
    out = explainer.explain(pictures(2, 64).to(torch.bfloat16))
    assert out.maps.dtype == out.logits.dtype == torch.float32 and out.maps.shape == (2, 64, 64)
    with pytest.raises(TypeError, match="numpy has no torch.bfloat16"):
        explainer.explain(np.zeros((1, 3, 64, 64), np.float32))
