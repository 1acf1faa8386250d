"""The Sharkey et al. (2022) toy data with known features: seed Figure 21, vectorised.

Figure 21 draws one sample at a time from N(0, Σ) with Σ = A Aᵀ. Drawing g = A z with z ~ N(0, I) gives
exactly that distribution for all samples in one matrix product, without a Cholesky factorisation.
"""

from dataclasses import dataclass
from typing import Literal

import torch

from randsae import cpu
from randsae.errors import BadInput
from randsae.seeding import generator

Decay = Literal["power", "product"]


@dataclass(frozen=True)
class SharkeyData:
    samples: torch.Tensor  # N × n_d
    features: torch.Tensor  # n_d × n_s, unit-norm columns
    coefficients: torch.Tensor  # N × n_s, non-zero where a feature is active


CHUNK_ROWS = 2048  # rows drawn at a time: small enough that the elementwise chain stays in cache


def activation_probabilities(
    g: torch.Tensor, avg_active_features: float, lambda_decay: float, decay: Decay
) -> torch.Tensor:
    """Per-sample, per-feature firing probabilities from correlated normals `g` (N × n_s), in place."""
    num_features = g.shape[1]
    p = torch.special.ndtr(g, out=g)
    index = torch.arange(num_features, dtype=g.dtype, device=g.device)
    if decay == "power":
        p.pow_(lambda_decay * index)
    elif decay == "product":
        p.mul_(lambda_decay**index)
    else:
        raise BadInput(f"decay must be 'power' or 'product', not {decay!r}.")
    p.mul_(avg_active_features / (num_features * p.mean(dim=1, keepdim=True)))
    return p.clamp_(0, 1)


def bytes_needed(num_samples: int, num_inputs: int, num_features: int) -> int:
    """Peak memory of a toy draw and what the sweep makes from it: the samples, their control and their MLP
    output (N × n_d each), the coefficients (N × n_s), features and covariance root, a chunk's temporaries."""
    return 4 * (3 * num_samples * num_inputs + num_samples * num_features + num_inputs * num_features
                + num_features**2 + 3 * CHUNK_ROWS * num_features)


@torch.no_grad()
def generate(
    num_samples: int,
    num_inputs: int = 256,
    num_features: int = 512,
    avg_active_features: float = 5,
    lambda_decay: float = 0.99,
    seed: int = 0,
    decay: Decay = "power",
    device: str | torch.device = "cpu",
) -> SharkeyData:
    """Draw `num_samples` toy vectors in R^num_inputs built from `num_features` sparse features.

    One uniform u per entry decides both whether a feature fires (u < p) and its magnitude (u / p, which
    given u < p is uniform on [0, 1)), exactly Figure 21's Bernoulli(p) · U[0, 1) with half the draws.
    """
    for name, value in (("num_samples", num_samples), ("num_inputs", num_inputs),
                        ("num_features", num_features)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise BadInput(f"{name} must be a positive integer, not {value!r}.")
    if not avg_active_features > 0:
        raise BadInput(f"avg_active_features must be positive, not {avg_active_features!r}.")
    if not 0 < lambda_decay <= 1:
        raise BadInput(f"lambda_decay must be in (0, 1], not {lambda_decay!r}.")

    gen = generator(seed, device=device)
    features = torch.randn(num_inputs, num_features, generator=gen, device=device)
    features /= features.norm(dim=0, keepdim=True)
    covariance_root = torch.randn(num_features, num_features, generator=gen, device=device)

    samples = torch.empty(num_samples, num_inputs, device=device)
    coefficients = torch.empty(num_samples, num_features, device=device)
    with cpu.flush_denormals():
        for start in range(0, num_samples, CHUNK_ROWS):
            rows = slice(start, min(start + CHUNK_ROWS, num_samples))
            z = torch.randn(rows.stop - start, num_features, generator=gen, device=device)
            p = activation_probabilities(z @ covariance_root.T, avg_active_features, lambda_decay,
                                         decay)
            u = torch.rand(p.shape, generator=gen, device=device)
            coef = coefficients[rows]
            torch.div(u, p, out=coef).masked_fill_(u >= p, 0.0)
            torch.matmul(coef, features.T, out=samples[rows])
    return SharkeyData(samples=samples, features=features, coefficients=coefficients)


@torch.no_grad()
def generate_reference(
    num_samples: int,
    num_inputs: int = 256,
    num_features: int = 512,
    avg_active_features: float = 5,
    lambda_decay: float = 0.99,
    seed: int = 0,
) -> SharkeyData:
    """Figure 21 as printed, one sample per loop iteration: the yardstick for tests and benchmarks.

    Draws its features and covariance root in the same order as `generate`, so the two share Σ and the
    features for a seed and differ only in how the samples are drawn. Leaves the global RNG as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = torch.randn(num_inputs, num_features)
        features /= torch.norm(features, dim=0, keepdim=True)
        covariance = torch.randn(num_features, num_features)
        covariance = covariance @ covariance.T
        correlated_normal = torch.distributions.MultivariateNormal(
            torch.zeros(num_features), covariance_matrix=covariance)
        standard_normal = torch.distributions.Normal(0, 1)
        samples, coefficients = [], []
        for _ in range(num_samples):
            p = standard_normal.cdf(correlated_normal.sample())
            p = p ** (lambda_decay * torch.arange(num_features))
            p = p * (avg_active_features / (num_features * p.mean()))
            p = torch.bernoulli(p.clamp(0, 1))
            coef = p * torch.rand(num_features)
            samples.append(coef @ features.T)
            coefficients.append(coef)
    return SharkeyData(torch.stack(samples), features, torch.stack(coefficients))
