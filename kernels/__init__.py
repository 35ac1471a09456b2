"""Triton kernels of fastinterp, installed as ``fastinterp.kernels``.

One file per op; each kernel has a plain PyTorch reference in ``fastinterp.ops`` and a test.

This folder sits at the top of the repository but is a subpackage: the wheel (and the editable
install) map it to ``fastinterp/kernels``. Imported as a top-level ``kernels`` (Python started in
a checkout's root puts that root on ``sys.path``) it refuses, so it never stands in for another
package of that name.
"""

if __name__ != "fastinterp.kernels":
    raise ModuleNotFoundError(
        f"No module named {__name__!r}: this checkout's kernels/ folder is importable only as "
        "fastinterp.kernels (Python was started from the fastinterp repository root)",
        name=__name__,
    )
