"""How much memory a run may use, checked before it allocates: a size that cannot fit is refused in one
sentence instead of failing deep inside PyTorch (or being killed by the OS)."""

import os

import torch

from randsae.errors import BadInput

FLOAT_BYTES = 4


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can still be allocated: free GPU memory for a CUDA device, else the OS's MemAvailable
    (physical memory where /proc is absent). None when nothing says."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(count) < 1024 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1024
    raise AssertionError  # pragma: no cover


def check_memory(nbytes: float, what: str, device: torch.device | str | None = None) -> None:
    """Refuse `what` (a phrase, e.g. "the toy data set") if it needs more than the memory available."""
    available = available_memory(device)
    if available is not None and nbytes > available:
        raise BadInput(f"{what} needs about {format_bytes(nbytes)}, more than the {format_bytes(available)} "
                         "of memory available; choose smaller sizes.")
