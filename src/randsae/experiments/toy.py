"""The toy model of superposition (docs/paper.md §1): Sharkey data and its Gaussian control, raw and through a
random MLP, ReLU+L1 SAEs swept over sparsity coefficients, dictionary sizes and seeds."""

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from randsae.config import resolve_device
from randsae.data import gaussian, independent, sharkey
from randsae.errors import BadInput
from randsae.experiments.sweep import Dataset, SweepConfig, check_positive_int, run_sweep, split_rows
from randsae.lm import embeddings
from randsae.resources import check_memory
from randsae.settings import setting
from randsae.tables import SweepRow
from randsae.transforms import apply, random_mlp


@dataclass
class ToyConfig(SweepConfig):
    data: list[str] = setting(default_factory=lambda: ["sharkey", "gaussian"],
                              help="comma list of: sharkey, gaussian, independent (features uniform on the "
                                   "sphere, each on independently), embeddings:MODEL")
    latents: list[int] = setting(default_factory=lambda: [512, 1024, 2048, 4096],
                                 help="comma list of dictionary sizes")
    num_samples: int = setting(10_000, help="data points per data set")
    num_inputs: int = setting(256, help="input dimension n_d")
    num_features: int = setting(512, help="ground-truth features n_s")
    avg_active_features: float = setting(5.0, flag="--avg-active", help="mean active features m")
    lambda_decay: float = setting(0.99, help="feature-frequency decay λ")
    decay: str = setting("power", help="power (p ** (λ·i), the paper's figure) or product (p·λ^i)")
    probability_spread: float = setting(1.0, help="independent data: 1 gives every feature the probability "
                                                  "m / n_s; above 1, log-uniform probabilities that far apart "
                                                  "(their ratio), mean m / n_s")
    magnitude_sigma: float = setting(0.5, help="independent data: σ of the features' log-normal magnitudes")

    DATA_SOURCES = ("sharkey", "gaussian", "independent")
    EMBEDDINGS_AS_DATA = True
    COMMAND = "toy"
    DATA_SETTINGS = ("num_samples", "num_inputs", "num_features", "avg_active_features", "lambda_decay",
                     "decay", "probability_spread", "magnitude_sigma")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_samples", "num_inputs", "num_features"):
            check_positive_int(name, getattr(self, name))
        if self.num_inputs < 2:
            raise BadInput(f"num_inputs must be at least 2, not {self.num_inputs}: features in one input "
                           "dimension are all the same direction, up to sign, and nothing is in superposition.")
        if not self.latents or any(n < 2 for n in self.latents):
            raise BadInput(f"latents must be integers of at least 2, not {self.latents!r}.")
        if self.decay not in ("power", "product"):
            raise BadInput(f"decay must be 'power' or 'product', not {self.decay!r}.")
        if not (0 < self.avg_active_features <= self.num_features and math.isfinite(self.avg_active_features)):
            raise BadInput(f"avg_active_features must lie in (0, num_features = {self.num_features}], not "
                             f"{self.avg_active_features!r}.")
        if not (self.probability_spread >= 1 and math.isfinite(self.probability_spread)):
            raise BadInput(f"probability_spread must be at least 1, not {self.probability_spread!r}.")
        if not (self.magnitude_sigma >= 0 and math.isfinite(self.magnitude_sigma)):
            raise BadInput(f"magnitude_sigma must be finite and not negative, not {self.magnitude_sigma!r}.")
        if not 0 < self.lambda_decay <= 1:
            raise BadInput(f"lambda_decay must lie in (0, 1], not {self.lambda_decay!r}.")
        if round(self.num_samples * self.val_fraction) < 2:
            raise BadInput(f"{self.num_samples} samples leave too few for a {self.val_fraction:g} split.")


PRESETS: dict[str, dict] = {
    "paper": {},
    # A few minutes on a laptop CPU, and long enough for the Goldilocks band to show (MMCS > 0.9):
    # one seed, two dictionary sizes, 11 coefficients, 40 epochs.
    "quick": {"latents": [512, 1024], "l1": np.logspace(-3, 2, 11).tolist(), "seeds": 1,
              "epochs": 40},
}


def toy_datasets(config: ToyConfig):
    """`make_dataset(seed, data, transform)` for the sweep: the toy draw of a seed is made once and serves
    its Gaussian control (matched to it) and both transforms; `embeddings:MODEL` is a model's
    token-embedding matrix, loaded once."""

    @lru_cache(maxsize=1)
    def draw(seed: int) -> sharkey.SharkeyData:
        return sharkey.generate(config.num_samples, config.num_inputs, config.num_features,
                                config.avg_active_features, config.lambda_decay, seed=seed,
                                decay=config.decay)  # pyright: ignore[reportArgumentType] (checked on construction)

    @lru_cache(maxsize=1)
    def independent_draw(seed: int) -> sharkey.SharkeyData:
        return independent.generate(config.num_samples, config.num_inputs, config.num_features,
                                    config.avg_active_features, config.probability_spread, config.magnitude_sigma,
                                    seed=seed)

    def make_dataset(seed: int, data: str, transform: str) -> Dataset:
        if embeddings.is_embeddings(data):
            x, toy = embedding_matrix(data), None
        elif data == "independent":
            toy = independent_draw(seed)
            x = toy.samples
        else:
            toy = draw(seed)
            x = toy.samples if data == "sharkey" else gaussian.matched(toy.samples, seed=seed)
        if transform == "mlp":
            x = apply(random_mlp(x.shape[1], seed=seed), x)
        train_rows, val_rows = split_rows(len(x), config.val_fraction, seed)
        # ground-truth features live in the inputs only (docs/paper.md §1.2)
        truth = data in ("sharkey", "independent") and transform == "none"
        features = toy.features if toy is not None and truth else None
        return Dataset(x, train_rows, val_rows, features)

    return make_dataset


@lru_cache(maxsize=2)
def embedding_matrix(spec: str) -> torch.Tensor:
    return torch.from_numpy(embeddings.load(spec).vectors)


def run_toy(config: ToyConfig, out: str | Path, progress: bool = True) -> list[SweepRow]:
    """The toy grid into OUT (resumable); returns the whole results table."""
    if any(not embeddings.is_embeddings(data) for data in config.data):
        check_memory(sharkey.bytes_needed(config.num_samples, config.num_inputs, config.num_features),
                     f"the toy data ({config.num_samples:,} samples, {config.num_inputs:,} inputs, "
                     f"{config.num_features:,} features)", resolve_device(config.device))
    input_dims = {data: embedding_matrix(data).shape[1] if embeddings.is_embeddings(data) else config.num_inputs
                  for data in config.data}
    return run_sweep(config, out, input_dims, config.latents, toy_datasets(config), progress)
