"""Word vectors through the superposition pipeline (docs/paper.md §1.3): GloVe and its matched Gaussian
control, raw and through a random MLP, with dictionaries 2×, 4×, 8× and 16× the vector dimension."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from randsae.data import gaussian
from randsae.data import glove as glove_data
from randsae.errors import BadInput
from randsae.experiments.sweep import Dataset, SweepConfig, run_sweep, split_rows
from randsae.lm import embeddings
from randsae.settings import setting
from randsae.tables import SweepRow
from randsae.transforms import apply, random_mlp


@dataclass
class GloveConfig(SweepConfig):
    data: list[str] = setting(default_factory=lambda: ["glove", "gaussian"], help="comma list of: glove, gaussian")
    seeds: int = setting(1, help="number of seeds (0 … N-1)")
    vectors: str | None = setting(None, shown="the embedded GloVe 6B 50d vectors",
                                  help="a GloVe text file, or embeddings:MODEL")
    latent_multiples: list[int] = setting(default_factory=lambda: [2, 4, 8, 16],
                                          help="dictionary sizes as multiples of the dimension")

    DATA_SOURCES = ("glove", "gaussian")
    COMMAND = "glove"
    DATA_SETTINGS = ("vectors",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.latent_multiples or any(m < 1 for m in self.latent_multiples):
            raise BadInput(f"latent multiples must be positive integers, not {self.latent_multiples!r}.")


PRESETS: dict[str, dict] = {
    "paper": {},
    # Minutes on a laptop CPU: all 400,000 vectors, but 3 epochs, two dictionary sizes, 11 coefficients.
    "quick": {"latent_multiples": [4, 16], "l1": np.logspace(-3, 2, 11).tolist(), "epochs": 3},
}


def glove_datasets(config: GloveConfig, vectors: torch.Tensor):
    """`make_dataset(seed, data, transform)` for the sweep. The vectors are shared, never copied: each
    data set holds them (or its control, or an MLP's output) once, and minibatches index into it."""

    def make_dataset(seed: int, data: str, transform: str) -> Dataset:
        x = vectors if data == "glove" else gaussian.matched(vectors, seed=seed)
        if transform == "mlp":
            x = apply(random_mlp(x.shape[1], seed=seed), x)
        train_rows, val_rows = split_rows(len(x), config.val_fraction, seed)
        return Dataset(x, train_rows, val_rows)

    return make_dataset


def run_glove(config: GloveConfig, out: str | Path, progress: bool = True) -> list[SweepRow]:
    """The GloVe grid into OUT (resumable); returns the whole results table."""
    load = embeddings.load if embeddings.is_embeddings(config.vectors) else glove_data.load
    words = load(config.vectors)  # pyright: ignore[reportArgumentType] (None: the embedded vectors)
    vectors = torch.from_numpy(words.vectors)
    if not torch.isfinite(vectors).all():
        raise BadInput(f"the vectors from {words.source} contain NaN or infinite values.")
    dim = vectors.shape[1]
    latents = [m * dim for m in sorted(set(config.latent_multiples))]
    input_dims = dict.fromkeys(config.data, dim)
    return run_sweep(config, out, input_dims, latents, glove_datasets(config, vectors), progress,
                     extra_settings={"num_vectors": len(vectors)})
