"""The random MLP that toy data and word vectors are passed through (docs/paper.md §1.2)."""

import torch
from torch import nn

from randsae.seeding import derive_seed


def random_mlp(dim: int, seed: int = 0, hidden_multiple: int = 4, hidden: int | None = None) -> nn.Sequential:
    """Linear(dim → hidden) → ReLU → Linear(hidden → dim), PyTorch default init, never trained.

    `hidden` defaults to `hidden_multiple · dim`. The global RNG is left as it was.
    """
    hidden = hidden or hidden_multiple * dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "mlp"))
        mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
    return mlp.requires_grad_(False).eval()


@torch.no_grad()
def apply(mlp: nn.Sequential, data: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """`mlp` applied to the rows of `data`, a chunk at a time into one output matrix, so a large data set
    needs its own size again for the output and nothing more."""
    mlp = mlp.to(data.device)
    last = mlp[-1]
    assert isinstance(last, nn.Linear)
    out = torch.empty(len(data), last.out_features, dtype=data.dtype, device=data.device)
    for start in range(0, len(data), chunk):
        out[start:start + chunk] = mlp(data[start:start + chunk])
    return out
