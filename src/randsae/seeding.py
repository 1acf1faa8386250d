"""One integer seeds a run; each consumer of randomness gets its own stream derived from it."""

import zlib

import torch


def derive_seed(seed: int, *purpose: str | int) -> int:
    """A stable 63-bit seed for `purpose` under the run seed (same inputs, same output, any machine)."""
    key = ":".join(str(p) for p in (seed, *purpose)).encode()
    return (zlib.crc32(key) << 31 | zlib.adler32(key)) & ((1 << 63) - 1)


def generator(seed: int, *purpose: str | int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded for `purpose` under the run seed."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *purpose) if purpose else seed)
    return g
