"""Toy data with independent ground-truth features (the sanity checks of random dictionaries, docs/choices.md
"Random dictionaries"): `F` features drawn uniformly on the unit sphere in `n` dimensions, each sample the sum
of the features that are on in it, each on independently with its own probability, at a log-normal magnitude;
no noise.

The probabilities have mean m / F (m: the mean number of active features per sample): all equal (`spread` 1), or
log-uniform between two bounds `spread` apart (their ratio), scaled so that the mean stays m / F.
"""

import math

import torch

from randsae.data.sharkey import SharkeyData
from randsae.errors import BadInput
from randsae.seeding import generator

CHUNK_ROWS = 2048


def probabilities(num_features: int, avg_active: float, spread: float, seed: int) -> torch.Tensor:
    """Each feature's probability of being on: m / F for all (spread 1), or log-uniform over [a, a·spread]
    with a chosen so the mean is m / F."""
    mean = avg_active / num_features
    if spread == 1:
        return torch.full((num_features,), mean)
    u = torch.rand(num_features, generator=generator(seed, "independent-probabilities"), dtype=torch.float64)
    p = torch.exp(u * math.log(spread))  # log-uniform over [1, spread]
    p = p * (mean / p.mean())
    if p.max() > 1:
        raise BadInput(f"a log-uniform spread of {spread:g} around a mean of {mean:.3g} puts a probability "
                       "above 1; choose a smaller spread or fewer active features.")
    return p.float()


def generate(num_samples: int, num_inputs: int, num_features: int, avg_active: float, spread: float = 1.0,
             magnitude_sigma: float = 0.5, seed: int = 0) -> SharkeyData:
    """`num_samples` samples (N × n) with their features (n × F, unit columns) and coefficients (N × F)."""
    if not 0 < avg_active <= num_features:
        raise BadInput(f"the mean number of active features must lie in (0, {num_features}], not {avg_active}.")
    if not spread >= 1 or not math.isfinite(spread):
        raise BadInput(f"the probability spread must be at least 1 (1: every feature equally likely), not "
                       f"{spread}.")
    gen = generator(seed, "independent-features")
    features = torch.nn.functional.normalize(torch.randn(num_inputs, num_features, generator=gen), dim=0)
    p = probabilities(num_features, avg_active, spread, seed)
    coefficients = torch.empty(num_samples, num_features)
    for start in range(0, num_samples, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, num_samples - start)
        on = torch.rand(rows, num_features, generator=gen) < p
        magnitude = torch.exp(torch.randn(rows, num_features, generator=gen) * magnitude_sigma)
        coefficients[start:start + rows] = magnitude * on
    return SharkeyData(coefficients @ features.T, features, coefficients)
