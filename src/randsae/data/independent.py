"""Toy data with independent ground-truth features (the sanity checks of random dictionaries, docs/choices.md
"Random dictionaries"): `F` features drawn uniformly on the unit sphere in `n` dimensions, each sample the sum
of the features that are on in it, each on independently with its own probability, at a log-normal magnitude;
no noise.

The probabilities have mean m / F (m: the mean number of active features per sample): all equal (`spread` 1), or
log-uniform between two bounds `spread` apart (their ratio), scaled so that the mean stays m / F.

Two ways to draw samples from the same features and probabilities: `generate`, a fixed set (the toy sweep's,
trained for epochs), and `Stream`, a fresh batch for every step (`randsae recovery`), each batch a function of
the seed and the step alone, so that a run resumed at step t sees the batches an unbroken run saw.
"""

import math
from dataclasses import dataclass

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


def check_shape(num_features: int, avg_active: float, spread: float) -> None:
    if not 0 < avg_active <= num_features:
        raise BadInput(f"the mean number of active features must lie in (0, {num_features}], not {avg_active}.")
    if not spread >= 1 or not math.isfinite(spread):
        raise BadInput(f"the probability spread must be at least 1 (1: every feature equally likely), not "
                       f"{spread}.")


def draw_features(num_inputs: int, num_features: int, gen: torch.Generator) -> torch.Tensor:
    """n × F unit columns, uniform on the sphere: the first draw of a seed's `gen`."""
    return torch.nn.functional.normalize(torch.randn(num_inputs, num_features, generator=gen), dim=0)


def generate(num_samples: int, num_inputs: int, num_features: int, avg_active: float, spread: float = 1.0,
             magnitude_sigma: float = 0.5, seed: int = 0) -> SharkeyData:
    """`num_samples` samples (N × n) with their features (n × F, unit columns) and coefficients (N × F)."""
    check_shape(num_features, avg_active, spread)
    gen = generator(seed, "independent-features")
    features = draw_features(num_inputs, num_features, gen)
    p = probabilities(num_features, avg_active, spread, seed)
    coefficients = torch.empty(num_samples, num_features)
    for start in range(0, num_samples, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, num_samples - start)
        on = torch.rand(rows, num_features, generator=gen) < p
        magnitude = torch.exp(torch.randn(rows, num_features, generator=gen) * magnitude_sigma)
        coefficients[start:start + rows] = magnitude * on
    return SharkeyData(coefficients @ features.T, features, coefficients)


@dataclass
class Codes:
    """A batch's active features, one entry per (sample, feature) that is on."""
    samples: torch.Tensor  # which sample (int64)
    features: torch.Tensor  # which feature (int64)
    magnitudes: torch.Tensor  # its log-normal magnitude


def bernoulli_positions(p: torch.Tensor, rows: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, feature) of every success of independent Bernoulli(p_f) trials on `rows` rows × F features, drawn
    by geometric gaps per feature: exact, and ~rows·Σp draws instead of rows·F (a 3,200-feature batch
    at 20 active per row draws 1/100 of the numbers)."""
    p = p.double()
    log_q = torch.log1p(-p.clamp(max=1.0))  # −inf where p is 1: every gap is 1
    offset = torch.full_like(p, -1.0)  # the last success's row, per feature (on p's device, as every draw)
    none = torch.zeros(0, dtype=torch.long, device=p.device)
    found_rows, found_features = [none], [none]
    todo = torch.nonzero(p > 0).squeeze(1)
    while len(todo):
        expected = rows * p[todo]
        counts = (expected + 5 * expected.sqrt() + 8).clamp(max=rows + 1).long()
        owner = torch.repeat_interleave(todo, counts)
        u = 1 - torch.rand(len(owner), generator=gen, dtype=torch.float64, device=p.device)  # (0, 1]
        gaps = (torch.log(u) / log_q[owner]).floor().clamp(max=rows + 1) + 1
        ends = torch.cumsum(gaps, 0)
        first = torch.cumsum(counts, 0) - counts  # each feature's first draw
        position = offset[owner] + ends - torch.repeat_interleave(ends[first] - gaps[first], counts)
        keep = position < rows
        found_rows.append(position[keep].long())
        found_features.append(owner[keep])
        last = first + counts - 1
        offset[todo] = position[last]
        todo = todo[position[last] < rows - 1]
    return torch.cat(found_rows), torch.cat(found_features)


class Stream:
    """Fresh samples from one seed's features and probabilities: `batch(step, size)` is a function of (seed,
    step) alone; `held_out(size)` a fixed set drawn apart from every step. The features and probabilities are
    `generate`'s for the same seed; the batches are drawn on `device` (a GPU's draws differ from the CPU's)."""

    def __init__(self, num_inputs: int, num_features: int, avg_active: float, spread: float = 1.0,
                 magnitude_sigma: float = 0.5, seed: int = 0, device: str | torch.device = "cpu"):
        check_shape(num_features, avg_active, spread)
        self.device = torch.device(device)
        features = draw_features(num_inputs, num_features, generator(seed, "independent-features"))
        self.features = features.to(self.device)
        self.p = probabilities(num_features, avg_active, spread, seed).to(self.device)
        self.directions = self.features.T.contiguous()  # F × n, a feature a row
        self.magnitude_sigma, self.seed = magnitude_sigma, seed

    def codes(self, size: int, *purpose: str | int) -> Codes:
        gen = generator(self.seed, "independent-stream", *purpose, device=self.device)
        rows, features = bernoulli_positions(self.p, size, gen)
        magnitudes = torch.exp(torch.randn(len(rows), generator=gen, device=self.device) * self.magnitude_sigma)
        return Codes(rows, features, magnitudes)

    def samples(self, codes: Codes, size: int) -> torch.Tensor:
        """size × n: each sample the sum of its active features at their magnitudes (an embedding bag)."""
        order = torch.argsort(codes.samples, stable=True)
        counts = torch.bincount(codes.samples, minlength=size)
        offsets = torch.cumsum(counts, 0) - counts
        return torch.nn.functional.embedding_bag(codes.features[order], self.directions, offsets, mode="sum",
                                                 per_sample_weights=codes.magnitudes[order])

    def batch(self, step: int, size: int) -> torch.Tensor:
        return self.samples(self.codes(size, "step", step), size)

    def held_out(self, size: int) -> torch.Tensor:
        return self.samples(self.codes(size, "held-out"), size)
