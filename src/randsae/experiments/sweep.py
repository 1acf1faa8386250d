"""The grid machinery shared by the superposition experiments (toy data, word vectors): for every seed,
data source and transform, one data set; for every dictionary size, one stack of SAEs over all sparsity
coefficients; one row per SAE in a resumable results table.

Under `torchrun` the stacks are split across ranks (stack i goes to rank i mod world size). Each rank keeps its
finished rows in OUT/results.rank<r>.csv as it goes; at the end rank 0 merges them into results.csv. A rank
that is killed loses only the stack it was training: a rerun, with any number of ranks, reads the rank files
left behind."""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from randsae import runs
from randsae.config import coerce, resolve_device, to_dict
from randsae.distributed import joined_world
from randsae.errors import BadInput
from randsae.lm.embeddings import is_embeddings
from randsae.metrics import SPARSITY_STATS, sae_metrics
from randsae.resources import FLOAT_BYTES, check_memory
from randsae.sae.relu import ReluSAE
from randsae.seeding import derive_seed, generator
from randsae.settings import setting
from randsae.tables import SweepRow, read_table, write_table
from randsae.train import train_relu_saes

log = logging.getLogger(__name__)

TRANSFORMS = ("none", "mlp")
KEY_COLUMNS = list(SweepRow.KEY)
COLUMNS = SweepRow.columns()  # the key, the metrics (randsae.metrics.METRIC_NAMES), the status
# Settings that change every number in a table: a rerun into the same directory must share them.
TRAINING_SETTINGS = ("batch_size", "lr", "val_fraction", "standardize", "l1_reduction", "sparsity_stats")


def paper_coefficients() -> list[float]:
    return np.logspace(-3, 2, 21).tolist()


@dataclass
class SweepConfig:
    """Settings every superposition sweep shares; subclasses add their data source."""

    if TYPE_CHECKING:
        data: list[str]  # each subclass declares its data sources

    transform: list[str] = setting(default_factory=lambda: list(TRANSFORMS), help="comma list of: none, mlp")
    l1: list[float] = setting(default_factory=paper_coefficients, shown="21 log-spaced values 0.001:100:21",
                              help="L1 coefficients: a comma list, or start:stop:num log-spaced")
    seeds: int = setting(10, help="number of seeds (0 … N-1)")
    epochs: int = setting(100, help="training epochs")
    batch_size: int = setting(256, help="minibatch size")
    lr: float = setting(1e-3, help="Adam learning rate")
    val_fraction: float = setting(0.1, help="share of points held out for the metrics")
    standardize: bool = setting(True, help="skip the per-sample standardisation of SAE inputs")
    l1_reduction: str = setting("mean", help="mean (over batch × latents, the authors' code) or sum (per-sample)")
    sparsity_stats: str = setting("per-sample", help="per-sample: Hoyer and L1/√L2 per sample, then averaged; "
                                                     "batch-mean: from batch-mean norms, as the authors' code")
    save_weights: bool = setting(False, help="keep every SAE as safetensors")
    device: str = setting("auto", help="auto, cpu or cuda")

    DATA_SOURCES = ()  # the data names a subclass accepts
    DATA_SETTINGS = ()  # its settings that, like TRAINING_SETTINGS, fix the numbers of a table
    COMMAND = "sweep"  # the command whose output it is (OUT/config.json "command")
    EMBEDDINGS_AS_DATA = False  # whether data may also name a model's token embeddings

    def __post_init__(self) -> None:
        for value in self.data:
            if value not in self.DATA_SOURCES and not (self.EMBEDDINGS_AS_DATA and is_embeddings(value)):
                choices = [*self.DATA_SOURCES, *(["embeddings:MODEL"] if self.EMBEDDINGS_AS_DATA else [])]
                raise BadInput(f"unknown data {value!r}; choose from {', '.join(choices)}.")
        for value in self.transform:
            if value not in TRANSFORMS:
                raise BadInput(f"unknown transform {value!r}; choose from {', '.join(TRANSFORMS)}.")
        for name in ("seeds", "epochs", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if not self.l1 or any(not math.isfinite(c) or c < 0 for c in self.l1):
            raise BadInput(f"l1 coefficients must be finite and non-negative, not {self.l1!r}.")
        if not 0 < self.val_fraction < 1:
            raise BadInput(f"val_fraction must be between 0 and 1, not {self.val_fraction!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise BadInput(f"lr must be positive and finite, not {self.lr!r}.")
        if self.sparsity_stats not in SPARSITY_STATS:
            raise BadInput(f"sparsity_stats must be one of {', '.join(SPARSITY_STATS)}, not "
                             f"{self.sparsity_stats!r}.")
        if self.l1_reduction not in ("mean", "sum"):
            raise BadInput(f"l1_reduction must be 'mean' or 'sum', not {self.l1_reduction!r}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BadInput(f"device must be auto, cpu or cuda, not {self.device!r}.")

    @classmethod
    def from_dict(cls, values: dict):
        return cls(**coerce(cls, values))


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{name} must be a positive integer, not {value!r}.")


def stack_bytes(latents: int, input_dim: int, num_saes: int, batch_size: int) -> int:
    """Training memory of one stack: weights, gradients and two Adam moments of both matrices, and a
    few batch × latents activations per SAE."""
    return FLOAT_BYTES * num_saes * (8 * latents * input_dim + 6 * batch_size * latents)


@dataclass
class Dataset:
    """One (seed, data, transform) data set: all its rows, and which of them train and validate."""

    data: torch.Tensor  # N × d
    train_rows: torch.Tensor
    val_rows: torch.Tensor
    features: torch.Tensor | None = None  # d × n_s ground truth, where the inputs have it


def split_rows(num_rows: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation row indices, a seeded random split."""
    order = torch.randperm(num_rows, generator=generator(seed, "split"))
    num_val = round(num_rows * val_fraction)
    if num_val < 2 or num_rows - num_val < 1:
        raise BadInput(f"{num_rows} rows leave too few for a {val_fraction:g} validation split.")
    return order[num_val:], order[:num_val]


def read_results(path: str | Path) -> list[SweepRow]:
    """The rows of a sweep's results.csv, each checked: the key columns present and of their types, the
    metrics numbers (or empty). A bad row is one sentence naming the file, the row and the column."""
    return read_table(path, SweepRow)


def rank_tables(out: Path) -> list[Path]:
    return sorted(out.glob("results.rank*.csv"))


def read_all_results(out: Path) -> list[SweepRow]:
    """results.csv and the rows of any rank's table left beside it, one row per SAE (a later table's row
    wins)."""
    merged: dict[tuple, SweepRow] = {}
    for path in [out / "results.csv", *rank_tables(out)]:
        for row in read_results(path) if path.is_file() else []:
            merged[row.key] = row
    return list(merged.values())


def merge_tables(out: Path) -> list[SweepRow]:
    """Every rank's rows into results.csv (sorted by key), the rank tables removed."""
    rows = sorted(read_all_results(out), key=lambda row: row.key)
    write_table(out / "results.csv", rows, SweepRow)
    for path in rank_tables(out):
        path.unlink()
    return rows


def is_diverged(metrics: dict) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values())


@torch.no_grad()
def evaluate(sae: ReluSAE, dataset: Dataset, sparsity_stats: str = "per-sample") -> list[dict]:
    """Validation metrics of every SAE in the stack."""
    val = dataset.data[dataset.val_rows.to(dataset.data.device)]
    results = []
    for i in range(sae.num_saes):
        x_hat, z = sae(val, index=i)
        results.append(sae_metrics(val, x_hat[0], z[0], dataset.features, sae.W_dec[i], sparsity_stats))
    return results


def check_compatible(out: Path, config: SweepConfig, extra: dict) -> None:
    """Refuse to mix rows made under different data or training settings in one table."""
    previous = runs.previous_record(out, config.COMMAND)
    if previous is None:
        return
    current = {**to_dict(config), **extra}
    for name in (*config.DATA_SETTINGS, *TRAINING_SETTINGS, *extra):
        if name in previous and previous[name] != current[name]:
            raise BadInput(f"{out} holds results made with {name}={previous[name]!r}, not "
                             f"{current[name]!r}; choose another --out.")


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    input_dims: dict[str, int],
    latents: list[int],
    make_dataset: Callable[[int, str, str], Dataset],
    progress: bool = True,
    extra_settings: dict | None = None,
) -> list[SweepRow]:
    """Train and evaluate every SAE of the grid not yet in OUT/results.csv; return the whole table.

    `input_dims` gives each data source's dimension. `make_dataset(seed, data, transform)` is called once
    per data set, which is dropped once all its dictionary sizes are trained. `extra_settings` (derived
    facts such as the number of vectors) are written to config.json and must match on a rerun.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_settings or {})
    check_compatible(out, config, extra)
    device = resolve_device(config.device)
    record = {**to_dict(config), **extra, "input_dims": input_dims, "resolved_device": str(device)}

    table = out / "results.csv"
    rows = read_all_results(out)
    retried = [row for row in rows if row.diverged]
    if retried:
        log.warning("%d SAEs in %s diverged in an earlier run; training them again", len(retried), table)
    rows = [row for row in rows if not row.diverged]
    done = {row.key for row in rows}
    coefs = sorted(set(config.l1))
    todo: dict[tuple, list[float]] = {}
    for seed in range(config.seeds):
        for data in config.data:
            for transform in config.transform:
                for size in latents:
                    missing = [c for c in coefs if SweepRow(data, transform, input_dims[data], size, c, seed,
                                                            config.epochs).key not in done]
                    if missing:
                        todo[seed, data, transform, size] = missing
    remaining = sum(len(c) for c in todo.values())
    planned = config.seeds * len(config.data) * len(config.transform) * len(latents) * len(coefs)
    if remaining < planned:
        log.info("%d of %d SAEs already in %s; training the rest", planned - remaining, planned, table)

    if todo:
        check_memory(stack_bytes(max(latents), max(input_dims.values()), len(coefs), config.batch_size),
                     f"a stack of {len(coefs)} SAEs with {max(latents):,} latents", device)
    with joined_world(device) as world:
        rows = train_stacks(config, out, todo, input_dims, make_dataset, rows, record, world, progress)
    return rows


def train_stacks(config: SweepConfig, out: Path, todo: dict[tuple, list[float]], input_dims: dict[str, int],
                 make_dataset: Callable[[int, str, str], Dataset], rows: list[SweepRow], record: dict, world,
                 progress: bool) -> list[SweepRow]:
    """This rank's share of the stacks in `todo`, its rows written after each stack; under torchrun the ranks'
    tables are merged by rank 0 at the end. Returns the whole table (on every rank)."""
    device = world.device
    mine = {key: coefs for i, (key, coefs) in enumerate(todo.items()) if i % world.size == world.rank}
    table = out / (f"results.rank{world.rank}.csv" if world.distributed else "results.csv")
    own: list[SweepRow] = []
    bar = tqdm(total=sum(len(c) for c in mine.values()) * config.epochs, unit="SAE-epoch",
               disable=not progress or not mine or not world.is_main, smoothing=0.05)
    dataset: Dataset | None = None
    dataset_key = None
    diverged: list[str] = []
    wrote_config = False
    for (seed, data, transform, size), stack_coefs in mine.items():
        if dataset_key != (seed, data, transform):
            dataset = None  # let the previous data set go before making the next
            dataset, dataset_key = make_dataset(seed, data, transform), (seed, data, transform)
            dataset.data = dataset.data.to(device)
        assert dataset is not None
        bar.set_description(f"seed {seed} {data}/{transform} {size} latents")
        input_dim = input_dims[data]
        sae = ReluSAE(input_dim, size, num_saes=len(stack_coefs), standardize=config.standardize,
                      seed=derive_seed(seed, "sae", size)).to(device)
        train_relu_saes(sae, dataset.data, stack_coefs, epochs=config.epochs, batch_size=config.batch_size,
                        lr=config.lr, seed=seed, progress=bar, rows=dataset.train_rows,
                        l1_reduction=config.l1_reduction)  # pyright: ignore[reportArgumentType] (checked)
        results = evaluate(sae, dataset, config.sparsity_stats)
        for i, (coef, metrics) in enumerate(zip(stack_coefs, results, strict=True)):
            status = "diverged" if is_diverged(metrics) else "ok"
            row = SweepRow(data, transform, input_dim, size, coef, seed, config.epochs, **metrics, status=status)
            own.append(row)
            if status == "diverged":
                diverged.append(f"{data}/{transform} {size} latents, coefficient {coef:.4g}, seed {seed}")
                continue
            if config.save_weights:
                name = f"{data}-{transform}-L{size}-c{coef:.4g}-s{seed}-e{config.epochs}"
                sae.save(out / "weights" / name, i, extra={k: getattr(row, k) for k in KEY_COLUMNS})
        if not wrote_config:  # the record goes down with the first results made under it (every rank: the same)
            runs.write_record(out, config.COMMAND, record)
            wrote_config = True
        write_table(table, own if world.distributed else rows + own, SweepRow)
    bar.close()
    if diverged:
        log.warning("%d SAEs diverged (a metric is not finite; try a lower learning rate): %s. They are recorded "
                    "with status 'diverged' and trained again by a rerun.", len(diverged), "; ".join(diverged[:5]))
    if not world.distributed:
        return rows + own
    world.barrier()
    if world.is_main:
        merge_tables(out)
    world.barrier()
    return read_results(out / "results.csv")
