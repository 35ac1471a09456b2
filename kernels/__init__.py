"""Triton kernels of fastinterp, installed as ``fastinterp.kernels``.

One file per op; each kernel has a plain PyTorch reference in ``fastinterp.ops`` and a test.
"""
