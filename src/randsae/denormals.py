"""Flushing denormal floats to zero on the CPU.

Denormals (|x| < 1.2e-38 in float32) are slow on x86 CPUs; the normal CDF of very negative inputs is full
of them. Treating them as zero changes no result this package reports.
"""

from contextlib import contextmanager

import torch


@contextmanager
def flushed():
    """Flush denormals inside the block; PyTorch's default (off) is restored afterwards."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
