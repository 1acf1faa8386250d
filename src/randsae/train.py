"""Training loops. A stack of SAEs shares every minibatch, sliced from one in-memory tensor."""

import logging
from collections.abc import Sequence
from typing import Literal

import torch

from randsae.sae.relu import ReluSAE
from randsae.seeding import generator

log = logging.getLogger(__name__)

L1Reduction = Literal["mean", "sum"]


def relu_sae_losses(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor,
                    l1_reduction: L1Reduction = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-SAE MSE and L1 penalty (each of shape S) for a stack's outputs on one batch.

    "mean": mean of |z| over all entries of the batch × latents matrix (the authors' code, default);
    "sum": the per-sample L1 norm, averaged over the batch.
    """
    mse = (x_hat - x).square().mean(dim=(1, 2))
    if l1_reduction == "mean":
        l1 = z.abs().mean(dim=(1, 2))
    elif l1_reduction == "sum":
        l1 = z.abs().sum(dim=2).mean(dim=1)
    else:
        raise ValueError(f"l1_reduction must be 'mean' or 'sum', not {l1_reduction!r}.")
    return mse, l1


def train_relu_saes(
    sae: ReluSAE,
    data: torch.Tensor,
    l1_coefs: Sequence[float],
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    l1_reduction: L1Reduction = "mean",
    progress=None,
) -> torch.Tensor:
    """Train SAE i of the stack with sparsity coefficient `l1_coefs[i]` on the rows of `data`.

    Adam's update is elementwise, so one Adam over the stacked parameters is exactly one Adam per SAE.
    Returns each SAE's loss averaged over the last epoch. `progress` (a tqdm bar) advances by one per
    SAE-epoch.
    """
    if len(l1_coefs) != sae.num_saes:
        raise ValueError(f"got {len(l1_coefs)} L1 coefficients for a stack of {sae.num_saes} SAEs.")
    if data.ndim != 2 or data.shape[1] != sae.num_inputs:
        raise ValueError(f"data must have shape (N, {sae.num_inputs}), not {tuple(data.shape)}.")
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or infinite values.")
    device = sae.W_enc.device
    data = data.to(device)
    coefs = torch.tensor(list(l1_coefs), dtype=data.dtype, device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    order_gen = generator(seed, "minibatch-order", device=device)
    epoch_loss = torch.zeros(sae.num_saes, device=device)
    for _ in range(epochs):
        epoch_loss.zero_()
        order = torch.randperm(len(data), generator=order_gen, device=device)
        for start in range(0, len(data), batch_size):
            x = data[order[start:start + batch_size]]
            sae.normalize_decoder()
            x_hat, z = sae(x)
            mse, l1 = relu_sae_losses(x, x_hat, z, l1_reduction)
            loss = mse + coefs * l1
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            epoch_loss += loss.detach() * len(x)
        epoch_loss /= len(data)
        if progress is not None:
            progress.update(sae.num_saes)
    sae.normalize_decoder()
    return epoch_loss.cpu()
