"""Every metric, as a plain function of tensors (PAPER.md §1.4).

Inputs `x` and reconstructions `x_hat` are N × d; latents `z` are N × n. Per-sample quantities are
averaged over samples.
"""

import math

import torch


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over all entries."""
    return (x_hat - x).square().mean().item()


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: MSE over the variance of all entries of `x` (the authors' choice)."""
    return mse(x, x_hat) / x.var().item()


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 1.0 - fvu(x, x_hat)


def l0(z: torch.Tensor) -> float:
    """Mean number of non-zero latents per sample."""
    return (z != 0).sum(dim=1).float().mean().item()


def _l1(z: torch.Tensor) -> torch.Tensor:
    return z.abs().sum(dim=1)


def _l2(z: torch.Tensor) -> torch.Tensor:
    return z.norm(dim=1)


def l1(z: torch.Tensor) -> float:
    return _l1(z).mean().item()


def l2(z: torch.Tensor) -> float:
    return _l2(z).mean().item()


def l1_over_sqrt_l2(z: torch.Tensor) -> float:
    """Mean of L1 / √L2 per sample; an all-zero latent vector counts as 0."""
    l2_norm = _l2(z)
    ratio = _l1(z) / l2_norm.sqrt().clamp_min(torch.finfo(z.dtype).tiny)
    return ratio.mean().item()


def hoyer(z: torch.Tensor) -> float:
    """Mean Hoyer sparseness (√n − L1/L2)/(√n − 1): 0 for a flat vector, 1 for one non-zero.

    An all-zero latent vector counts as 1 (as sparse as it gets, like its L0 of 0).
    """
    n = z.shape[1]
    if n < 2:
        raise ValueError("Hoyer sparseness needs at least two latents.")
    l1_norm, l2_norm = _l1(z), _l2(z)
    ratio = torch.where(l2_norm > 0, l1_norm / l2_norm.clamp_min(torch.finfo(z.dtype).tiny), 1.0)
    return ((math.sqrt(n) - ratio) / (math.sqrt(n) - 1)).mean().item()


def dead_fraction(z: torch.Tensor) -> float:
    """Fraction of latents that are zero on every sample."""
    return (~(z != 0).any(dim=0)).float().mean().item()


def mmcs(features: torch.Tensor, directions: torch.Tensor) -> float:
    """Mean max cosine similarity: each ground-truth feature's best match among the SAE's directions.

    `features` is d × n_s (a feature per column, as the generator returns them); `directions` is
    n × d (a latent's decoder direction per row).
    """
    if features.shape[0] != directions.shape[1]:
        raise ValueError(
            f"features ({tuple(features.shape)}) and decoder directions ({tuple(directions.shape)}) "
            "live in different dimensions.")
    f = torch.nn.functional.normalize(features, dim=0)
    d = torch.nn.functional.normalize(directions, dim=1)
    return (d @ f).max(dim=0).values.mean().item()


SPARSITY_METRICS = {"l0": l0, "l1": l1, "l2": l2, "l1_over_sqrt_l2": l1_over_sqrt_l2,
                    "hoyer": hoyer, "dead_fraction": dead_fraction}
RECONSTRUCTION_METRICS = {"mse": mse, "fvu": fvu, "explained_variance": explained_variance}
METRIC_NAMES = [*RECONSTRUCTION_METRICS, *SPARSITY_METRICS, "mmcs"]


def sae_metrics(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor,
                features: torch.Tensor | None = None,
                directions: torch.Tensor | None = None) -> dict[str, float | None]:
    """All metrics of one SAE on one split; mmcs is None where there are no ground-truth features."""
    out: dict[str, float | None] = {name: f(x, x_hat) for name, f in RECONSTRUCTION_METRICS.items()}
    out.update({name: f(z) for name, f in SPARSITY_METRICS.items()})
    out["mmcs"] = None if features is None or directions is None else mmcs(features, directions)
    return out
