"""Dataset builder: contents match a direct representation call, runs are byte-identical, an
interrupted or damaged build resumes to the same bytes, the reader and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastinterp import cnn_representation, representation_options
from fastinterp.datasets.images import SyntheticImages, image_folder
from fastinterp.cli.build_dataset import main as main_build
from fastinterp.datasets.build import build_dataset
from fastinterp.datasets.reader import MANIFEST, ExplanationDataset
from fastinterp.datasets.zoo import build_cnn, save_cnn
from conftest import naive_layer_maps, naive_rise

pytestmark = pytest.mark.slow  # every test builds a dataset

SIZE = 32
OPTIONS = dict(n=20, k=8, size=SIZE, batch_size=5, shard_size=8, seed=2, input_size=SIZE, progress=False)


def demo_cnn(num_classes: int) -> torch.nn.Module:
    """A small 10-conv-layer VGG-style CNN (BatchNorm, in-place ReLU) for 32-64 px images."""
    layers, channels = [], 3
    for width, pool in ((8, False), (8, True), (16, False), (16, True), (24, False), (24, True),
                        (32, False), (32, False), (32, False), (32, False)):
        layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.BatchNorm2d(width),
                   torch.nn.ReLU(inplace=True)]
        if pool:
            layers.append(torch.nn.MaxPool2d(2))
        channels = width
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(channels, num_classes))


@pytest.fixture(scope="module")
def cnns():
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append((f"demo{seed}", demo_cnn(num_classes=10).eval()))
    return models


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.endswith(".tmp")}


@pytest.fixture(scope="module")
def reference(cnns, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    build_dataset(cnns, "digits", out_dir=out, **OPTIONS)
    return out


def test_contents_match_a_direct_representation(cnns, reference):
    data = ExplanationDataset(reference)
    assert len(data) == 20 and data.cnn_ids == ["demo0", "demo1"] and data.has_masks
    manifest = json.loads((reference / MANIFEST).read_text())
    assert manifest["complete"] and [s["count"] for s in manifest["shards"]] == [8, 8, 4]
    source = SyntheticImages("digits", 20, size=SIZE, seed=2, split="train")
    for j in (0, 5, 13, 19):
        item = data[j]
        assert item["image"].shape == (3, SIZE, SIZE) and item["cgm"].shape == (8, SIZE, SIZE)
        assert item["teacher"].shape == (SIZE, SIZE) and item["mask"].shape == (SIZE, SIZE)
        assert item["image"].dtype == item["cgm"].dtype == torch.float32 and item["mask"].dtype == torch.bool
        assert int(item["index"]) == j and int(item["cnn"]) == j % 2  # round robin
        image, label, mask = source[j]
        assert int(item["label"]) == label and torch.equal(item["mask"], mask)
        assert torch.equal(item["image"], image.half().float())
        rep = cnn_representation(cnns[j % 2][1], image[None], k=8, size=SIZE)
        assert int(item["target"]) == int(rep.targets[0]) == int(item["prediction"])
        torch.testing.assert_close(item["cgm"], rep.cgm[0], atol=1e-3, rtol=0)  # float16 storage
        torch.testing.assert_close(item["teacher"], rep.teacher[0], atol=1e-3, rtol=0)


def test_two_runs_are_byte_identical(cnns, reference, tmp_path):
    build_dataset(cnns, "digits", out_dir=tmp_path, **OPTIONS)
    assert _files(tmp_path) == _files(reference)


def test_interrupted_build_resumes_to_the_same_bytes(cnns, reference, tmp_path):
    build_dataset(cnns, "digits", out_dir=tmp_path, max_shards=1, **OPTIONS)  # "killed" after one shard
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == 1
    with pytest.raises(ValueError, match="incomplete"):
        ExplanationDataset(tmp_path)
    assert len(ExplanationDataset(tmp_path, allow_incomplete=True)) == 8
    # a shard written but not yet in the manifest (killed between the two writes)
    (tmp_path / "shard-00001.safetensors").write_bytes(b"partial")
    build_dataset(cnns, "digits", out_dir=tmp_path, **OPTIONS)
    assert _files(tmp_path) == _files(reference)


def _build_worker(rank, world, init_file, out_dir, threads, options, fail_rank):
    """One rank of a gloo group building ``out_dir``; rank ``fail_rank`` dies after its first shard."""
    import torch.distributed as dist

    import fastinterp.datasets.build as builder

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(threads)
        models = []
        for seed in (0, 1):  # the same CNNs as the module fixture
            torch.manual_seed(seed)
            models.append((f"demo{seed}", demo_cnn(num_classes=10).eval()))
        if rank == fail_rank:
            save = builder.save_tensors
            calls = []

            def save_then_die(path, tensors, metadata):
                if calls:
                    Path(out_dir + ".died").touch()  # the other rank's error may reach spawn first
                    raise RuntimeError("killed")
                calls.append(path)
                save(path, tensors, metadata)
            builder.save_tensors = save_then_die  # what build_dataset writes each shard with
        build_dataset(models, "digits", out_dir=out_dir, **options)
    finally:
        dist.destroy_process_group()


def _spawn_build(tmp_path, out_dir, options=OPTIONS, fail_rank=-1, world=2):
    import tempfile

    import torch.multiprocessing as mp

    init_file = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_build_worker, args=(world, init_file, str(out_dir), torch.get_num_threads(), options, fail_rank),
             nprocs=world, join=True)


def test_two_gloo_processes_write_the_single_process_bytes(reference, tmp_path):
    _spawn_build(tmp_path, tmp_path / "two")  # shards 0 and 2 on rank 0, shard 1 on rank 1
    assert _files(tmp_path / "two") == _files(reference)  # manifest included; no rank files left


def test_an_interrupted_multi_rank_build_resumes_to_the_same_bytes(cnns, reference, tmp_path):
    out = tmp_path / "set"
    _spawn_build(tmp_path, out, {**OPTIONS, "max_shards": 1})  # each rank stops after one shard
    manifest = json.loads((out / MANIFEST).read_text())
    assert not manifest["complete"] and [s["index"] for s in manifest["shards"]] == [0, 1]
    assert not list(out.glob("manifest.rank-*"))
    for name in ("shard-00001.safetensors", MANIFEST):  # back to: nothing recorded but shard 0
        (out / name).unlink()
    manifest["shards"] = manifest["shards"][:1]
    (out / MANIFEST).write_text(json.dumps(manifest))
    # a 5-shard build: rank 1 writes shard 1, then dies before writing shard 3
    options = {**OPTIONS, "n": 40}
    with pytest.raises(Exception, match="killed|closed by peer"):  # rank 1, or rank 0 left alone
        _spawn_build(tmp_path, tmp_path / "killed", options, fail_rank=1)
    killed = tmp_path / "killed"
    assert (tmp_path / "killed.died").exists()  # it died where the test made it die
    assert not (killed / MANIFEST).exists()  # never written while a rank was missing
    ranks = json.loads((killed / "manifest.rank-00001.json").read_text())
    assert [s["index"] for s in ranks["shards"]] == [1]
    # resumed by one process: keeps rank 1's verified shard, computes the rest
    mtime = (killed / "shard-00001.safetensors").stat().st_mtime_ns
    build_dataset(cnns, "digits", out_dir=killed, **options)
    assert (killed / "shard-00001.safetensors").stat().st_mtime_ns == mtime
    single = tmp_path / "single"
    build_dataset(cnns, "digits", out_dir=single, **options)
    assert _files(killed) == _files(single)
    # and the first build, resumed by two processes
    _spawn_build(tmp_path, out)
    assert _files(out) == _files(reference)


def test_parts_built_apart_then_finished_write_the_single_process_bytes(cnns, reference, tmp_path):
    """``--processes N`` without a process group: each worker builds its part (rank file, no
    manifest); the call after them all verifies and writes the manifest, computing nothing."""
    out = tmp_path / "parts"
    assert build_dataset(cnns, "digits", out_dir=out, part=(1, 2), **OPTIONS).name == "manifest.rank-00001.json"
    assert not (out / MANIFEST).exists() and sorted(p.name for p in out.glob("shard-*")) == ["shard-00001.safetensors"]
    build_dataset(cnns, "digits", out_dir=out, part=(0, 2), **OPTIONS)
    assert not (out / MANIFEST).exists() and len(list(out.glob("shard-*"))) == 3
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    build_dataset(cnns, "digits", out_dir=out, max_shards=0, **OPTIONS)  # the finishing call
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == mtimes
    assert _files(out) == _files(reference)  # manifest included; no rank files left
    for bad in ((2, 2), (-1, 2), [0, 2], (0, 1.0), (True, 2)):
        with pytest.raises(ValueError, match="part"):
            build_dataset(cnns, "digits", out_dir=tmp_path / "bad", part=bad, **OPTIONS)


def test_damaged_shards_are_recomputed(cnns, reference, tmp_path):
    for name, content in _files(reference).items():
        (tmp_path / name).write_bytes(content)
    last = tmp_path / "shard-00002.safetensors"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    (tmp_path / "shard-00000.safetensors").unlink()  # lost
    with pytest.raises(ValueError, match="missing"):
        ExplanationDataset(tmp_path)
    mtime = (tmp_path / "shard-00001.safetensors").stat().st_mtime_ns
    build_dataset(cnns, "digits", out_dir=tmp_path, **OPTIONS)
    assert _files(tmp_path) == _files(reference)
    assert (tmp_path / "shard-00001.safetensors").stat().st_mtime_ns == mtime  # verified, not redone
    corrupt = bytearray(last.read_bytes())
    corrupt[-1] ^= 1
    last.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupted"):
        ExplanationDataset(tmp_path)


def test_resume_with_another_config_is_refused(cnns, reference, tmp_path):
    for name, content in _files(reference).items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match="another config.*'k'"):
        build_dataset(cnns, "digits", out_dir=tmp_path, **{**OPTIONS, "k": 4})
    other = [(cnns[0][0], cnns[1][1]), cnns[1]]  # same id, other weights
    with pytest.raises(ValueError, match="another config.*'cnns'"):
        build_dataset(other, "digits", out_dir=tmp_path, **OPTIONS)


def test_every_cnn_explains_every_image(cnns, tmp_path):
    build_dataset(cnns, "digits", out_dir=tmp_path, **{**OPTIONS, "n": 6, "assign": "all", "target": "label",
                                                        "dtype": "float32"})
    data = ExplanationDataset(tmp_path)
    assert [int(data[j]["index"]) for j in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [int(data[j]["cnn"]) for j in range(6)] == [0, 1, 0, 1, 0, 1]
    assert all(int(data[j]["target"]) == int(data[j]["label"]) for j in range(6))


def test_image_folder_without_masks_and_resizing(cnns, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(10):
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"class{label}" / "a.png")
    folder = image_folder(tmp_path / "images", 48)
    build_dataset(cnns[:1], folder, out_dir=tmp_path / "out", **{**OPTIONS, "n": 4, "input_size": None})
    data = ExplanationDataset(tmp_path / "out")
    assert not data.has_masks and "mask" not in data[0]
    assert data[0]["image"].shape == (3, SIZE, SIZE)  # stored at the generator's resolution
    with pytest.raises(ValueError, match="n: needs 11"):
        build_dataset(cnns[:1], folder, out_dir=tmp_path / "out2", **{**OPTIONS, "n": 11})


def test_bad_arguments(cnns, tmp_path):
    with pytest.raises(TypeError, match="cnns"):
        build_dataset([], "digits", out_dir=tmp_path, **OPTIONS)
    with pytest.raises(ValueError, match="cnns: ids must be unique"):
        build_dataset([cnns[0], cnns[0]], "digits", out_dir=tmp_path, **OPTIONS)
    with pytest.raises(ValueError, match="dataset"):
        build_dataset(cnns, "mnist", out_dir=tmp_path, **OPTIONS)
    with pytest.raises(ValueError, match="assign"):
        build_dataset(cnns, "digits", out_dir=tmp_path, **{**OPTIONS, "assign": "random"})
    with pytest.raises(ValueError, match="input_size"):
        build_dataset(cnns, "digits", out_dir=tmp_path, **{**OPTIONS, "input_size": None})
    with pytest.raises(ValueError, match="cnns: 'wrong' has 4 outputs"):
        torch.manual_seed(0)
        build_dataset([("wrong", demo_cnn(num_classes=4))], "digits", out_dir=tmp_path / "w", **OPTIONS)
    with pytest.raises(ValueError, match="manifest"):
        ExplanationDataset(tmp_path / "nothing")


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_build(["--help"])
    assert exit_info.value.code == 0 and "--cnn" in capsys.readouterr().out
    torch.manual_seed(0)
    checkpoint = save_cnn(tmp_path / "mobilenet_v3_small_digits.safetensors",
                          build_cnn("mobilenet_v3_small", 10, 32).eval(), {"dataset": "digits"})
    assert main_build(["--cnn", str(checkpoint), "--dataset", "digits", "--n", "3", "--out", str(tmp_path / "set"),
                       "--size", "32", "--shard-size", "2", "--no-progress"]) == 0
    data = ExplanationDataset(tmp_path / "set")
    assert len(data) == 3 and data.cnn_ids == ["mobilenet_v3_small_digits"]
    assert "3 of 3 examples in 2 of 2 shards" in capsys.readouterr().out
    # the same build over two local processes: the same bytes (--examples: --n under torchrun)
    assert main_build(["--cnn", str(checkpoint), "--dataset", "digits", "--examples", "3", "--out", str(tmp_path / "two"),
                       "--size", "32", "--shard-size", "2", "--no-progress", "--processes", "2",
                       "--threads", str(torch.get_num_threads())]) == 0
    assert "3 of 3 examples in 2 of 2 shards" in capsys.readouterr().out
    assert _files(tmp_path / "two") == _files(tmp_path / "set")
    with pytest.raises(SystemExit):
        main_build(["--cnn", str(checkpoint), "--dataset", "digits", "--n", "3", "--out", str(tmp_path / "x"),
                    "--processes", "0"])


def test_eval_generator_cli_reports_each_cnn(reference, tmp_path, capsys):
    from fastinterp.generator.checkpoint import save_generator
    from fastinterp.cli.eval_generator import main as main_eval
    from fastinterp.generator.networks import build_generator

    torch.manual_seed(0)
    generator = build_generator("fast", k=8, size=SIZE).eval()
    path = save_generator(tmp_path / "g.safetensors", generator)
    assert main_eval(["--generator", str(path), "--data", str(reference), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())["reports"][str(reference)]
    assert set(report["by_cnn"]) == {"demo0", "demo1"}
    assert sum(row["n"] for row in report["by_cnn"].values()) == OPTIONS["n"]
    # the numbers, recomputed example by example without fidelity_report: MAE and Pearson r per map
    data, per_cnn = ExplanationDataset(reference), {}
    with torch.no_grad():
        for j in range(len(data)):
            item = data[j]
            pred = generator(item["image"][None], item["cgm"][None])[0, 0].double().flatten()
            teacher = item["teacher"].double().flatten()
            r = torch.corrcoef(torch.stack([pred, teacher]))[0, 1].nan_to_num(0.0)  # constant map: r = 0
            per_cnn.setdefault(data.cnn_ids[int(item["cnn"])], []).append(((pred - teacher).abs().mean(), r))
    for cnn, rows in per_cnn.items():
        assert report["by_cnn"][cnn]["n"] == len(rows)
        assert abs(report["by_cnn"][cnn]["mae"] - sum(m for m, _ in rows).item() / len(rows)) < 1e-5
        assert abs(report["by_cnn"][cnn]["pearson"] - sum(r for _, r in rows).item() / len(rows)) < 1e-4
    assert "demo1" in capsys.readouterr().out
    other = save_generator(tmp_path / "k4.safetensors", build_generator("fast", k=4, size=SIZE))
    with pytest.raises(SystemExit) as exit_info:
        main_eval(["--generator", str(other), "--data", str(reference)])
    assert exit_info.value.code == 2 and "K=8, size=32; the generator expects K=4" in capsys.readouterr().err


def test_train_generator_cli_records_the_representation(cnns, reference, tmp_path, capsys):
    from fastinterp.generator.checkpoint import load_generator
    from fastinterp.cli.train_generator import main as main_train

    with pytest.raises(SystemExit) as exit_info:
        main_train(["--help"])
    assert exit_info.value.code == 0 and "--strategy" in capsys.readouterr().out
    assert main_train(["--data", str(reference), "--val", str(reference), "--kind", "fast", "--out", str(tmp_path),
                       "--steps", "2", "--batch-size", "4", "--val-every", "1", "--augment", "flip", "cgm-gain"]) == 0
    generator, meta = load_generator(tmp_path / "generator.safetensors")
    assert meta["training"]["augment"] == ["flip", "cgm-gain"]
    config = ExplanationDataset(reference).config
    assert meta["representation"] == {key: config[key] for key in
                                      ("kind", "k", "size", "method", "order", "teacher", "skip_1x1", "image_resize")}
    assert [c["id"] for c in meta["cnns"]] == ["demo0", "demo1"] and meta["steps_done"] == 2
    images = torch.rand(2, 3, SIZE, SIZE)
    rep = cnn_representation(cnns[0][1], images, **representation_options(meta))  # feeds the generator as trained
    assert generator(images, rep.cgm).shape == (2, 1, SIZE, SIZE)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["step"] for row in history] == [1, 2] and all("val_pearson" in row for row in history)


def test_train_generator_takes_several_datasets_of_one_representation(cnns, reference, tmp_path, capsys):
    from fastinterp.generator.checkpoint import load_generator
    from fastinterp.cli.train_generator import main as main_train

    build_dataset(cnns[1:], "digits", out_dir=tmp_path / "b", **{**OPTIONS, "n": 6})
    assert main_train(["--data", str(reference), str(tmp_path / "b"), "--out", str(tmp_path / "g"),
                       "--steps", "1", "--batch-size", "4"]) == 0
    _, meta = load_generator(tmp_path / "g" / "generator.safetensors")
    assert [c["id"] for c in meta["cnns"]] == ["demo0", "demo1", "demo1"]
    assert meta["dataset"] == [str(reference), str(tmp_path / "b")] and meta["teacher_method"] == "gradcam"
    build_dataset(cnns[1:], "digits", out_dir=tmp_path / "k4", **{**OPTIONS, "n": 6, "k": 4})
    with pytest.raises(SystemExit):
        main_train(["--data", str(reference), str(tmp_path / "k4"), "--out", str(tmp_path / "h"), "--steps", "1"])
    assert "differs in ['k']" in capsys.readouterr().err


def test_images_are_stored_resized_by_the_explain_time_function(cnns, tmp_path):
    """One resize (fastinterp.resize_images, antialiased) at build time and at explain time,
    recorded in the manifest and, through train-generator, in the generator's metadata."""
    from fastinterp.maps.resize import image_resize_of, resize_images

    build_dataset(cnns, "digits", out_dir=tmp_path, **{**OPTIONS, "input_size": 48, "n": 4})
    data = ExplanationDataset(tmp_path)
    assert data.config["image_resize"] == "bilinear-antialias"
    source = SyntheticImages("digits", 4, size=48, seed=2, split="train")
    for j in range(4):
        image = source[j][0]
        assert torch.equal(data[j]["image"], resize_images(image[None], SIZE)[0].half().float())
    assert image_resize_of({"representation": {"image_resize": data.config["image_resize"]}}) == "bilinear-antialias"
    assert image_resize_of({}) == "bilinear-antialias"  # checkpoints from before the field
    with pytest.raises(ValueError, match="does not have"):
        image_resize_of({"representation": {"image_resize": "lanczos"}})


def test_a_representation_whose_cgm_is_the_teacher_is_refused_unless_asked(cnns, tmp_path):
    from fastinterp.generator.networks import build_discriminator, build_generator
    from fastinterp.generator.training import TrainConfig, train_generator

    options = {**OPTIONS, "n": 4, "shard_size": 4}
    with pytest.raises(ValueError, match="CGM 0 is the teacher map itself"):
        build_dataset(cnns, "digits", out_dir=tmp_path / "refused", order="last_to_first", teacher="last", **options)
    build_dataset(cnns, "digits", out_dir=tmp_path / "copy", order="last_to_first", teacher="last",
                  allow_teacher_input=True, **options)
    data = ExplanationDataset(tmp_path / "copy")
    assert all(torch.equal(data[i]["cgm"][0], data[i]["teacher"]) for i in range(len(data)))
    config = TrainConfig(steps=1, batch_size=2, checkpoint_every=10, val_every=10)
    nets = build_generator("fast", k=8, size=SIZE), build_discriminator(size=SIZE)
    with pytest.raises(ValueError, match="CGM 0 equals the teacher map"):
        train_generator(*nets, data, config, tmp_path / "g", progress=False)
    train_generator(*nets, data, config, tmp_path / "g", progress=False, allow_teacher_input=True)


def independent_teacher(method, model, images, targets, options):
    """The teacher each method should give, computed without the builder's code path: RISE by a
    naive per-mask loop, Grad-CAM++ by the naive per-layer pass, Score-CAM with pytorch-grad-cam's
    channel weights; normalised and resized by the reference cumulative average."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fastinterp.baselines.rise import RiseMasks
    from fastinterp.ops import cumulative_average_reference

    size = tuple(images.shape[-2:])
    if method == "rise":
        masks = RiseMasks(options["n_masks"], *size, seed=0)[0:options["n_masks"]]
        return naive_rise(model, images, targets, masks, 0.5)
    from fastinterp.maps.forward_only import pooled_layer

    # the teacher layer: the default teacher="pooled", the module whose output the head pools
    last = pooled_layer(model, images) or [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
    if method == "gradcam++":
        (raw,) = naive_layer_maps(model, images, [last], targets, method="gradcam++")
    else:
        store = {}
        handle = dict(model.named_modules())[last].register_forward_hook(lambda m, i, o: store.update(a=o.clone()))
        with torch.no_grad():
            model(images)
        handle.remove()
        cam = ScoreCAM(copy.deepcopy(model), [dict(model.named_modules())[last]])
        weights = cam.get_cam_weights(images, None, [ClassifierOutputTarget(int(t)) for t in targets],
                                      store["a"].numpy(), None)
        raw = torch.relu((torch.from_numpy(weights)[:, :, None, None] * store["a"]).sum(1))
    return cumulative_average_reference([raw], size, [0])[:, 0]


@pytest.mark.parametrize("method,options", [("rise", {"n_masks": 6, "batch_size": 16}), ("gradcam++", None),
                                            ("score-cam", {"batch_size": 64})])
def test_any_baseline_can_be_the_teacher(cnns, tmp_path, capsys, method, options):
    """build-dataset --teacher-method: the stored teacher is that baseline's map of the same images
    and classes, recorded in the manifest and, through train-generator, in the generator's metadata
    (which compile shows)."""
    import fastinterp
    from fastinterp.cli.train_generator import main as main_train
    from fastinterp.generator.checkpoint import load_generator

    build_dataset(cnns[:1], "digits", out_dir=tmp_path / "data", dtype="float32", teacher_method=method,
                  teacher_options=options, **{**OPTIONS, "n": 3, "shard_size": 3})
    data = ExplanationDataset(tmp_path / "data")
    assert data.config["teacher_method"] == method and data.config["teacher_options"] == (options or {})
    images = torch.stack([SyntheticImages("digits", 3, size=SIZE, seed=2, split="train")[j][0] for j in range(3)])
    targets = torch.stack([data[j]["target"] for j in range(3)])
    expected = independent_teacher(method, cnns[0][1], images, targets, options or {})
    for j in range(3):
        assert torch.allclose(data[j]["teacher"], expected[j], atol=1e-5), j
    assert main_train(["--data", str(tmp_path / "data"), "--kind", "fast", "--out", str(tmp_path / "g"),
                       "--steps", "1", "--batch-size", "2"]) == 0
    _, meta = load_generator(tmp_path / "g" / "generator.safetensors")
    assert meta["teacher_method"] == method and meta["teacher_options"] == (options or {})
    explainer = fastinterp.compile(cnns[0][1], tmp_path / "g" / "generator.safetensors")
    assert explainer.teacher_method == method and f"imitates {method}" in repr(explainer)


def test_the_default_teacher_leaves_the_config_as_before(reference):
    config = ExplanationDataset(reference).config
    assert "teacher_method" not in config and "teacher_options" not in config  # older datasets stay resumable


def test_teacher_method_errors(cnns, tmp_path):
    with pytest.raises(ValueError, match="teacher_method"):
        build_dataset(cnns, "digits", out_dir=tmp_path, teacher_method="eigencam", **OPTIONS)
    with pytest.raises(ValueError, match="teacher_options"):
        build_dataset(cnns, "digits", out_dir=tmp_path, teacher_options={"n_masks": 3}, **OPTIONS)
    for method, options in (("rise", {"n_mask": 3}), ("gradcam++", {"batch_size": 3})):  # typos, options of none
        with pytest.raises(ValueError, match="teacher_options"):
            build_dataset(cnns, "digits", out_dir=tmp_path / "typo", teacher_method=method, teacher_options=options,
                          **OPTIONS)
        assert not (tmp_path / "typo" / "manifest.json").exists()  # refused before anything was written
