"""The subcommands of ``fastinterp``: name -> (module of this package with its ``main(argv)``, the one
line of ``fastinterp --help`` and of its own --help)."""

__all__ = ["COMMANDS"]

COMMANDS = {
    "demo": ("fastinterp.cli.demo",
             "explain freshly generated digits with the shipped CNN and generator; write a PNG grid"),
    "zoo": ("fastinterp.cli.zoo",
            "train CNN classifiers of several architectures on a synthetic dataset"),
    "fit": ("fastinterp.cli.fit",
            "make a generator for your own CNN from a folder of your images (dataset, training, held-out report)"),
    "explain": ("fastinterp.cli.explain",
                "explain image files and folders: overlay PNGs on the photos, .npy maps, predictions.json"),
    "build-dataset": ("fastinterp.cli.build_dataset",
                      "explain a dataset with CNNs into sharded (image, CGMs, teacher map) training examples"),
    "train-generator": ("fastinterp.cli.train_generator",
                        "train an explanation generator (pix2pix objective) on built examples"),
    "eval-generator": ("fastinterp.cli.eval_generator",
                       "fidelity of a trained generator to the teacher maps of built examples, per CNN"),
    "evaluate": ("fastinterp.cli.evaluate",
                 "faithfulness, localisation and cost of every baseline and generator: reports/evaluation.md"),
    "export": ("fastinterp.cli.export",
               "export a CNN + generator as one ONNX file (the whole explain pipeline) and the generator alone"),
}
