"""``fastinterp fit`` and its parts: a CNN from a specification, the user's image folders, the
preprocessing recorded and applied, the held-out report, resume, and the domain warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fastinterp
from fastinterp.cli import main
from fastinterp.datasets.images import UNLABELLED, ImageFiles, read_image
from fastinterp.fitting.cnn import load_cnn
from fastinterp.generator.checkpoint import load_generator
from fastinterp.maps.preprocess import IMAGENET, Normalize, Preprocessed, check_preprocess, parse_normalize
from fastinterp.maps.resize import resize_images

SIZE = 32
FACTORY = '''
import torch
from torch import nn


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
'''


def _factory_module(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_factory_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's world: a factory file, its state dict (.safetensors and .pt), a <class>/<image>
    folder of 24 PNGs (RGB, grayscale and RGBA among them) and a flat folder."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("user")
    (root / "cnn.py").write_text(FACTORY)
    model = _factory_module(root / "cnn.py").tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # weights the factory alone does not give
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "weights.safetensors"))
    torch.save(model.state_dict(), root / "weights.pt")
    rng = np.random.default_rng(0)
    for i in range(24):
        folder = root / "images" / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((SIZE + 8, SIZE, 3)) * 255).astype(np.uint8)
        mode = ("RGB", "L", "RGBA")[i % 3]
        image = Image.fromarray(pixels).convert(mode)
        image.save(folder / f"{i}.png")
        flat = root / "flat"
        flat.mkdir(exist_ok=True)
        image.save(flat / f"{i}.png")
    return {"root": root, "model": model, "factory": f"{root / 'cnn.py'}:tiny"}


# ----------------------------------------------------------------------------- the CNN from a spec

def test_a_factory_with_weights_gives_the_users_model(user):
    for weights in ("weights.safetensors", "weights.pt"):
        model = load_cnn(user["factory"], user["root"] / weights)
        for (name, a), b in zip(model.state_dict().items(), user["model"].state_dict().values()):
            assert torch.equal(a, b), name
        assert not model.training


def test_torchvision_and_module_specs(user):
    model = load_cnn("torchvision:resnet18", num_classes=7)
    assert model.fc.out_features == 7
    model = load_cnn("torchvision.models:resnet18")
    assert model.fc.out_features == 1000
    zoo = load_cnn("digits-mobilenet_v3_small")
    assert zoo.arch == "mobilenet_v3_small"


@pytest.mark.parametrize("spec, weights, num_classes, message", [
    ("torchvision:resnet18", None, None, "needs --num-classes"),
    ("torchvision:not_a_model", None, 3, "no classification model"),
    ("missing_file.py:tiny", None, None, "does not exist"),
    ("{root}/cnn.py:nope", None, None, "has no callable 'nope'"),
    ("no_such_package.module:f", None, None, "cannot import"),
    ("resnet18", None, None, "pass torchvision:resnet18"),
    ("my_model", None, None, "cannot tell what"),
    ("{root}/weights.safetensors", None, None, "plain state dict goes to --weights"),
    ("{root}/weights.pt", None, None, "is a weights file"),
    ("torchvision:resnet18", "{root}/weights.safetensors", 3, "missing"),
    ("{root}/cnn.py:tiny", "{root}/scripted.pt", None, "TorchScript"),
    ("{root}/cnn.py:tiny", "{root}/absent.pt", None, "does not exist"),
])
def test_bad_specs_say_what_to_do(user, spec, weights, num_classes, message):
    root = user["root"]
    if weights and "scripted" in weights and not (root / "scripted.pt").exists():
        torch.jit.script(user["model"]).save(str(root / "scripted.pt"))
    with pytest.raises(ValueError, match=message) as error:
        load_cnn(spec.format(root=root), weights.format(root=root) if weights else None, num_classes,
                 argument="--cnn")
    assert "\n" not in str(error.value)


def test_mismatched_weights_name_a_few_keys(user, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in user["model"].state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    del state["0.bias"]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"missing 1 \(0\.bias\); unexpected 1 \(extra\.weight\)"):
        load_cnn(user["factory"], tmp_path / "w.safetensors")


# ----------------------------------------------------------------------------- images and preprocessing

def test_image_folders_read_any_mode_as_rgb_resized_by_the_package(user):
    data = ImageFiles(user["root"] / "images", SIZE)
    assert data.labelled and data.classes == ("class_0", "class_1", "class_2")
    images, labels, _ = data.batch(range(len(data)))
    assert images.shape == (24, 3, SIZE, SIZE) and labels.tolist() == sorted(labels.tolist())
    path, _ = data.files[1]
    raw = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(read_image(path, SIZE), resize_images(raw[None], SIZE)[0], atol=1e-6)
    flat = ImageFiles(user["root"] / "flat", SIZE)
    assert not flat.labelled and set(flat.batch(range(3))[1].tolist()) == {UNLABELLED}
    kept, held = data.split(0.25, seed=0)
    assert len(held) == 6 and len(kept) == 18 and not set(held.files) & set(kept.files)
    assert held.files == data.split(0.25, seed=0)[1].files


def test_bad_folders_are_refused(user, tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        ImageFiles(tmp_path / "absent", SIZE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        ImageFiles(tmp_path / "empty", SIZE)
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(mixed / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(mixed / "y.png")
    with pytest.raises(ValueError, match="both images and class folders"):
        ImageFiles(mixed, SIZE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*x.png"):
        ImageFiles(broken, SIZE).batch([0])


def test_normalisation_forms():
    assert parse_normalize("imagenet") == IMAGENET and parse_normalize("none") is None
    assert parse_normalize("0.5,0.5,0.5/0.25,0.25,0.25") == {"normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    for bad in ("imagnet", "0.5,0.5/0.2,0.2,0.2", "1,2,3/0,1,1", "a,b,c/d,e,f", "0.5,0.5,0.5"):
        with pytest.raises(ValueError, match="--normalize"):
            parse_normalize(bad)
    with pytest.raises(ValueError, match="preprocess"):
        check_preprocess({"normalise": {}})
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    wrapped = Preprocessed(model, IMAGENET)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(wrapped(x), model(Normalize()(x)))
    assert list(wrapped.state_dict()) == [f"model.{k}" for k in model.state_dict()]  # no normalisation buffers


# ----------------------------------------------------------------------------- fit end to end

def _fit_args(user, out: Path, *extra: str, steps: int = 4) -> list[str]:
    root = user["root"]
    return ["fit", "--cnn", user["factory"], "--weights", str(root / "weights.safetensors"), "--images",
            str(root / "images"), "--normalize", "imagenet", "--input-size", str(SIZE), "--out", str(out),
            "--steps", str(steps), "--batch-size", "4", "--teacher-method", "score-cam", "--report-images", "4",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def fitted(user, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "run"
    assert main(_fit_args(user, out)) == 0
    return out


@pytest.mark.slow
def test_fit_writes_a_complete_generator_and_report(user, fitted):
    _, metadata = load_generator(fitted / "generator.safetensors")
    assert metadata["preprocess"] == IMAGENET
    assert metadata["input_size"] == [SIZE, SIZE]
    assert metadata["classes"] == ["class_0", "class_1", "class_2"]
    assert metadata["teacher_method"] == "score-cam"
    assert metadata["representation"]["kind"] == "activation" and metadata["representation"]["teacher"] == "pooled"
    assert metadata["cnns"][0]["weights_sha256"] == fastinterp._core.hashing.weights_sha256(user["model"])
    state = json.loads((fitted / "fit.json").read_text())
    report = state["report"]
    for key in ("mae", "pearson", "ssim"):
        assert np.isfinite(report["fidelity"][key])
    assert report["fidelity"]["n"] == 2  # 10% of 24, rounded
    for metric in ("deletion", "insertion"):
        assert set(report["faithfulness"][metric]) >= {"generator", "teacher", "difference", "difference_se"}
    assert report["cost"]["teacher_ms"] > 0 and report["cost"]["explain_ms"] > 0
    assert "## Fidelity to the teacher" in (fitted / "report.md").read_text()
    assert Image.open(fitted / "grid.png").size[0] == 3 * (SIZE + 2)


@pytest.mark.slow
def test_compile_applies_the_recorded_preprocessing(user, fitted):
    """Explaining [0, 1] images with the fitted generator equals explaining them with a CNN that has
    the normalisation built in and a generator that records none."""
    cnn = load_cnn(user["factory"], user["root"] / "weights.safetensors")
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    explained = fastinterp.compile(cnn, fitted / "generator.safetensors").explain(images)
    generator, metadata = load_generator(fitted / "generator.safetensors")
    generator.fastinterp_metadata = {k: v for k, v in metadata.items() if k not in ("preprocess", "cnns")}
    built_in = nn.Sequential(Normalize(), cnn)
    reference = fastinterp.compile(built_in, generator).explain(images)
    assert torch.allclose(explained.logits, reference.logits, atol=1e-5)
    assert torch.allclose(explained.maps, reference.maps, atol=1e-5)
    plain = fastinterp.compile(cnn, generator).explain(images)  # the same CNN without its normalisation
    assert not torch.allclose(plain.logits, reference.logits, atol=1e-3)


@pytest.mark.slow
def test_rerun_resumes_and_a_changed_option_is_refused(user, fitted, capsys):
    shards = sorted((fitted / "data" / "train").glob("shard-*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    before = (fitted / "generator.safetensors").read_bytes()
    report = (fitted / "report.md").stat().st_mtime_ns
    assert main(_fit_args(user, fitted)) == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # nothing rebuilt
    assert (fitted / "generator.safetensors").read_bytes() == before  # nor retrained
    assert (fitted / "report.md").stat().st_mtime_ns == report  # nor re-reported
    with pytest.raises(SystemExit) as exit_info:
        main(_fit_args(user, fitted, steps=5))
    assert exit_info.value.code == 2
    assert "differs in ['steps']" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_fit_resumes_to_the_same_generator(user, tmp_path, monkeypatch):
    import fastinterp.fitting.pipeline as pipeline

    whole = tmp_path / "whole"
    args = lambda out: _fit_args(user, out, steps=6)  # noqa: E731
    assert main(args(whole)) == 0
    real = pipeline.train_generator

    def killed(*a, **k):  # the process dies after 3 steps: its saved state is all that is left
        real(*a, **{**k, "stop_after": 3})
        raise KeyboardInterrupt

    cut = tmp_path / "cut"
    monkeypatch.setattr(pipeline, "train_generator", killed)
    with pytest.raises(KeyboardInterrupt):
        main(args(cut))
    monkeypatch.setattr(pipeline, "train_generator", real)
    assert main(args(cut)) == 0
    a, _ = load_generator(whole / "generator.safetensors")
    b, _ = load_generator(cut / "generator.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("change, message", [
    (["--cnn", "torchvision:nope"], "no classification model"),
    (["--weights", "/nonexistent.safetensors"], "does not exist"),
    (["--images", "/nonexistent_folder"], "not a folder"),
    (["--normalize", "imagenett"], "--normalize"),
    (["--representation", "activation", "--teacher-method", "gradcam"], "CGM 0"),
])
def test_bad_arguments_exit_2_with_one_line(user, tmp_path, capsys, change, message):
    args = _fit_args(user, tmp_path / "o")
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_accuracy_near_chance_warns_about_normalisation(user, tmp_path):
    from fastinterp.fitting.pipeline import cnn_accuracy

    data = ImageFiles(user["root"] / "images", SIZE)
    share, count = cnn_accuracy(user["model"], data)
    labels = data.batch(range(len(data)))[1]
    with torch.no_grad():
        expected = (user["model"](data.batch(range(len(data)))[0]).argmax(1) == labels).float().mean().item()
    assert count == 24 and share == pytest.approx(expected)
    assert cnn_accuracy(user["model"], ImageFiles(user["root"] / "flat", SIZE)) is None


# ----------------------------------------------------------------------------- Python API and compile

def test_top_level_api():
    for name in ("fit", "build_dataset", "train_generator", "load_cnn"):
        assert callable(getattr(fastinterp, name)), name


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 3


def test_torchvision_image_folders_and_tensor_datasets_are_datasets(user):
    import torchvision

    from fastinterp.datasets.images import DatasetImages

    folder = torchvision.datasets.ImageFolder(str(user["root"] / "images"))  # PIL images, no transform
    ours = ImageFiles(user["root"] / "images", SIZE).batch(range(24))
    theirs = DatasetImages(folder, SIZE).batch(range(24))
    assert torch.equal(theirs[0], ours[0]) and torch.equal(theirs[1], ours[1])
    tensors = torch.utils.data.TensorDataset(ours[0], ours[1])
    assert torch.equal(DatasetImages(tensors, SIZE, classes=["a", "b", "c"]).batch([3, 5])[0], ours[0][[3, 5]])
    unlabelled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ours[0]), batch_size=5)
    images, labels, _ = DatasetImages(unlabelled, SIZE).batch(range(24))
    assert torch.equal(images, ours[0]) and (labels == UNLABELLED).all() and labels.shape == (24,)
    with pytest.raises(ValueError, match="ToTensor"):
        DatasetImages(torch.utils.data.TensorDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)), SIZE).batch([0])


@pytest.mark.slow
def test_fit_from_a_dataset_and_a_dataloader(user, tmp_path):
    from conftest import model_state

    model = load_cnn(user["factory"], user["root"] / "weights.safetensors").train()  # a model in training mode
    before = model_state(model)
    for name, images in (("dataset", _Pairs(12)), ("loader", torch.utils.data.DataLoader(_Pairs(12), batch_size=5))):
        path = fastinterp.fit(model, images, out=tmp_path / name, steps=2, batch_size=2, report_images=2,
                              teacher="gradcam++", progress=False, input_size=SIZE, preprocess="imagenet")
        assert path.is_file() and load_generator(path)[1]["preprocess"] == IMAGENET
    after = model_state(model)  # fitting changed nothing of the user's model: mode, BN statistics, weights, hooks
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name


def test_a_python_trained_generator_compiles_with_its_own_representation(user, tmp_path):
    from fastinterp.datasets.reader import ExplanationDataset
    from fastinterp.generator.networks import build_discriminator, build_generator
    from fastinterp.generator.training import TrainConfig

    model = load_cnn(user["factory"], user["root"] / "weights.safetensors")
    fastinterp.build_dataset([("tiny", model)], ImageFiles(user["root"] / "flat", SIZE), 8, tmp_path / "data",
                             kind="activation", order="last_to_first", size=32, progress=False, teacher="last")
    generator, discriminator = build_generator("fast", k=8, size=32), build_discriminator(size=32)
    fastinterp.train_generator(generator, discriminator, ExplanationDataset(tmp_path / "data"),
                               TrainConfig(steps=2, batch_size=4), tmp_path / "gen", progress=False)
    explainer = fastinterp.compile(model, tmp_path / "gen" / "generator.safetensors", input_size=SIZE)
    assert explainer.representation["kind"] == "activation"
    with pytest.raises(ValueError, match="representation"):
        fastinterp.compile(model, build_generator("fast", k=8, size=32), input_size=SIZE)
    with pytest.raises(ValueError, match="metadata"):
        fastinterp.train_generator(generator, discriminator, [{"image": torch.rand(3, 32, 32),
                                                                "cgm": torch.rand(8, 32, 32),
                                                                "teacher": torch.rand(32, 32)}],
                                   TrainConfig(steps=1, batch_size=1), tmp_path / "x", progress=False)


def test_the_domain_warning_names_the_training_and_the_fit_command():
    import torchvision

    from fastinterp import pretrained
    from fastinterp.datasets.zoo import load_cnn as load_zoo

    foreign = torchvision.models.resnet18(num_classes=10).eval()
    with pytest.warns(UserWarning, match=r"trained for other CNNs .* on digits at 64 px .*fastinterp fit --cnn"):
        fastinterp.compile(foreign, "demo", input_size=64)
    sc_cnn, _ = load_zoo(pretrained.path("digits-mobilenet_v3_small"))  # sc-fast was distilled on this CNN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastinterp.compile(sc_cnn, "sc-fast")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("demo", *pretrained.names("generator")):  # every shipped name, wherever a generator is taken
            assert fastinterp.compile(sc_cnn, name).metadata is not None, name
