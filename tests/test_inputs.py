"""Explaining as people do it: every input form of explain() equals the float-tensor path, lists of
mixed sizes, what an Explanation offers (indexing, repr, top_k, overlays on the original photo,
titled grids), the registry's names, and ``fastinterp explain`` on folders (a corrupt file, several
targets, ``--onnx`` in a process without torch)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import build
from PIL import Image
from torch import nn

import fastinterp
from fastinterp import pretrained
from fastinterp.cli import main as cli
from fastinterp.datasets.zoo import load_cnn as load_zoo_cnn
from fastinterp.generator.checkpoint import load_generator, save_generator
from fastinterp.generator.networks import build_generator
from fastinterp.maps.preprocess import Normalize
from fastinterp.runtime.compiler import DomainWarning
from fastinterp.runtime.explanation import resize_map
from fastinterp.runtime.files import resize_rgb

ATOL = 1e-6  # the bound: every form gives the float tensor's map to this


def generator(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_generator("fast", k=8, size=64).eval()


@pytest.fixture(scope="module")
def explainer():
    with fastinterp.compile(build("resnet18"), generator(), input_size=64, representation="gradient") as e:
        yield e


def photos(count: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (count, H, W, 3) RGB pixels."""
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def as_float(pixels: np.ndarray) -> torch.Tensor:
    """The equivalent float tensor a user would make by hand: (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255


def assert_same(got, expected, atol: float = ATOL) -> None:
    got_maps = got.maps if isinstance(got.maps, list) else list(got.maps)
    expected_maps = list(expected.maps)
    assert len(got_maps) == len(expected_maps)
    for a, b in zip(got_maps, expected_maps):
        a = torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
        assert a.shape == b.shape and torch.isfinite(a).all()
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=atol)
    assert np.array_equal(np.asarray(got.targets), expected.targets.numpy())
    np.testing.assert_allclose(np.asarray(got.logits), expected.logits.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["uint8 numpy BHWC", "uint8 numpy BCHW", "uint8 tensor BCHW", "uint8 tensor BHWC",
                                  "float tensor BHWC", "float numpy BHWC", "PIL list", "PIL tuple", "path list",
                                  "uint8 HWC list", "float CHW tensor list"])
def test_every_batch_form_equals_the_float_tensor(explainer, form, tmp_path):
    pixels = photos(3)
    expected = explainer.explain(as_float(pixels))
    chw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
    paths = []
    for i, p in enumerate(pixels):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(p).save(paths[-1])
    images = {
        "uint8 numpy BHWC": pixels, "uint8 numpy BCHW": chw, "uint8 tensor BCHW": torch.from_numpy(chw),
        "uint8 tensor BHWC": torch.from_numpy(pixels), "float tensor BHWC": as_float(pixels).permute(0, 2, 3, 1),
        "float numpy BHWC": as_float(pixels).permute(0, 2, 3, 1).numpy(),
        "PIL list": [Image.fromarray(p) for p in pixels], "PIL tuple": tuple(Image.fromarray(p) for p in pixels),
        "path list": [str(p) for p in paths], "uint8 HWC list": list(pixels),
        "float CHW tensor list": list(as_float(pixels)),
    }[form]
    got = explainer.explain(images)
    assert_same(got, expected)
    tensors = "tensor" in form
    assert isinstance(got.maps, torch.Tensor if tensors else np.ndarray)
    assert got.maps.shape == (3, 64, 64)


@pytest.mark.parametrize("form", ["PIL", "path", "Path", "uint8 HWC", "uint8 CHW tensor"])
def test_every_single_image_form_equals_the_float_tensor(explainer, form, tmp_path):
    pixels = photos(1, seed=3)
    expected = explainer.explain(as_float(pixels))
    Image.fromarray(pixels[0]).save(tmp_path / "photo.png")
    images = {"PIL": Image.fromarray(pixels[0]), "path": str(tmp_path / "photo.png"), "Path": tmp_path / "photo.png",
              "uint8 HWC": pixels[0], "uint8 CHW tensor": torch.from_numpy(pixels[0]).permute(2, 0, 1)}[form]
    assert_same(explainer.explain(images), expected)


def test_pil_images_are_made_rgb_and_upright(explainer, tmp_path):
    pixels = photos(1, 40, 64)[0]
    grey = Image.fromarray(pixels[..., 0])  # mode L: made RGB, the grey in every channel
    assert_same(explainer.explain(grey), explainer.explain(as_float(np.repeat(pixels[None, ..., :1], 3, axis=-1))))
    rotated = Image.fromarray(pixels)
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to show upright
    rotated.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    out = explainer.explain(tmp_path / "rotated.jpg")
    assert out.maps.shape == (1, 64, 40)  # upright: the map is at the shown orientation


def test_a_list_of_mixed_sizes_is_explained_per_size_in_order(explainer):
    a, b, c = photos(1, 64, 64, seed=1)[0], photos(1, 48, 80, seed=2)[0], photos(1, 64, 64, seed=3)[0]
    got = explainer.explain([a, b, c], targets=[1, 2, 3])
    assert isinstance(got.maps, list) and [m.shape for m in got.maps] == [(64, 64), (48, 80), (64, 64)]
    assert got.targets.tolist() == [1, 2, 3] and got.logits.shape == (3, 10)
    same_size = explainer.explain(as_float(np.stack([a, c])), targets=[1, 3])
    other = explainer.explain(as_float(b[None]), targets=[2])
    np.testing.assert_allclose(got.maps[0], same_size.maps[0].numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.maps[2], same_size.maps[1].numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.maps[1], other.maps[0].numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.logits[[0, 2]], same_size.logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.logits[1], other.logits[0].numpy(), rtol=1e-5, atol=1e-5)
    assert [tuple(i.shape) for i in got.images] == [(3, 64, 64), (3, 48, 80), (3, 64, 64)]
    predicted = explainer.explain([a, b, c], return_cgm=True)
    assert predicted.cgm.shape == (3, 8, 64, 64)
    assert predicted.targets.tolist() == [int(same_size.logits[0].argmax()), int(other.logits[0].argmax()),
                                          int(same_size.logits[1].argmax())]


def test_ambiguous_shapes_are_refused_and_layout_says_which(explainer):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 3), dtype=np.uint8)  # (3, H, 3): CHW or HWC?
    with pytest.raises(ValueError, match=r"shape \(3, 64, 3\) is ambiguous.*layout='CHW' or layout='HWC'"):
        explainer.explain(pixels)
    as_hwc = explainer.explain(pixels, layout="HWC")
    assert as_hwc.maps.shape == (1, 3, 64)
    assert_same(as_hwc, explainer.explain(torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255))
    assert explainer.explain(pixels, layout="CHW").maps.shape == (1, 64, 3)
    with pytest.raises(ValueError, match="layout: expected None"):
        explainer.explain(pixels, layout="NCHW")
    with pytest.raises(ValueError, match="layout='HWC' puts 4 channels"):
        explainer.explain(np.zeros((8, 8, 4), np.uint8), layout="HWC")


def test_float_tensors_in_the_cnns_own_range_work_as_before(explainer):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # normalised: not in [0, 1]
    out = explainer.explain(x)
    assert out.images is x  # taken as they are: no scaling, no copy
    assert float(out.maps.min()) >= 0 and float(out.maps.max()) <= 1


def test_preprocess_is_applied_inside(tmp_path):
    cnn, gen = build("resnet18"), generator()
    pixels = photos(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a module without metadata: nothing recorded to differ from
        inside = fastinterp.compile(cnn, gen, input_size=64, representation="gradient", preprocess="imagenet")
    built_in = fastinterp.compile(nn.Sequential(Normalize(), cnn), gen, input_size=64, representation="gradient")
    assert_same(inside.explain(pixels), built_in.explain(as_float(pixels)))
    with pytest.raises(ValueError, match="preprocess: expected None, 'imagenet', 'none'"):
        fastinterp.compile(cnn, gen, input_size=64, representation="gradient", preprocess="caffe")
    # a recorded preprocess is the default; another one warns
    ckpt = tmp_path / "g.safetensors"
    save_generator(ckpt, gen, representation=dict(fastinterp.DEFAULT_REPRESENTATION), preprocess={
        "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}})
    recorded = fastinterp.compile(cnn, ckpt, input_size=64)
    assert_same(recorded.explain(pixels), built_in.explain(as_float(pixels)))
    with pytest.warns(UserWarning, match="preprocess: the generator was trained on maps of the CNN given"):
        fastinterp.compile(cnn, ckpt, input_size=64, preprocess="none")


def test_explanation_is_a_sequence_with_a_short_repr(explainer):
    out = explainer.explain(photos(3))
    assert len(out) == 3
    second = out[1]
    assert len(second) == 1 and second.maps.shape == (1, 64, 64)
    np.testing.assert_array_equal(second.maps[0], out.maps[1])
    assert int(second.targets[0]) == int(out.targets[1]) and second.images.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(out[-1].logits, out.logits[2:])
    assert len(out[0:3:2]) == 2 and [int(e.targets[0]) for e in out] == out.targets.tolist()
    with pytest.raises(IndexError, match="index: 3 is out of range for 3"):
        out[3]
    with pytest.raises(TypeError, match="index: expected an int or a slice"):
        out["a"]
    text = repr(out)
    assert text.startswith("Explanation(3 images, maps numpy (3, 64, 64), targets [") and len(text) < 200
    named = fastinterp.Explanation(out.logits, out.targets, out.maps, class_names=[f"c{i}" for i in range(10)])
    assert f"'c{int(out.targets[0])}'" in repr(named)


def test_top_k_and_probabilities(explainer):
    out = explainer.explain(photos(2))
    out.class_names = tuple(f"class-{i}" for i in range(10))
    expected = torch.softmax(torch.from_numpy(out.logits), dim=1)
    np.testing.assert_allclose(out.probabilities, expected.numpy(), rtol=1e-5, atol=1e-7)
    values, indices = torch.topk(expected, 3)
    top = out.top_k(3)
    assert [[p.index for p in row] for row in top] == indices.tolist()
    np.testing.assert_allclose([[p.probability for p in row] for row in top], values.numpy(), rtol=1e-5)
    assert top[0][0].name == f"class-{indices[0, 0]}"
    assert len(out.top_k(50)[0]) == 10  # capped at the number of classes
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        out.top_k(0)
    title = out.titles()[1]
    target = int(out.targets[1])
    assert title == f"class-{target} (p={expected[1, target]:.2f})"


def test_overlay_on_larger_and_smaller_originals(explainer, tmp_path):
    pixels = photos(2, 64, 64)
    out = explainer.explain(pixels)
    for height, width in ((150, 110), (40, 30)):  # larger and smaller than the explained 64x64
        original = photos(2, height, width, seed=5)
        picture = out.overlay(original, alpha=0.0)
        assert picture.shape == (2, height, width, 3) and picture.dtype == np.uint8
        np.testing.assert_array_equal(picture, original)  # alpha 0: the photo itself, at its own resolution
        heat = out.overlay(original, alpha=1.0, colormap="gray")[..., 0] / 255  # the map at the photo's size
        maps = torch.from_numpy(out.maps)[:, None]
        reference = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False,
                                  antialias=height < 64)[:, 0].numpy()
        assert np.abs(heat - reference).max() < 0.03  # Pillow's filter vs torch's, and uint8 rounding
    # one PIL photo, a path, a list of mixed sizes
    Image.fromarray(photos(1, 90, 70, seed=6)[0]).save(tmp_path / "photo.png")
    one = out[0]
    assert one.overlay(Image.open(tmp_path / "photo.png")).shape == (1, 90, 70, 3)
    assert one.overlay(tmp_path / "photo.png").shape == (1, 90, 70, 3)
    mixed = out.overlay([Image.open(tmp_path / "photo.png"), photos(1, 30, 50)[0]])
    assert isinstance(mixed, list) and [m.shape for m in mixed] == [(90, 70, 3), (30, 50, 3)]
    default = out.overlay(alpha=0.0)  # over the explained images
    np.testing.assert_array_equal(default, pixels)
    with pytest.raises(ValueError, match="original: expected 2 pictures"):
        out.overlay([pixels[0]])
    with pytest.raises(ValueError, match="cannot tell the channel axis"):
        one.overlay(np.zeros((3, 5, 3), np.uint8))


def test_save_titles_each_panel(explainer, tmp_path):
    out = explainer.explain([photos(1, 64, 64)[0], photos(1, 40, 90)[0]])
    path = out.save(tmp_path / "grid.png", columns=1)
    with Image.open(path) as png:
        width, height = png.size
    assert height > width  # two panels in one column
    assert out.titles()[0].startswith("class ")  # no names known: the index
    blank = fastinterp.Explanation(out.logits, out.targets, out.maps)  # no pictures kept: the maps alone
    assert blank.save(tmp_path / "maps.png").is_file()


def test_resize_rgb_matches_the_package_resize():
    pixels = photos(1, 97, 130)[0]
    for size in ((64, 64), (160, 200)):
        expected = fastinterp.resize_images(as_float(pixels[None]), size)[0].numpy()
        np.testing.assert_allclose(resize_rgb(pixels, size), expected, rtol=0, atol=2e-5)
    heat = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    assert resize_map(heat, (16, 16)) is heat


def test_shipped_names_say_what_trained_them():
    described = pretrained.names()
    assert set(described) == set(pretrained.SHIPPED) and all(isinstance(v, str) and v for v in described.values())
    teachers = {"gradcam": "Grad-CAM", "score-cam": "Score-CAM", "rise": "RISE"}
    for name, text in pretrained.names("generator").items():
        _, meta = load_generator(pretrained.path(name))
        rep = meta["representation"]
        teacher = meta.get("teacher_method") or rep["method"]
        assert f"taught {teachers[teacher]}" in text, name
        assert f"{rep['kind']} " in text and f"{rep['size']}-px" in text, name
        archs = sorted({c["arch"] for c in meta["cnns"]})
        assert all(arch in text for arch in archs), (name, archs)
    for name, text in pretrained.names("cnn").items():
        _, meta = load_zoo_cnn(pretrained.path(name))
        assert meta["arch"] in text and f"{meta['input_size']}-px" in text and f"{meta['num_classes']} classes" in text
    assert pretrained.cnn_path("demo") == pretrained.path(pretrained.DEMO[0])
    assert pretrained.generator_path("demo") == pretrained.path(pretrained.DEMO[1])
    with pytest.raises(ValueError, match="kind: expected None or one of"):
        pretrained.names("cnns")


def test_class_names_come_from_the_zoo_checkpoint():
    cnn = fastinterp.load_cnn("demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        explainer = fastinterp.compile(cnn, "demo")
    assert explainer.class_names == tuple(str(d) for d in range(10))
    out = explainer.explain(photos(1))
    assert out.top_k(1)[0][0].name == str(out.top_k(1)[0][0].index)
    with pytest.raises(ValueError, match="class_names: 3 names, but ZooCNN returns 10 logits"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DomainWarning)
            fastinterp.compile(cnn, "demo", class_names=["a", "b", "c"])


# ------------------------------------------------------------------ fastinterp explain
def photo_folder(root: Path, count: int = 5) -> Path:
    """A folder of photos of several sizes (one in a subfolder, one grey) and one corrupt file."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (70 + 9 * i, 90, 3), dtype=np.uint8)).save(root / f"p{i}.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(root / "sub" / "grey.png")
    (root / "broken.png").write_bytes(b"not an image at all")
    (root / "notes.txt").write_text("not an image suffix: ignored")
    return root


def test_explain_command_on_a_folder_with_a_corrupt_file(tmp_path, capsys):
    folder = photo_folder(tmp_path / "photos")
    out = tmp_path / "out"
    code = cli(["explain", "--cnn", "demo", "--generator", "demo", str(folder), "--out", str(out), "--no-progress",
                "--batch-size", "4"])
    assert code == 1  # some failed
    err = capsys.readouterr().err
    assert f"skipped {folder / 'broken.png'}" in err and "cannot read" in err
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["count"] == 7 and len(predictions["explained"]) == 6
    assert [f["file"] for f in predictions["failed"]] == [str(folder / "broken.png")]
    names = [Path(e["explained"][0]["overlay"]).with_suffix("").as_posix() for e in predictions["explained"]]
    assert names == ["p0", "p1", "p2", "p3", "p4", "sub/grey"]
    # the map written at the photo's size is the explainer's map of the resized photo, resized back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        explainer = fastinterp.compile(fastinterp.load_cnn("demo"), "demo")
    for entry in predictions["explained"]:
        photo = np.asarray(Image.open(entry["file"]).convert("RGB"))
        saved = np.load(out / entry["explained"][0]["npy"])
        assert saved.shape == photo.shape[:2] == tuple(entry["size"]) and saved.dtype == np.float32
        with Image.open(out / entry["explained"][0]["overlay"]) as png:
            assert png.size == (photo.shape[1], photo.shape[0])
        one = explainer.explain(resize_rgb(photo, (64, 64)))
        np.testing.assert_allclose(saved, resize_map(one.maps[0], photo.shape[:2]), rtol=0, atol=1e-5)
        top = one.top_k(5)[0]
        assert [t["class"] for t in entry["top5"]] == [p.index for p in top]
        assert entry["explained"][0]["class"] == top[0].index and entry["top5"][0]["name"] == top[0].name


def test_explain_command_several_targets_and_errors(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photos(1, 64, 64, seed=i)[0]).save(folder / f"{i}.png")
    out = tmp_path / "out"
    assert cli(["explain", "--cnn", "digits-mobilenet_v3_small", "--generator", "fast", str(folder), "--out", str(out),
                "--targets", "predicted", "3", "--no-progress", "--io-threads", "0", "--overlay-format", "jpg"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0_3.jpg", "0_3.npy", "0_predicted.jpg", "0_predicted.npy",
                                                     "1_3.jpg", "1_3.npy", "1_predicted.jpg", "1_predicted.npy",
                                                     "predictions.json"]
    entry = json.loads((out / "predictions.json").read_text())["explained"][0]
    assert [e["target"] for e in entry["explained"]] == ["predicted", 3] and entry["explained"][1]["class"] == 3
    # two files that would write the same output; no model; both models and --onnx
    (folder / "sub").mkdir()
    Image.fromarray(photos(1)[0]).save(folder / "sub" / "0.png")
    assert cli(["explain", "--cnn", "demo", "--generator", "demo", str(folder / "0.png"), str(folder / "sub" / "0.png"),
                "--out", str(out), "--no-progress"]) == 2
    assert "would both write 0.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["explain", str(folder), "--out", str(out)])
    assert "give --cnn and --generator (or --onnx FILE)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["explain", "--onnx", "x.onnx", "--cnn", "demo", str(folder), "--out", str(out)])
    assert "leave out --cnn" in capsys.readouterr().err
    assert cli(["explain", "--cnn", "demo", "--generator", "no-such", str(folder), "--out", str(out)]) == 2
    assert "'demo' or one of" in capsys.readouterr().err
    assert cli(["explain", "--cnn", "demo", "--generator", "demo", str(folder), "--out", str(out), "--targets",
                "10"]) == 2
    assert "targets: class indices must be in [0, 10)" in capsys.readouterr().err


BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "safetensors"):
            raise ImportError(f"{name} is not importable in this process")
sys.meta_path.insert(0, NoTorch())
from fastinterp.cli import main
code = main(sys.argv[1:])
assert not any(m.split(".")[0] in ("torch", "safetensors") for m in sys.modules), "torch was imported"
print("torch imported:", "torch" in sys.modules)
sys.exit(code)
"""


@pytest.mark.slow
def test_explain_command_runs_an_onnx_file_without_torch(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        explainer = fastinterp.compile(fastinterp.load_cnn("demo"), "demo")
    onnx = explainer.export_onnx(tmp_path / "demo.onnx")
    # the ONNX Runtime explainer takes the same forms, each equal to its float32 array
    loaded = fastinterp.load_onnx(onnx)
    pixels = photos(2)
    expected = loaded.explain(as_float(pixels).numpy())
    for form in (pixels, torch.from_numpy(pixels), [Image.fromarray(p) for p in pixels], list(pixels)):
        got = loaded.explain(form)
        np.testing.assert_allclose(np.asarray(got.maps), expected.maps, rtol=0, atol=ATOL)
        assert np.array_equal(np.asarray(got.targets), expected.targets)
    assert loaded.explain(pixels[0]).maps.shape == (1, 64, 64) and loaded.class_names == explainer.class_names
    mixed = loaded.explain([torch.from_numpy(pixels[0]).permute(2, 0, 1), as_float(pixels[1:])[0]])  # uint8 + float
    np.testing.assert_allclose(mixed.maps.numpy(), expected.maps, rtol=0, atol=ATOL)
    folder = photo_folder(tmp_path / "photos", count=3)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "explain", "--onnx", str(onnx), str(folder),
                          "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr  # the corrupt file: reported, skipped, the rest written
    assert "torch imported: False" in run.stdout and "skipped" in run.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["explained"]) == 4 and predictions["backend"] == "onnxruntime"
    torch_out = tmp_path / "torch"
    assert cli(["explain", "--cnn", "demo", "--generator", "demo", str(folder), "--out", str(torch_out),
                "--no-progress"]) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # compile's ONNX cache, not the user's
    ort_out = tmp_path / "ort"
    assert cli(["explain", "--cnn", "demo", "--generator", "demo", "--backend", "onnxruntime", str(folder),
                "--out", str(ort_out), "--no-progress"]) == 1
    for entry in predictions["explained"]:
        npy = entry["explained"][0]["npy"]
        np.testing.assert_allclose(np.load(out / npy), np.load(torch_out / npy), rtol=0, atol=1e-4)
        np.testing.assert_allclose(np.load(ort_out / npy), np.load(out / npy), rtol=0, atol=1e-6)


def test_export_without_onnx_names_the_extra(explainer, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r'exporting to ONNX runs torch.onnx.export with onnx, which is not '
                                                  r'installed: pip install "fastinterp\[onnx\]"'):
        explainer.export_onnx(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_the_readme_photo_example_runs(tmp_path, monkeypatch):
    """README "Explaining a photo", with the demo pair in place of a fitted one."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Explaining a photo", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    Image.fromarray(photos(1, 120, 90)[0]).save(tmp_path / "cat.jpg")
    code = code.replace('"fitted/generator.safetensors"', '"demo"').replace("(224, 224)", "(64, 64)")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        exec(compile(code, "README.md", "exec"), {"model": fastinterp.load_cnn("demo")})
    with Image.open(tmp_path / "cat_explained.png") as png:
        assert png.size == (90, 120)


def test_dotted_names_and_a_failed_write_skip_one_image_only(tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.1.png", "a.2.png", "sub/b.png"):
        Image.fromarray(photos(1, seed=len(name))[0]).save(folder / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the subfolder's outputs would go")
    code = cli(["explain", "--cnn", "demo", "--generator", "demo", str(folder), "--out", str(out), "--no-progress",
                "--io-threads", "0"])
    assert code == 1 and "writing its outputs failed" in capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a.1.npy", "a.1.png", "a.2.npy", "a.2.png", "predictions.json", "sub"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert [e["explained"][0]["overlay"] for e in predictions["explained"]] == ["a.1.png", "a.2.png"]
    assert [f["file"] for f in predictions["failed"]] == [str(folder / "sub" / "b.png")]
    from fastinterp.runtime.files import explain_files

    with pytest.raises(ValueError, match="alpha: expected a number in"):
        explain_files(None, [folder], out, size=(64, 64), alpha=3)


def test_bfloat16_cnn_numpy_out_and_uint8_tensor_originals():
    cnn = build("resnet18").to(torch.bfloat16)
    explainer = fastinterp.compile(cnn, generator(), input_size=64, representation="gradient")
    out = explainer.explain(photos(2))  # uint8 numpy in: numpy out, though the CNN is bfloat16
    assert isinstance(out.maps, np.ndarray) and out.maps.dtype == np.float32 and out.images.dtype == np.float32
    original = photos(2, 30, 40, seed=9)
    np.testing.assert_array_equal(out.overlay(torch.from_numpy(original), alpha=0.0), original)  # 1/255, not min-max


def test_sixteen_bit_images_are_scaled_not_clipped(explainer, tmp_path):
    grey16 = np.random.default_rng(0).integers(0, 65536, (64, 64), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    expected = np.rint(grey16 * (255 / 65535)).astype(np.uint8)
    got = explainer.explain(tmp_path / "grey16.png")
    as_rgb = as_float(np.repeat(expected[None, ..., None], 3, axis=-1))
    assert_same(got, explainer.explain(as_rgb))
    from fastinterp.datasets.images import read_image

    assert torch.equal(read_image(tmp_path / "grey16.png"), as_rgb[0])  # fit reads it as explain() does
    Image.fromarray(grey16.astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="mode F\\) has no standard range"):
        explainer.explain(tmp_path / "float.tif")


def test_class_names_must_fit_the_logits(tmp_path):
    conv_head = nn.Sequential(*[m for i in range(8) for m in (nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1),
                                                               nn.ReLU())],
                              nn.Conv2d(8, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()  # 5 logits, no Linear
    with pytest.raises(ValueError, match="class_names: 2 names, but Sequential returns 5 logits"):
        fastinterp.compile(conv_head, generator(), input_size=32, representation="gradient", class_names=["a", "b"])
    # names recorded for another CNN are dropped, not misapplied
    ckpt = tmp_path / "g.safetensors"
    save_generator(ckpt, generator(), representation=dict(fastinterp.DEFAULT_REPRESENTATION), classes=["x", "y"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fastinterp.compile(build("resnet18"), ckpt, input_size=64).class_names is None


def test_normalize_repr_tells_two_normalisations_apart():
    assert repr(Normalize()) != repr(Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert "0.485" in repr(Normalize())
