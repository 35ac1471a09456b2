"""The contract of an exported ``.onnx`` file, shared by the writer (``export.onnx``) and the reader
(``runtime.onnx_backend``, which runs without torch: this module imports nothing).

    inputs   images (B, C, H, W) float32, targets (B,) int64 (-1: the predicted class)
    outputs  logits (B, classes), chosen_targets (B,), maps (B, H, W) float32 in [0, 1],
             cgm (B, K, S, S)
    metadata_props  the ``METADATA_KEYS``, all strings (JSON where structured)

Version 2 (fastinterp 0.1.0, this layout): the weight digests ``fastinterp.cnn_sha256`` and
``fastinterp.generator_sha256`` are the package's one weight hash
(``fastinterp._core.hashing.weights_sha256``), the digest a zoo checkpoint and a dataset manifest
record. Version 1 files hashed ``"name:dtype:shape"``; their inputs, outputs and other metadata
are the same, so version 1 files are still read (``READABLE_VERSIONS``).
"""

__all__ = ["EXPLAINER_INPUTS", "EXPLAINER_OUTPUTS", "FORMAT_VERSION", "METADATA_KEYS", "READABLE_VERSIONS"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
EXPLAINER_INPUTS = ("images", "targets")
EXPLAINER_OUTPUTS = ("logits", "chosen_targets", "maps", "cgm")
METADATA_KEYS = ("fastinterp.format", "fastinterp.format_version", "fastinterp.version",
                 "fastinterp.representation", "fastinterp.input_size", "fastinterp.num_classes",
                 "fastinterp.class_names", "fastinterp.value_range", "fastinterp.cnn", "fastinterp.cnn_sha256",
                 "fastinterp.generator", "fastinterp.generator_sha256", "fastinterp.teacher", "fastinterp.dynamic_batch")
