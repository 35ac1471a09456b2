"""What an exported explainer says about itself: the ``fastinterp.*`` entries (``format.METADATA_KEYS``,
all strings, JSON where structured) that an ``.onnx`` file keeps in its ``metadata_props`` and a
``.pt2`` package in its AOTInductor metadata. ``load_onnx`` and ``load_pt2`` read them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastinterp._core.hashing import weights_sha256
from fastinterp._version import __version__
from fastinterp.export.format import FORMAT_VERSION
from fastinterp.export.graph import BuiltGraph

__all__ = ["explainer_metadata"]


def explainer_metadata(built: BuiltGraph, *, image_resize: str, teacher: str | None, dynamic_batch: bool,
                       dynamic_size: bool, class_names: Sequence[str] | None, value_range: str | None,
                       cnn_name: str) -> dict[str, str]:
    """The metadata of an explainer file made from ``built`` (see the module doc)."""
    o = built.representation
    generator = built.module.generator
    metadata = {
        "fastinterp.format": "explainer", "fastinterp.format_version": str(FORMAT_VERSION),
        "fastinterp.version": __version__,
        "fastinterp.representation": json.dumps({**o, "image_resize": image_resize}, sort_keys=True),
        "fastinterp.input_size": json.dumps([built.channels, None, None] if dynamic_size
                                            else [built.channels, *built.input_size]),
        "fastinterp.dynamic_batch": json.dumps(dynamic_batch),
        "fastinterp.num_classes": str(built.num_classes),
        "fastinterp.value_range": value_range or "the CNN's own preprocessing (as its eager forward takes it)",
        "fastinterp.cnn": cnn_name,
        "fastinterp.cnn_sha256": built.cnn_sha256,
        "fastinterp.generator": json.dumps(generator.config, sort_keys=True),
        "fastinterp.generator_sha256": weights_sha256(generator),
        "fastinterp.teacher": str(o["teacher"] if teacher is None else teacher),
    }
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError(f"class_names: expected a list of str, got {class_names!r}")
        if len(class_names) != built.num_classes:
            raise ValueError(f"class_names: {len(class_names)} names for a CNN with {built.num_classes} outputs")
        metadata["fastinterp.class_names"] = json.dumps(list(class_names))
    return metadata
