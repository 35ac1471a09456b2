"""The whole explain pipeline as one ONNX file, run by ONNX Runtime, against the torch backend.

The reference is the eager ``Explainer.explain`` (torch backend). Each architecture is exported
once (module-scoped, small shapes) and checked at batch 1 and 5 from the same file, with predicted
and explicit targets. Tolerances: logits 1e-4 relative to their largest magnitude; maps and CGMs
(normalised, in [0, 1]) 1e-4 absolute against the float64 representation (the CNN run in float64,
the generator in float32), and against the torch backend 1e-4 beyond the torch backend's own
distance from that float64 reference. Why both: Grad-CAM of early layers sums channel terms that
nearly cancel, so float32 rounding of the gradients shows in the normalised map. On vgg11_bn with
randomised BatchNorm statistics the torch backend's first CGM is 2.3e-3 from float64 while ONNX
Runtime's is 4e-7 (measured; tests/test_onnx_export.py's float64 reference), so a bare 1e-4 against
the torch backend would fail the more accurate side. Near-constant maps: the graph normalises in
float32, the torch backend in float64, with the same rule (constant when max - min <= 16 float32
ulps of the magnitude -> zeros); the test maps are far from that threshold (checked below).
Discontinuities: inputs within rounding of a ReLU or max-pool tie are not compared (see
``stable_images``): there the map is not defined to 1e-4 by any float32 backend.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

import fastinterp
from fastinterp.export import UnsupportedOpError, export_generator
from fastinterp.generator.networks import build_generator
from conftest import assert_same_state, model_state

pytestmark = pytest.mark.slow  # every test exports

MAPS_ATOL = 1e-4
LOGITS_RTOL = 1e-4


def documented_digest(module: nn.Module) -> str:
    """The weight digest as the README documents it, written out here (not the package's function):
    sha256 over the state dict in name order, "name|dtype|shape|" then the tensor's bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()

# case: (architecture, representation kind, k, input side, generator size). The six
# architectures; densenet, efficientnet and regnet as small members of their torchvision families
# (the same module classes: concat + in-place ReLU + avg-pool transitions; SiLU + SE + depthwise;
# grouped convs + SE), because export time grows with the graph (densenet121: 5 min here). The
# full-size models are measured by benchmarks/onnx_export.py (benchmarks/NOTES.md).
CASES = {
    "resnet18": ("resnet18", "gradient", 8, 64, 32),
    "vgg11_bn": ("vgg11_bn", "gradient", 4, 64, 32),  # in-place ReLU after every conv; 8 convs -> k=4
    "mobilenet_v3_small": ("mobilenet_v3_small", "gradient", 8, 64, 32),  # hardswish, SE
    "densenet": ("densenet-small", "gradient", 8, 32, 32),
    "efficientnet": ("efficientnet-small", "gradient", 8, 64, 32),
    "regnet": ("regnet-small", "gradient", 8, 64, 32),
    "resnet18-activation": ("resnet18", "activation", 8, 64, 32),  # GAP + Linear head: the weight row
    "mobilenet_v3_small-activation": ("mobilenet_v3_small", "activation", 8, 32, 32),  # a head with a backward
}


def _family_member(name: str) -> nn.Module:
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig
    from torchvision.models.regnet import BlockParams, RegNet

    if name == "densenet-small":
        return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16,
                                           num_classes=10)
    if name == "efficientnet-small":
        setting = [MBConvConfig(1, 3, 1, 32, 16, 1, 0.5, 1.0), MBConvConfig(6, 3, 2, 16, 24, 2, 0.5, 1.0),
                   MBConvConfig(6, 5, 2, 24, 40, 1, 0.5, 1.0), MBConvConfig(6, 3, 2, 40, 80, 1, 0.5, 1.0)]
        return EfficientNet(setting, dropout=0.2, last_channel=256, num_classes=10)
    params = BlockParams.from_init_params(depth=6, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=10)


def random_cnn(name: str, seed: int = 0) -> nn.Module:
    """Random-init torchvision CNN with randomised BatchNorm statistics (so that eval batch norm is
    not the identity and its backward is tested); vgg's 120 M-parameter classifier made small."""
    torch.manual_seed(seed)
    cnn = _family_member(name) if name.endswith("-small") else getattr(torchvision.models, name)(num_classes=10)
    if name.startswith("vgg"):
        cnn.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return cnn.eval()


class Exported:
    def __init__(self, case: str, folder):
        name, kind, k, side, size = CASES[case]
        self.cnn = random_cnn(name)
        torch.manual_seed(1)
        self.generator = build_generator("fast", k=k, size=size)
        self.side = side
        self.explainer = fastinterp.compile(self.cnn, self.generator, input_size=side, representation=kind)
        self.path = self.explainer.export_onnx(folder / f"{case}.onnx", class_names=[f"c{i}" for i in range(10)],
                                               value_range="standard normal test images")
        self.onnx = fastinterp.load_onnx(self.path, providers=["CPUExecutionProvider"])

    def images(self, batch: int, seed: int, side: int | None = None) -> torch.Tensor:
        return stable_images(self.explainer, (batch, 3, side or self.side, side or self.side), seed)


def stable_images(explainer, shape: tuple, seed: int) -> torch.Tensor:
    """Random images at which the explanation is a continuous function of the input.

    Grad-CAM is not: a ReLU input or a max-pool pair within rounding of a tie switches a gradient
    path on or off. Measured: for resnet18 at 80x80 (seed 80) a 1e-7 change of the input moves the
    torch backend's own gradient at one layer by 10%, and float32 rounding in ONNX Runtime lands
    on the other side of the tie. No backend can agree to 1e-4 there, so a draw is taken only if
    nudging it by +-1e-6 noise (both signs: a value near a tie crosses it one way or the other)
    moves the torch backend's CGMs by less than a tenth of the tolerance."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(10):
        images = torch.randn(shape, generator=generator)
        noise = 1e-6 * torch.randn(shape, generator=generator)
        cgm = explainer.explain(images, return_cgm=True).cgm
        if all((explainer.explain(images + sign * noise, return_cgm=True).cgm - cgm).abs().max() <= MAPS_ATOL / 10
               for sign in (1, -1)):
            return images
    raise AssertionError(f"no continuous input in 10 draws for {shape}")


_EXPORTED: dict[str, Exported] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")

    def get(case: str) -> Exported:
        if case not in _EXPORTED:
            _EXPORTED[case] = Exported(case, folder)
        return _EXPORTED[case]

    yield get
    _EXPORTED.clear()


def float64_reference(e: Exported, images: torch.Tensor, targets=None) -> tuple[np.ndarray, np.ndarray]:
    """(maps, cgm) with the CNN's maps computed in float64 (the generator in float32)."""
    from fastinterp.maps.representation import cnn_representation
    from fastinterp.maps.resize import resize_images, resize_maps

    o = e.explainer.representation
    rep = cnn_representation(copy.deepcopy(e.cnn).double(), images.double(), targets=targets, k=o["k"],
                             size=o["size"], order=o["order"], kind=o["kind"], teacher=None, skip_1x1=o["skip_1x1"])
    with torch.no_grad():
        out = copy.deepcopy(e.generator).eval()(resize_images(images, o["size"]), rep.cgm)
    return resize_maps(out[:, 0], tuple(images.shape[-2:])).numpy(), rep.cgm.numpy()


def assert_same(got, ref, return_cgm: bool = False, exact=None) -> None:
    maps, ref_maps = np.asarray(got.maps), ref.maps.numpy()
    assert maps.shape == ref_maps.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all()  # NaN never passes
    torch_error = 0.0
    if exact is not None:
        exact_maps, exact_cgm = exact
        assert np.abs(maps - exact_maps).max() <= MAPS_ATOL
        if return_cgm:
            assert np.abs(np.asarray(got.cgm) - exact_cgm).max() <= MAPS_ATOL
        torch_error = float(np.abs(ref_maps - exact_maps).max())
    assert np.abs(maps - ref_maps).max() <= MAPS_ATOL + torch_error
    assert (np.asarray(got.targets) == ref.targets.numpy()).all()
    logits, ref_logits = np.asarray(got.logits), ref.logits.numpy()
    assert np.isfinite(logits).all()
    assert np.abs(logits - ref_logits).max() <= LOGITS_RTOL * np.abs(ref_logits).max()
    if return_cgm and exact is None:
        assert np.abs(np.asarray(got.cgm) - ref.cgm.numpy()).max() <= MAPS_ATOL


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_runtime_matches_the_torch_backend(exported, case):
    e = exported(case)
    onnx.checker.check_model(str(e.path), full_check=True)
    for batch, seed in ((1, 11), (5, 12)):  # both from the one file: the batch is dynamic
        images = e.images(batch, seed)
        ref = e.explainer.explain(images, return_cgm=True)
        got = e.onnx.explain(images.numpy(), return_cgm=True)
        assert_same(got, ref, return_cgm=True, exact=float64_reference(e, images))
        assert got.maps.min() >= 0 and got.maps.max() <= 1
        # not a trivial pass: the maps vary across the image and between images
        assert got.maps.std() > 1e-3
        # explicit targets, other than the predicted ones
        targets = (ref.targets + 1 + torch.arange(batch)) % 10
        ref_t = e.explainer.explain(images, targets)
        got_t = e.onnx.explain(images.numpy(), targets.numpy())
        assert (got_t.targets == targets.numpy()).all()
        assert_same(got_t, ref_t, exact=float64_reference(e, images, targets))


def test_layer_maps_are_far_from_the_constant_threshold(exported):
    """The premise of the tolerance: no layer map of the test inputs sits within 1000x of the
    constant-map threshold, where float32 and float64 normalisation could disagree."""
    from fastinterp.ops import constant_rtol
    from fastinterp.maps.representation import layer_maps

    e = exported("resnet18")
    maps = layer_maps(e.cnn, e.images(5, 12)).maps
    for m in maps:
        lo, hi = m.amin(dim=(1, 2)), m.amax(dim=(1, 2))
        relative = (hi - lo) / torch.maximum(lo.abs(), hi.abs()).clamp_min(1e-30)
        constant = hi == lo
        assert ((relative > 1e3 * constant_rtol(torch.float32)) | constant).all()


def test_the_torch_input_gives_torch_output(exported):
    e = exported("resnet18")
    images = e.images(2, 3)
    got = e.onnx.explain(images)
    assert isinstance(got.maps, torch.Tensor) and got.maps.shape == (2, e.side, e.side)
    one = e.onnx.explain(images[0].numpy())  # one (C, H, W) image
    assert one.maps.shape == (1, e.side, e.side)
    assert np.abs(one.maps[0] - got.maps[0].numpy()).max() <= MAPS_ATOL


def test_metadata_round_trip(exported):
    e = exported("resnet18")
    loaded = e.onnx
    assert dict(loaded.representation) == {**e.explainer.representation, "image_resize": e.explainer.image_resize}
    assert loaded.input_size == (e.side, e.side) and loaded.num_classes == 10
    assert loaded.class_names == tuple(f"c{i}" for i in range(10))
    assert loaded.value_range == "standard normal test images"
    meta = {p.key: p.value for p in onnx.load(str(e.path), load_external_data=False).metadata_props}
    assert meta["fastinterp.version"] == fastinterp.__version__
    assert meta["fastinterp.format_version"] == "2"  # version 2: the digests below are the package's one hash
    assert meta["fastinterp.cnn_sha256"] == documented_digest(e.cnn)
    assert meta["fastinterp.generator_sha256"] == documented_digest(e.generator)
    assert json.loads(meta["fastinterp.generator"]) == e.generator.config


def test_export_leaves_the_models_untouched(tmp_path, small_cnn):
    cnn = small_cnn.train()  # a CNN in training mode, BatchNorm and in-place ReLU: its state must stay
    cnn[0].weight.requires_grad_(False)
    torch.manual_seed(0)
    generator = build_generator("fast", k=2, size=16).train()
    before, before_generator = model_state(cnn), model_state(generator)
    explainer = fastinterp.compile(cnn, generator, input_size=32, representation="gradient")
    explainer.export_onnx(tmp_path / "state.onnx")
    fastinterp.export_generator(generator, tmp_path / "generator.onnx")
    assert_same_state(before, model_state(cnn))
    assert_same_state(before_generator, model_state(generator))


@pytest.mark.parametrize("kind, opts", [("lsft", {}), ("fast", {"normalize_cgm": True})])
def test_generator_only_export(tmp_path, kind, opts):
    torch.manual_seed(0)
    generator = build_generator(kind, k=4, size=32, **opts)
    path = export_generator(generator, tmp_path / "generator.onnx")
    onnx.checker.check_model(str(path), full_check=True)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["fastinterp.format"] == "generator"
    assert json.loads(meta["fastinterp.generator"]) == generator.config
    for batch in (1, 3):
        image, cgm = torch.rand(batch, 3, 32, 32), torch.rand(batch, 4, 32, 32)
        (got,) = session.run(None, {"image": image.numpy(), "cgm": cgm.numpy()})
        with torch.no_grad():
            ref = generator.eval()(image, cgm).numpy()
        assert got.shape == ref.shape and np.isfinite(got).all()
        assert np.abs(got - ref).max() <= 1e-5
    with pytest.raises(ValueError, match="not an explainer"):
        fastinterp.load_onnx(path)


def test_load_onnx_needs_no_torch(exported, tmp_path):
    """The ORT backend in a subprocess where importing torch fails."""
    e = exported("resnet18")
    images = e.images(3, 21)
    ref = e.explainer.explain(images)
    np.save(tmp_path / "images.npy", images.numpy())
    np.save(tmp_path / "maps.npy", ref.maps.numpy())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` raises ImportError from here on
        import numpy as np
        import fastinterp
        explainer = fastinterp.load_onnx({str(e.path)!r})
        out = explainer.explain(np.load({str(tmp_path / 'images.npy')!r}))
        assert np.abs(out.maps - np.load({str(tmp_path / 'maps.npy')!r})).max() <= {MAPS_ATOL}
        assert isinstance(out.maps, np.ndarray)
        try:
            explainer.explain(np.zeros((1, 4, 64, 64), np.float32))
        except ValueError as error:
            assert "channels" in str(error)
        else:
            raise AssertionError("no error")
        assert sys.modules["torch"] is None
        print("ok", explainer.providers)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


BAD_INPUTS = [
    ("rank", lambda e: np.zeros((e.side, e.side), np.float32), None),
    ("channels", lambda e: np.zeros((1, 4, e.side, e.side), np.float32), None),
    ("dtype", lambda e: np.zeros((1, 3, e.side, e.side), np.float64), None),
    ("nan", lambda e: np.full((1, 3, e.side, e.side), np.nan, np.float32), None),
    ("inf", lambda e: np.full((1, 3, e.side, e.side), np.inf, np.float32), None),
    ("empty", lambda e: np.zeros((0, 3, e.side, e.side), np.float32), None),
    ("type", lambda e: [[0.0]], None),
    ("target range", lambda e: np.zeros((2, 3, e.side, e.side), np.float32), [0, 10]),
    ("target negative", lambda e: np.zeros((2, 3, e.side, e.side), np.float32), [0, -1]),
    ("target count", lambda e: np.zeros((2, 3, e.side, e.side), np.float32), [0, 1, 2]),
    ("target float", lambda e: np.zeros((2, 3, e.side, e.side), np.float32), np.array([0.5, 1.0])),
    ("target bool", lambda e: np.zeros((2, 3, e.side, e.side), np.float32), True),
]


@pytest.mark.parametrize("what, images, targets", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_raise_the_torch_backends_errors(exported, what, images, targets):
    e = exported("resnet18")
    with pytest.raises((TypeError, ValueError)) as torch_error:
        e.explainer.explain(images(e), targets)
    with pytest.raises((TypeError, ValueError)) as onnx_error:
        e.onnx.explain(images(e), targets)
    assert type(onnx_error.value) is type(torch_error.value)
    argument = str(torch_error.value).split(":")[0]
    assert str(onnx_error.value).split(":")[0] == argument  # the same argument is named
    assert argument.split("[")[0] in ("images", "targets", "model")  # images[0]: a list's first image


def test_wrong_size_and_closed(exported):
    e = exported("resnet18")
    with pytest.raises(ValueError, match="64x64 images, got 48x48"):
        e.onnx.explain(np.zeros((1, 3, 48, 48), np.float32))
    with pytest.raises(TypeError, match="return_cgm"):
        e.onnx.explain(np.zeros((1, 3, 64, 64), np.float32), return_cgm=1)
    copy = fastinterp.load_onnx(e.path, threads=1)
    with copy:
        copy.explain(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(RuntimeError, match="closed"):
        copy.explain(np.zeros((1, 3, 64, 64), np.float32))


def test_corrupt_foreign_and_old_files(exported, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf" * 50)
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        fastinterp.load_onnx(garbage)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported("resnet18").path.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        fastinterp.load_onnx(truncated)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        fastinterp.load_onnx(tmp_path / "missing.onnx")
    # a valid ONNX model that fastinterp did not write
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(foreign))
    with pytest.raises(ValueError, match="not a fastinterp export"):
        fastinterp.load_onnx(foreign)
    # a fastinterp file of another format version
    model = onnx.load(str(exported("resnet18").path))
    for prop in model.metadata_props:
        if prop.key == "fastinterp.format_version":
            prop.value = "99"
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    with pytest.raises(ValueError, match="format version 99"):
        fastinterp.load_onnx(old)
    # version 1 (the weight digests hashed otherwise; the same inputs, outputs and metadata): still read
    for prop in model.metadata_props:
        if prop.key == "fastinterp.format_version":
            prop.value = "1"
    onnx.save(model, str(old))
    assert fastinterp.load_onnx(old).num_classes == 10
    with pytest.raises(ValueError, match="providers"):
        fastinterp.load_onnx(exported("resnet18").path, providers=["NoSuchExecutionProvider"])


class _Upsampling(nn.Module):
    """Convs around an nn.Upsample: upsample_nearest2d's backward has no decomposition here."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.convs = nn.Sequential(*[nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(9)])
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.convs(self.up(torch.relu(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class _DataDependent(_Upsampling):
    def forward(self, x):
        x = torch.relu(self.stem(x))
        if x.mean() > 0:  # branches on a value
            x = x * 2
        return self.head(self.convs(x).mean(dim=(2, 3)))


def test_an_op_without_a_decomposition_is_named_with_its_layer(tmp_path):
    torch.manual_seed(0)
    explainer = fastinterp.compile(_Upsampling().eval(), build_generator("fast", k=8, size=32), input_size=64, representation="gradient")
    with pytest.raises(UnsupportedOpError, match=r"upsample_nearest2d.*'up' \(Upsample\)"):
        explainer.export_onnx(tmp_path / "up.onnx")
    assert not (tmp_path / "up.onnx").exists()
    # the forward-only representation runs no backward through that layer: it exports
    activation = fastinterp.compile(_Upsampling().eval(), build_generator("fast", k=8, size=32), input_size=64,
                                    representation="activation")
    activation.export_onnx(tmp_path / "up-activation.onnx")


def test_data_dependent_control_flow_is_refused_clearly(tmp_path):
    torch.manual_seed(0)
    explainer = fastinterp.compile(_DataDependent().eval(), build_generator("fast", k=8, size=32), input_size=64, representation="gradient")
    with pytest.raises(RuntimeError, match="data-dependent control flow.*eager torch backend"):
        explainer.export_onnx(tmp_path / "dd.onnx")
    explainer.explain(torch.randn(1, 3, 64, 64))  # the eager backend still works


def test_export_arguments_are_checked(exported, tmp_path):
    e = exported("resnet18")
    with pytest.raises(ValueError, match="opset"):
        e.explainer.export_onnx(tmp_path / "a.onnx", opset=17)
    with pytest.raises(ValueError, match="path"):
        e.explainer.export_onnx(tmp_path / "a.txt")
    with pytest.raises(TypeError, match="dynamic_batch"):
        e.explainer.export_onnx(tmp_path / "a.onnx", dynamic_batch=1)
    with pytest.raises(ValueError, match="class_names"):
        e.explainer.export_onnx(tmp_path / "a.onnx", class_names=["a", "b"])


def test_dynamic_size_export(tmp_path):
    import types

    cnn = random_cnn("resnet18")
    torch.manual_seed(0)
    generator = build_generator("fast", k=8, size=32)
    explainer = fastinterp.compile(cnn, generator, input_size=64, representation="gradient")
    path = explainer.export_onnx(tmp_path / "dynamic.onnx", dynamic_size=True)
    loaded = fastinterp.load_onnx(path)
    assert loaded.input_size is None
    e = types.SimpleNamespace(cnn=cnn, generator=generator, explainer=explainer)
    for height, width in ((64, 64), (80, 80), (64, 96)):  # also H != W: the two stay apart in the graph
        images = stable_images(explainer, (2, 3, height, width), seed=height + width)
        assert_same(loaded.explain(images.numpy()), explainer.explain(images), exact=float64_reference(e, images))


def test_compile_with_the_onnxruntime_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    torch.manual_seed(0)
    cnn, generator = random_cnn("resnet18"), build_generator("fast", k=8, size=32)
    eager = fastinterp.compile(cnn, generator, input_size=64, representation="gradient")
    served = fastinterp.compile(cnn, generator, input_size=64, backend="onnxruntime", batch_sizes=[1, 3], representation="gradient")
    assert isinstance(served, fastinterp.OnnxExplainer)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert_same(served.explain(images), eager.explain(images))
    cached = list((tmp_path / "fastinterp" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    fastinterp.compile(cnn, generator, input_size=64, backend="onnxruntime", representation="gradient")  # served from the cache
    assert cached[0].stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="backend"):
        fastinterp.compile(cnn, generator, backend="tensorrt", representation="gradient")


def test_cli_export(tmp_path, capsys):
    from fastinterp.cli import main

    assert main(["export", "--cnn", "resnet18", "--num-classes", "10", "--input-size", "32",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "explainer.onnx" in out and "generator.onnx" in out and "targets equal: True" in out
    diff = float(out.split("max |maps diff| ")[1].split(",")[0])
    assert diff <= MAPS_ATOL
    loaded = fastinterp.load_onnx(tmp_path / "explainer.onnx")
    assert loaded.input_size == (32, 32) and loaded.num_classes == 10
    assert main(["export", "--cnn", "no_such_net", "--out", str(tmp_path)]) == 2
    assert "torchvision classification model" in capsys.readouterr().err


def test_bench_with_the_onnxruntime_backend(capsys):
    from fastinterp.cli.bench import main

    assert main(["--quick", "--backends", "torch", "onnxruntime", "--representations", "activation",
                 "--no-progress", "--no-pytorch-grad-cam", "--no-memory"]) == 0
    out = capsys.readouterr().out
    for method in ("| ort-forward |", "| ort-explain-activation |", "| explain-activation |"):
        assert method in out
    assert "ort explain / ort forward" in out


def test_fp16_export(exported, tmp_path):
    """fp16=True: weights and compute in float16 (min/max, resizes, argmax and scatter stay
    float32), inputs and outputs float32; half the file, maps within float16 rounding."""
    e = exported("resnet18")
    path = e.explainer.export_onnx(tmp_path / "half.onnx", fp16=True)
    assert path.stat().st_size < 0.6 * e.path.stat().st_size
    loaded = fastinterp.load_onnx(path)
    images = e.images(3, 31)
    targets = e.explainer.explain(images).targets  # given, so that a float16 near-tie cannot change the class
    got, ref = loaded.explain(images.numpy(), targets.numpy()), e.explainer.explain(images, targets)
    assert got.maps.dtype == np.float32 and got.logits.dtype == np.float32
    assert np.isfinite(got.maps).all()
    assert np.abs(got.maps - ref.maps.numpy()).max() <= 2e-2
    assert np.abs(got.logits - ref.logits.numpy()).max() <= 2e-2 * np.abs(ref.logits.numpy()).max()


class _Unusual(nn.Module):
    """Layers the torchvision cases do not have: a dilated conv, a grouped strided conv on an odd
    size, an average pool with padding and stride != kernel, an adaptive pool to 3x3."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
                                     for _ in range(6)])
        self.adaptive = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Linear(16 * 9, 10)

    def forward(self, x):
        x = torch.relu(self.dilated(torch.relu(self.stem(x))))
        x = self.pool(torch.relu(self.grouped(x)))
        return self.head(self.adaptive(self.convs(x)).flatten(1))


def test_dilated_grouped_and_padded_pooling_layers(tmp_path):
    import types

    torch.manual_seed(0)
    cnn = _Unusual().eval()
    with torch.no_grad():
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    generator = build_generator("fast", k=8, size=16)
    explainer = fastinterp.compile(cnn, generator, input_size=35, representation="gradient")  # odd: 35 -> 18 -> 9 -> 3
    loaded = fastinterp.load_onnx(explainer.export_onnx(tmp_path / "unusual.onnx"))
    e = types.SimpleNamespace(cnn=cnn, generator=generator, explainer=explainer)
    for batch in (1, 4):
        images = stable_images(explainer, (batch, 3, 35, 35), seed=batch)
        got = loaded.explain(images.numpy(), return_cgm=True)
        assert_same(got, explainer.explain(images, return_cgm=True), return_cgm=True,
                    exact=float64_reference(e, images))


class _ChannelAttention1d(_Upsampling):
    """ECA-style channel attention: a Conv1d over the pooled channels (not exported)."""

    def __init__(self):
        super().__init__()
        self.eca = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        weights = torch.sigmoid(self.eca(x.mean(dim=(2, 3))[:, None]))[:, 0]
        return self.head(self.convs(x * weights[:, :, None, None]).mean(dim=(2, 3)))


def test_a_1d_convolution_is_refused_clearly(tmp_path):
    torch.manual_seed(0)
    explainer = fastinterp.compile(_ChannelAttention1d().eval(), build_generator("fast", k=8, size=32), input_size=64, representation="gradient")
    with pytest.raises(UnsupportedOpError, match="2-D convolutions"):
        explainer.export_onnx(tmp_path / "eca.onnx")
