"""The compiled runtime: ``compile(..., backend="inductor")`` and ``.pt2`` packages (AOTInductor)
against the eager ``Explainer.explain``.

Compiling is the cost here (tens of seconds per graph on a 2-core CPU, cold cache), so every test
that compiles is slow-marked and their count is small: five architectures, both representations
among them, two batch sizes on resnet18 (a compile each), two .pt2 packages (one made
by ``fastinterp export --format pt2`` and loaded in a fresh process). The tolerances and the
float64 reference are the ONNX tests' (tests/test_onnx_export.py: why both references); the
six-architecture parity at full size is ``benchmarks/compiled_parity.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch

import fastinterp
from fastinterp.generator.networks import build_generator
from fastinterp.runtime.inductor import InductorExplainer
from conftest import assert_same_state, model_state
from test_onnx_export import LOGITS_RTOL, MAPS_ATOL, _DataDependent, float64_reference, random_cnn, stable_images

# case: (architecture, representation kind, k, input side, generator size, batch sizes): the ONNX
# tests' small family members, both kinds; each batch size is a compile, so two only on resnet18
CASES = {
    "resnet18": ("resnet18", "gradient", 8, 64, 32, (2, 5)),
    "vgg11_bn": ("vgg11_bn", "gradient", 4, 64, 32, (3,)),
    "mobilenet_v3_small-activation": ("mobilenet_v3_small", "activation", 8, 32, 32, (3,)),
    "densenet-activation": ("densenet-small", "activation", 8, 32, 32, (3,)),
    "efficientnet": ("efficientnet-small", "gradient", 8, 64, 32, (3,)),
}


def assert_as_accurate(got, ref, exact) -> None:
    """``assert_same`` against the eager result ``ref``, with the float64 reference ``exact`` held
    as the eager backend is held to it: a compiled graph sums in its own order, so on a CNN where
    the eager backend is itself e.g. 2e-3 from float64 (vgg11_bn's early Grad-CAMs: nearly
    cancelling channel terms), the compiled one may be that far too, not further."""
    exact_maps, exact_cgm = exact
    for name, value, reference, truth in (("maps", got.maps, ref.maps, exact_maps), ("cgm", got.cgm, ref.cgm, exact_cgm)):
        value, reference = np.asarray(value), reference.numpy()
        assert np.isfinite(value).all(), name  # NaN never passes
        own = float(np.abs(reference - truth).max())  # the eager backend's own float32 error
        assert np.abs(value - truth).max() <= MAPS_ATOL + own, name
        assert np.abs(value - reference).max() <= MAPS_ATOL + 2 * own, name
    assert np.asarray(got.maps).shape == tuple(ref.maps.shape) and np.asarray(got.maps).dtype == np.float32
    assert (np.asarray(got.targets) == ref.targets.numpy()).all()
    logits, ref_logits = np.asarray(got.logits), ref.logits.numpy()
    assert np.isfinite(logits).all()
    assert np.abs(logits - ref_logits).max() <= LOGITS_RTOL * np.abs(ref_logits).max()


def pair(case: str):
    name, kind, k, side, size, _ = CASES[case]
    cnn = random_cnn(name)
    torch.manual_seed(1)
    generator = build_generator("fast", k=k, size=size)
    eager = fastinterp.compile(cnn, generator, input_size=side, representation=kind)
    return types.SimpleNamespace(cnn=cnn, generator=generator, explainer=eager, side=side)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_inductor_matches_the_eager_backend(case, capfd):
    e = pair(case)
    before = model_state(e.cnn)
    compiled = fastinterp.compile(e.cnn, e.generator, input_size=e.side, representation=CASES[case][1],
                                  backend="inductor")
    assert isinstance(compiled, InductorExplainer) and compiled.backend == "inductor"
    assert compiled.num_classes == 10 and compiled.compile_seconds == {}  # traced now, compiled on first call
    batches = CASES[case][-1]
    for batch in batches:
        images = stable_images(e.explainer, (batch, 3, e.side, e.side), seed=10 + batch)
        ref = e.explainer.explain(images, return_cgm=True)
        got = compiled.explain(images, return_cgm=True)
        assert isinstance(got.maps, torch.Tensor) and got.maps.dtype == torch.float32
        assert_as_accurate(got, ref, float64_reference(e, images))
        assert got.maps.std() > 1e-3  # not a trivial pass
        targets = (ref.targets + 1 + torch.arange(batch)) % 10  # explicit, other than the predicted
        got_t = compiled.explain(images, targets, return_cgm=True)
        assert (got_t.targets == targets).all()
        assert_as_accurate(got_t, e.explainer.explain(images, targets, return_cgm=True),
                           float64_reference(e, images, targets))
    # one compile per batch size, each said on stderr
    assert list(compiled.compile_seconds) == [(b, 3, e.side, e.side) for b in batches]
    assert capfd.readouterr().err.count("fastinterp: compiled in") == len(batches)
    assert_same_state(before, model_state(e.cnn))
    with pytest.raises(ValueError, match=r"targets: class indices must be in \[0, 10\)"):
        compiled.explain(images, [10] * batches[-1])  # checked before the compiled gather
    if case == "resnet18":  # a batch of 4: padded to the compiled 5, not compiled anew
        images = stable_images(e.explainer, (4, 3, e.side, e.side), 14)
        assert_as_accurate(compiled.explain(images, return_cgm=True), e.explainer.explain(images, return_cgm=True),
                           float64_reference(e, images))
        assert (4, 3, e.side, e.side) not in compiled.compile_seconds
    if case == "resnet18":  # another image size: traced and compiled on its first call
        images = stable_images(e.explainer, (2, 3, 48, 48), 13)
        stages = compiled.profile(images)
        assert stages["compile"] > 0 and (2, 3, 48, 48) in compiled.compile_seconds
        assert_as_accurate(compiled.explain(images, return_cgm=True), e.explainer.explain(images, return_cgm=True),
                           float64_reference(e, images))
        assert "compile" not in compiled.profile(images)


def test_an_untraceable_cnn_falls_back_to_the_eager_backend_with_one_warning():
    torch.manual_seed(0)
    cnn, generator = _DataDependent().eval(), build_generator("fast", k=8, size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explainer = fastinterp.compile(cnn, generator, input_size=64, representation="gradient", backend="inductor")
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "_DataDependent cannot be traced" in said[0] and "data-dependent" in said[0]
    assert "eager backend" in said[0]
    assert not isinstance(explainer, InductorExplainer)
    eager = fastinterp.compile(cnn, generator, input_size=64, representation="gradient")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(explainer.explain(images).maps, eager.explain(images).maps)


def test_inductor_refuses_autocast_and_non_float32_cnns(small_cnn):
    generator = build_generator("fast", k=3, size=16)
    with pytest.raises(ValueError, match="backend: 'inductor' compiles the float32 graph"):
        fastinterp.compile(small_cnn, generator, input_size=32, representation="gradient", backend="inductor",
                           dtype=torch.bfloat16)


def _metadata_checks(loaded, e, path):
    from fastinterp._core.hashing import weights_sha256

    explainer = e.explainer
    assert loaded.backend == "pt2" and loaded.path == path
    assert loaded.input_size == explainer.input_size and loaded.num_classes == explainer.num_classes
    assert dict(loaded.representation) == {**explainer.representation, "image_resize": explainer.image_resize}
    assert loaded.metadata["fastinterp.device"] == "cpu"
    assert loaded.metadata["fastinterp.cnn_sha256"] == weights_sha256(e.cnn)
    assert loaded.metadata["fastinterp.generator_sha256"] == weights_sha256(e.generator)


@pytest.mark.slow
def test_pt2_package_matches_the_eager_backend(tmp_path):
    e = pair("mobilenet_v3_small-activation")
    names = [f"c{i}" for i in range(10)]
    path = e.explainer.export_pt2(tmp_path / "explainer.pt2", class_names=names)
    loaded = fastinterp.load_pt2(path)
    _metadata_checks(loaded, e, path)
    assert loaded.class_names == tuple(names)
    for batch, seed in ((1, 21), (4, 22)):  # one package, any batch
        images = stable_images(e.explainer, (batch, 3, e.side, e.side), seed)
        ref = e.explainer.explain(images, return_cgm=True)
        got = loaded.explain(images.numpy(), return_cgm=True)
        assert isinstance(got.maps, np.ndarray)
        assert_as_accurate(got, ref, float64_reference(e, images))
        assert isinstance(loaded.explain(images).maps, torch.Tensor)  # tensors in, tensors out
    with pytest.raises(ValueError, match="images: the exported graph takes 32x32 images, got 40x40"):
        loaded.explain(np.zeros((1, 3, 40, 40), np.float32))
    with pytest.raises(ValueError, match=r"targets: class indices must be in \[0, 10\)"):
        loaded.explain(images, [10] * 4)
    loaded.close()
    with pytest.raises(RuntimeError, match="closed.*load_pt2"):
        loaded.explain(images)


def test_pt2_paths_and_files_are_checked(tmp_path, small_cnn):
    explainer = fastinterp.compile(small_cnn, build_generator("fast", k=3, size=16), input_size=32,
                                   representation="gradient")
    with pytest.raises(ValueError, match="path: expected a file name ending in .pt2"):
        explainer.export_pt2(tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="dynamic_batch"):
        explainer.export_pt2(tmp_path / "a.pt2", dynamic_batch=1)
    with pytest.raises(FileNotFoundError, match="path: no .pt2 package"):
        fastinterp.load_pt2(tmp_path / "missing.pt2")
    (tmp_path / "foreign.pt2").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(ValueError, match="is not a loadable AOTInductor package"):
        fastinterp.load_pt2(tmp_path / "foreign.pt2")


@pytest.mark.slow
def test_cli_export_pt2_loads_in_a_fresh_process_without_model_code(tmp_path, capsys):
    from fastinterp.cli import main

    assert main(["export", "--cnn", "demo", "--generator", "demo", "--format", "pt2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "explainer.pt2" in out and "load_pt2" in out and "targets equal: True" in out
    assert float(out.split("max |maps diff| ")[1].split(",")[0]) <= 1e-4
    assert not (tmp_path / "generator.onnx").exists()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    np.save(tmp_path / "images.npy", images.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo generator never saw the demo CNN (DomainWarning)
        reference = fastinterp.compile(fastinterp.load_cnn("demo"), "demo").explain(images)
    script = textwrap.dedent(f"""
        import json, sys, time
        import numpy as np
        import fastinterp
        start = time.perf_counter()
        explainer = fastinterp.load_pt2({str(tmp_path / 'explainer.pt2')!r})
        out = explainer.explain(np.load({str(tmp_path / 'images.npy')!r}))
        np.save({str(tmp_path / 'maps.npy')!r}, out.maps)
        print(json.dumps({{"targets": out.targets.tolist(), "seconds": time.perf_counter() - start,
                          "model_code": sorted(m for m in sys.modules if m.startswith(("torchvision", "fastinterp.maps",
                                                                                    "fastinterp.generator")))}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["model_code"] == []  # no CNN or generator code is imported to run the package
    assert result["targets"] == reference.targets.tolist()
    assert np.abs(np.load(tmp_path / "maps.npy") - reference.maps.numpy()).max() <= 1e-4


def test_cli_export_format_flags_are_checked(tmp_path, capsys):
    from fastinterp.cli import main

    for flags, said in ((["--format", "pt2", "--fp16"], "--fp16: only with --format onnx"),
                        (["--format", "pt2", "--dynamic-size"], "--dynamic-size: only with --format onnx"),
                        (["--format", "pt2", "--opset", "18"], "--opset: only with --format onnx"),
                        (["--device", "cuda"], "--device: only with --format pt2")):
        with pytest.raises(SystemExit) as exit_:
            main(["export", "--cnn", "demo", *flags, "--out", str(tmp_path)])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


@pytest.mark.slow
def test_bench_with_the_compiled_backends(capsys):
    from fastinterp.cli.bench import main

    assert main(["--quick", "--backends", "torch", "inductor", "pt2", "--representations", "activation",
                 "--no-progress", "--no-pytorch-grad-cam", "--no-memory"]) == 0
    out = capsys.readouterr().out
    for method in ("| compiled-forward |", "| inductor-explain-activation |", "| inductor-graph-activation |",
                   "| pt2-explain-activation |", "| explain-activation |"):
        assert method in out
    assert "inductor / compiled forward" in out and "pt2 / inductor" in out
    assert "inductor-activation" in out.split("Compile times in this run")[1]
    assert "- pt2-activation:" in out and " MB" in out
    row = next(line for line in out.splitlines() if line.startswith("| ") and "| inductor-explain-activation |" in line)
    assert row.split("|")[-2].strip() != ""  # its Python ms: explain minus the graph alone
