"""CPU settings that make the same arithmetic run faster; neither changes a reported number."""

import ctypes
import functools
import logging
import sys
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@contextmanager
def flush_denormals():
    """Flush denormal floats (|x| < 1.2e-38) to zero inside the block; PyTorch's default (off) after.

    Denormals are slow on x86 CPUs, and the normal CDF of very negative inputs is full of them.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MB for reuse instead of returning them to the OS.

    A training step allocates and frees tensors of tens of MB; by default glibc unmaps them and the next
    step page-faults them back, which costs as much as the arithmetic for small inputs (GloVe's 50
    dimensions: 34 → 18 ms a step). The process then holds up to 1 GB of freed memory. Does nothing
    where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(M_MMAP_THRESHOLD, 1 << 25))
    except (OSError, AttributeError):
        log.debug("not glibc: leaving the allocator as it is")
        return False


@functools.cache
def native_bfloat16(device: str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or an x86 CPU with AVX512-BF16
    or AMX. Elsewhere PyTorch emulates it, slower than float32 (measured here, the embedded judge on a CPU
    without either: 119 s for a unit's scoring in bfloat16, 88 s in float32)."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
