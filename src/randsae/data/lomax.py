"""The 2-D demonstration (paper Fig. 3): sparse heavy-tailed features, projected to 2-D, through a random MLP."""

from dataclasses import dataclass

import torch
from torch import nn

from randsae.errors import BadInput
from randsae.seeding import derive_seed, generator
from randsae.transforms import apply, random_mlp


@dataclass(frozen=True)
class LomaxDemo:
    inputs: torch.Tensor  # N × 2, sparse features projected by a random linear map
    outputs: torch.Tensor  # N × 2, the inputs after a random MLP 2 → 8 → 2
    directions: torch.Tensor  # 2 × num_features, where each feature points in the input plane


def generate(
    num_samples: int = 10_000, num_features: int = 3, active_probability: float | None = None,
    seed: int = 0,
) -> LomaxDemo:
    """Lomax(scale 1, shape 1) magnitudes with random signs on sparse features.

    By default each sample has exactly one active feature (the clearest picture of superposition);
    `active_probability` makes each feature active independently with that probability instead.
    """
    if active_probability is not None and not 0 < active_probability <= 1:
        raise BadInput(f"active_probability must be in (0, 1], not {active_probability!r}.")
    gen = generator(seed, "lomax")
    uniform = torch.rand(num_samples, num_features, generator=gen)
    magnitude = 1 / (1 - uniform) - 1  # inverse CDF of Lomax(scale 1, shape 1)
    sign = torch.randint(0, 2, (num_samples, num_features), generator=gen) * 2 - 1
    if active_probability is None:
        which = torch.randint(0, num_features, (num_samples,), generator=gen)
        active = nn.functional.one_hot(which, num_features).bool()
    else:
        active = torch.rand(num_samples, num_features, generator=gen) < active_probability
    coefficients = magnitude * sign * active
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "lomax-projection"))
        projection = nn.Linear(num_features, 2, bias=False).requires_grad_(False)
    inputs = projection(coefficients)
    outputs = apply(random_mlp(2, seed=seed, hidden=8), inputs)
    return LomaxDemo(inputs=inputs, outputs=outputs, directions=projection.weight.detach().clone())


def bytes_needed(num_samples: int, num_features: int = 3) -> int:
    """Peak memory of `generate`: a few N × num_features float tensors and the MLP's N × 8 hidden layer."""
    return num_samples * (6 * num_features + 8 + 8) * 4
