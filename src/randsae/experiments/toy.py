"""The toy model of superposition (PAPER.md §1): Sharkey data and its Gaussian control, raw and through a
random MLP, ReLU+L1 SAEs swept over sparsity coefficients, dictionary sizes and seeds."""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from randsae import io
from randsae.config import coerce, to_dict
from randsae.data import gaussian, sharkey
from randsae.metrics import METRIC_NAMES, sae_metrics
from randsae.sae.relu import ReluSAE
from randsae.seeding import derive_seed, generator
from randsae.train import train_relu_saes
from randsae.transforms import apply, random_mlp

log = logging.getLogger(__name__)

DATA_SOURCES = ("sharkey", "gaussian")
TRANSFORMS = ("none", "mlp")
KEY_COLUMNS = ["data", "transform", "latents", "l1_coef", "seed", "epochs"]
COLUMNS = [*KEY_COLUMNS, *METRIC_NAMES]
# Settings that change every number in the table: a rerun into the same directory must share them.
FIXED_SETTINGS = ("num_samples", "num_inputs", "num_features", "avg_active_features", "lambda_decay",
                  "decay", "batch_size", "lr", "val_fraction", "standardize", "l1_reduction")


def paper_coefficients() -> list[float]:
    return np.logspace(-3, 2, 21).tolist()


@dataclass
class ToyConfig:
    data: list[str] = field(default_factory=lambda: list(DATA_SOURCES))
    transform: list[str] = field(default_factory=lambda: list(TRANSFORMS))
    latents: list[int] = field(default_factory=lambda: [512, 1024, 2048, 4096])
    l1: list[float] = field(default_factory=paper_coefficients)
    seeds: int = 10
    epochs: int = 100
    num_samples: int = 10_000
    num_inputs: int = 256
    num_features: int = 512
    avg_active_features: float = 5.0
    lambda_decay: float = 0.99
    decay: str = "power"
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    standardize: bool = True
    l1_reduction: str = "mean"
    save_weights: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, allowed in (("data", DATA_SOURCES), ("transform", TRANSFORMS)):
            for value in getattr(self, name):
                if value not in allowed:
                    raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}.")
        for name in ("seeds", "epochs", "num_samples", "num_inputs", "num_features", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}.")
        if not self.latents or any(n < 2 for n in self.latents):
            raise ValueError(f"latents must be integers of at least 2, not {self.latents!r}.")
        if not self.l1 or any(not math.isfinite(c) or c < 0 for c in self.l1):
            raise ValueError(f"l1 coefficients must be finite and non-negative, not {self.l1!r}.")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, not {self.val_fraction!r}.")
        if round(self.num_samples * self.val_fraction) < 2 or round(
                self.num_samples * (1 - self.val_fraction)) < 1:
            raise ValueError(f"{self.num_samples} samples leave too few for a {self.val_fraction:g} split.")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr!r}.")
        if self.decay not in ("power", "product"):
            raise ValueError(f"decay must be 'power' or 'product', not {self.decay!r}.")
        if self.l1_reduction not in ("mean", "sum"):
            raise ValueError(f"l1_reduction must be 'mean' or 'sum', not {self.l1_reduction!r}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}.")

    @classmethod
    def from_dict(cls, values: dict) -> "ToyConfig":
        return cls(**coerce(cls, values))


PRESETS: dict[str, dict] = {
    "paper": {},
    # A few minutes on a laptop CPU, and long enough for the Goldilocks band to show (MMCS > 0.9):
    # one seed, two dictionary sizes, 11 coefficients, 40 epochs.
    "quick": {"latents": [512, 1024], "l1": np.logspace(-3, 2, 11).tolist(), "seeds": 1,
              "epochs": 40},
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but PyTorch sees no CUDA GPU.")
    return torch.device(name)


def row_key(row: dict) -> tuple:
    """The identity of a table row; coefficients compare by value to 10 significant digits."""
    return (str(row["data"]), str(row["transform"]), int(row["latents"]),
            float(f"{float(row['l1_coef']):.10g}"), int(row["seed"]), int(row["epochs"]))


@dataclass
class ToyDataset:
    """One (seed, data, transform) data set split into training and validation rows."""
    train: torch.Tensor
    val: torch.Tensor
    features: torch.Tensor | None  # ground truth, where the inputs have it


def make_datasets(config: ToyConfig, seed: int, device: torch.device) -> dict[tuple[str, str], ToyDataset]:
    """Every (data, transform) data set of one seed, made once; the split is shared by all of them."""
    toy = sharkey.generate(config.num_samples, config.num_inputs, config.num_features,
                           config.avg_active_features, config.lambda_decay, seed=seed,
                           decay=config.decay)
    sources = {"sharkey": toy.samples}
    if "gaussian" in config.data:
        sources["gaussian"] = gaussian.matched(toy.samples, seed=seed)
    mlp = random_mlp(config.num_inputs, seed=seed) if "mlp" in config.transform else None
    order = torch.randperm(config.num_samples, generator=generator(seed, "split"))
    num_val = round(config.num_samples * config.val_fraction)
    val_rows, train_rows = order[:num_val], order[num_val:]
    datasets = {}
    for data in config.data:
        for transform in config.transform:
            x = sources[data] if transform == "none" else apply(mlp, sources[data])
            features = toy.features if (data, transform) == ("sharkey", "none") else None
            datasets[data, transform] = ToyDataset(x[train_rows].to(device), x[val_rows].to(device),
                                                   None if features is None else features.to(device))
    return datasets


@torch.no_grad()
def evaluate(sae: ReluSAE, dataset: ToyDataset) -> list[dict]:
    """Validation metrics of every SAE in the stack."""
    results = []
    for i in range(sae.num_saes):
        x_hat, z = sae(dataset.val, index=i)
        results.append(sae_metrics(dataset.val, x_hat[0], z[0], dataset.features, sae.W_dec[i]))
    return results


def check_compatible(out: Path, config: ToyConfig) -> None:
    """Refuse to mix rows made under different data or training settings in one table."""
    path = out / "config.json"
    if not path.exists():
        return
    try:
        previous = io.read_json(path)
    except ValueError:
        raise ValueError(f"{path} is not valid JSON; move it away or choose another --out.") from None
    for name in FIXED_SETTINGS:
        if name in previous and previous[name] != getattr(config, name):
            raise ValueError(
                f"{out} holds results made with {name}={previous[name]!r}, not "
                f"{getattr(config, name)!r}; choose another --out.")


def run_toy(config: ToyConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Train and evaluate every SAE of the grid not yet in OUT/results.csv; return the whole table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_compatible(out, config)
    device = resolve_device(config.device)
    io.write_json(out / "config.json", {**to_dict(config), "resolved_device": str(device)})

    table = out / "results.csv"
    rows = io.read_rows(table)
    done = {row_key(row) for row in rows}
    grid = [(seed, data, transform, latents)
            for seed in range(config.seeds) for data in config.data
            for transform in config.transform for latents in config.latents]
    todo = {}
    for seed, data, transform, latents in grid:
        coefs = [c for c in sorted(set(config.l1))
                 if row_key({"data": data, "transform": transform, "latents": latents,
                             "l1_coef": c, "seed": seed, "epochs": config.epochs}) not in done]
        if coefs:
            todo[seed, data, transform, latents] = coefs
    total = sum(len(c) for c in todo.values()) * config.epochs
    planned = len(grid) * len(set(config.l1))
    skipped = planned - sum(len(c) for c in todo.values())
    if skipped:
        log.info("%d of %d SAEs already in %s; training the rest", skipped, planned, table)
    bar = tqdm(total=total, unit="SAE-epoch", disable=not progress or total == 0, smoothing=0.05)
    datasets, datasets_seed = {}, None
    for (seed, data, transform, latents), coefs in todo.items():
        if datasets_seed != seed:
            datasets, datasets_seed = make_datasets(config, seed, device), seed
        dataset = datasets[data, transform]
        bar.set_description(f"seed {seed} {data}/{transform} {latents} latents")
        sae = ReluSAE(config.num_inputs, latents, num_saes=len(coefs),
                      standardize=config.standardize,
                      seed=derive_seed(seed, "sae", latents)).to(device)
        train_relu_saes(sae, dataset.train, coefs, epochs=config.epochs,
                        batch_size=config.batch_size, lr=config.lr, seed=seed,
                        l1_reduction=config.l1_reduction, progress=bar)
        for i, (coef, metrics) in enumerate(zip(coefs, evaluate(sae, dataset), strict=True)):
            row = {"data": data, "transform": transform, "latents": latents, "l1_coef": repr(coef),
                   "seed": seed, "epochs": config.epochs, **metrics}
            rows.append(row)
            if config.save_weights:
                name = f"{data}-{transform}-L{latents}-c{coef:.4g}-s{seed}-e{config.epochs}"
                sae.save(out / "weights" / name, i, metadata={
                    k: row[k] for k in KEY_COLUMNS} | {"num_inputs": config.num_inputs})
        io.write_rows(table, COLUMNS, rows)
    bar.close()
    return rows
