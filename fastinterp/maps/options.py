"""A representation's options, in one place: the presets, the fields, and the one validator every
entry point uses (``cnn_representation``, ``build_dataset``, ``fastinterp.compile``).

    kind      "gradient" (a CAM of every conv layer: forward + backward) or "activation"
              (forward only: every conv's mean |A| and the head's CAM; ``maps.forward_only``)
    k         how many cumulative maps (CGMs), at positions by ``paper_positions``
    size      their resolution S (int), or (H, W)
    method    the per-layer CAM formula (``maps.formulas.METHODS``), also the teacher's
    order     "first_to_last" or "last_to_first" (the paper's) accumulation order; None: the kind's
    teacher   "pooled" (the feature map the head's global pooling reads), "last", "first" or a
              module name: whose map a generator learns
    skip_1x1  leave out layers whose output is 1x1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastinterp._core.validation import check_size
from fastinterp.maps.formulas import METHODS

__all__ = ["ACTIVATION_REPRESENTATION", "DEFAULT_REPRESENTATION", "FIELDS", "KINDS", "ORDERS", "PAPER_PRESET",
           "PRESETS", "check_method", "check_representation", "default_order", "representation_options"]

KINDS = ("gradient", "activation")
ORDERS = ("last_to_first", "first_to_last")
FIELDS = ("kind", "k", "size", "method", "order", "teacher", "skip_1x1")

# The default: what the shipped generator was trained on. Accumulating from the first conv
# towards the last keeps the teacher (the last conv's map) out of the inputs: it is 1/L of the
# last CGM, never a CGM of its own. Every conv layer counts, the 1x1 squeeze-excitation ones too:
# leaving them out made the fast generator less faithful on mobilenet_v3_small (MAE +0.005 and
# +0.010 on two seeds, paired; experiments/skip_1x1.py, experiments/NOTES.md).
# The teacher is the feature map the classifier head pools ("pooled"): on a single-path CNN the last
# block's output, on a multi-branch one (inception_v3) the final block's, not one branch's last conv
# ("last", what the shipped generators were trained on and still record).
DEFAULT_REPRESENTATION = {"kind": "gradient", "k": 8, "size": 64, "method": "gradcam", "order": "first_to_last",
                          "teacher": "pooled", "skip_1x1": False}
# The released code of arXiv 2301.08067 (see the README's table): its "guided" weights, last to
# first, teacher = Grad-CAM of the first conv, every conv layer.
PAPER_PRESET = {"kind": "gradient", "k": 8, "size": 64, "method": "paper-gradcam", "order": "last_to_first",
                "teacher": "first", "skip_1x1": False}
# The forward-only representation (``fastinterp.maps.forward_only``): no backward at explain time.
# Its teacher stays the last conv's Grad-CAM: Grad-CAM at the pooled feature map is this
# representation's own CGM 0 (the head's CAM), an input a generator would only copy.
ACTIVATION_REPRESENTATION = {"kind": "activation", "k": 8, "size": 64, "method": "gradcam", "order": "last_to_first",
                             "teacher": "last", "skip_1x1": False}
PRESETS = {"default": DEFAULT_REPRESENTATION, "paper": PAPER_PRESET, "activation": ACTIVATION_REPRESENTATION}
# Fields added to the representation after checkpoints had been written without them, and the
# value those checkpoints were made with.
_BEFORE_FIELD = {"skip_1x1": False, "kind": "gradient"}


def default_order(kind: str) -> str:
    """The accumulation order a representation kind uses unless told: "first_to_last" for the
    gradient kind (the teacher stays out of the inputs), "last_to_first" for the activation kind
    (its only class-specific map, the head's CAM, comes last in execution: CGM 0)."""
    return "last_to_first" if kind == "activation" else "first_to_last"


def check_method(method: object, where: str = "") -> str:
    """``method`` must name a CAM formula of ``METHODS``."""
    if method not in METHODS:
        raise ValueError(f"{where}method: expected one of {sorted(METHODS)}, got {method!r}")
    return method  # type: ignore[return-value]


def check_representation(options: Mapping[str, Any], *, argument: str | None = None,
                         teacher_optional: bool = False) -> dict[str, Any]:
    """Every field of ``FIELDS`` in ``options`` checked; returns them as a new dict, ``order`` None
    replaced by the kind's default. Other keys of ``options`` are ignored.

    Errors name the field (after ``argument``, e.g. "representation: order: expected one of ...").
    ``teacher_optional``: teacher None (no teacher map) is allowed.
    """
    where = f"{argument}: " if argument else ""
    missing = [field for field in FIELDS if field not in options]
    if missing:
        raise ValueError(f"{where}missing field(s) {missing}; expected all of {list(FIELDS)}")
    kind, order, teacher = options["kind"], options["order"], options["teacher"]
    if kind not in KINDS:
        raise ValueError(f"{where}kind: expected one of {KINDS}, got {kind!r}")
    order = default_order(kind) if order is None else order
    if order not in ORDERS:
        raise ValueError(f"{where}order: expected one of {ORDERS}, got {order!r}")
    check_method(options["method"], where)
    if not (teacher is None and teacher_optional) and (not isinstance(teacher, str) or not teacher):
        raise TypeError(f"{where}teacher: expected 'pooled', 'last', 'first' or a module name, got {teacher!r}")
    if not isinstance(options["skip_1x1"], bool):
        raise TypeError(f"{where}skip_1x1: expected True or False, got {options['skip_1x1']!r}")
    k = options["k"]
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{where}k: expected an int (cumulative maps), got {k!r}")
    if k < 1:
        raise ValueError(f"{where}k: expected an int >= 1 (cumulative maps), got {k}")
    check_size(options["size"], f"{where}size")
    return {**{field: options[field] for field in FIELDS}, "order": order}


def representation_options(metadata: dict) -> dict:
    """The ``cnn_representation`` arguments a generator was trained with, from its checkpoint
    metadata (``load_generator``'s second value); fields a checkpoint predates get the value it was
    made with."""
    rep = metadata.get("representation") or metadata.get("dataset_config")
    if not isinstance(rep, dict):
        raise ValueError("metadata: the generator checkpoint records no representation")
    missing = [key for key in ("k", "size", "method", "order", "teacher") if key not in rep]
    if missing:
        raise ValueError(f"metadata: the generator's representation lacks {missing}")
    options = {key: rep[key] for key in ("k", "size", "method", "order", "teacher")}
    for key, before in _BEFORE_FIELD.items():
        options[key] = rep.get(key, before)
    return options
