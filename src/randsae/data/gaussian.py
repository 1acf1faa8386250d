"""The matched Gaussian control: i.i.d. N(μ, σ²) with the scalar mean and std of the data it controls."""

import torch

from randsae.errors import BadInput
from randsae.seeding import generator


def matched(data: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Gaussian samples of `data`'s shape whose mean and std equal `data`'s over all entries."""
    if data.ndim != 2 or data.numel() < 2:
        raise BadInput(f"data must be a 2-D matrix with at least two entries, not shape {tuple(data.shape)}.")
    mean, std = data.mean(), data.std()
    gen = generator(seed, "gaussian", device=data.device)
    noise = torch.randn(data.shape, generator=gen, device=data.device, dtype=data.dtype)
    return noise * std + mean
