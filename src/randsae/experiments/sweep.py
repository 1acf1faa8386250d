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
from randsae.config import check_coefficients, coerce, resolve_device, to_dict
from randsae.distributed import joined_world
from randsae.errors import BadInput, check_terminated
from randsae.lm.embeddings import is_embeddings
from randsae.metrics import SPARSITY_STATS, sae_metrics
from randsae.resources import FLOAT_BYTES, check_memory
from randsae.sae.dictionaries import DEFAULT_CONE, check_dictionary
from randsae.sae.relu import ReluSAE
from randsae.sae.topk import TopKSAE
from randsae.seeding import derive_seed, generator
from randsae.settings import setting
from randsae.tables import SweepRow, read_table, write_table
from randsae.training.toy import train_relu_saes
from randsae.training.trainer import TopKTrainConfig, TopKTrainer

log = logging.getLogger(__name__)

TRANSFORMS = ("none", "mlp")
KEY_COLUMNS = list(SweepRow.KEY)
COLUMNS = SweepRow.columns()  # the key, the metrics (randsae.metrics.METRIC_NAMES), the status
# Settings that change every number in a table: a rerun into the same directory must share them.
TRAINING_SETTINGS = ("batch_size", "lr", "val_fraction", "standardize", "l1_reduction", "sparsity_stats",
                     "dictionary_cone", "recovery_threshold")


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
    dictionaries: list[str] = setting(default_factory=lambda: ["trained"], help=(
        "comma list of trained and random dictionaries: frozen-decoder, frozen-decoder-cov, soft-frozen-decoder, "
        "frozen-encoder (docs/choices.md \"Random dictionaries\")"))
    dictionary_cone: float = setting(DEFAULT_CONE, help="soft-frozen-decoder: the smallest cosine a decoder "
                                                        "direction keeps to its initial one")
    k: int | None = setting(None, shown="none: ReLU + L1 over the coefficients",
                            help="train TopK SAEs keeping k latents per sample instead (one per size and "
                                 "dictionary; --l1 is then unused)")
    recovery_threshold: float = setting(0.8, help="a ground-truth feature counts as recovered when a decoder "
                                                  "direction's cosine to it is above this")

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
        check_coefficients(self.l1, self.l1)
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
        if not self.dictionaries or len(set(self.dictionaries)) != len(self.dictionaries):
            raise BadInput(f"dictionaries takes each dictionary at most once, not {self.dictionaries!r}.")
        for name in self.dictionaries:
            check_dictionary(name, self.dictionary_cone)
        if self.k is not None:
            check_positive_int("k", self.k)
        if not 0 < self.recovery_threshold < 1:
            raise BadInput(f"recovery_threshold must lie in (0, 1), not {self.recovery_threshold!r}.")

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
def evaluate(sae: ReluSAE | TopKSAE, dataset: Dataset, sparsity_stats: str = "per-sample",
             recovery_threshold: float = 0.8) -> list[dict]:
    """Validation metrics of every SAE in the stack (a TopK SAE: one)."""
    val = dataset.data[dataset.val_rows.to(dataset.data.device)]
    if isinstance(sae, TopKSAE):
        values, indices = sae.encode(val)
        return [sae_metrics(val, sae.decode(values, indices), sae.dense_latents(values, indices), dataset.features,
                            sae.W_dec, sparsity_stats, recovery_threshold)]
    results = []
    for i in range(sae.num_saes):
        x_hat, z = sae(val, index=i)
        results.append(sae_metrics(val, x_hat[0], z[0], dataset.features, sae.W_dec[i], sparsity_stats,
                                   recovery_threshold))
    return results


def train_topk(sae: TopKSAE, dataset: Dataset, config: "SweepConfig", seed: int, dictionary: str,
               progress) -> None:
    """One TopK SAE on the training rows, `config.epochs` passes in a seeded order (the ReLU stacks' order),
    with `dictionary` kept as `randsae.sae.dictionaries` says; the sweep's own rate and warm-up, no decay and no
    dead-latent remedy (the sparsify recipe's: the toy sweep compares dictionaries under one plain trainer)."""
    assert config.k is not None
    rows = dataset.train_rows.to(dataset.data.device)
    steps = config.epochs * math.ceil(len(rows) / config.batch_size)
    trainer = TopKTrainer(sae, TopKTrainConfig(k=config.k, batch_size=config.batch_size, lr=config.lr, seed=seed,
                                               warmup_steps=min(1000, steps // 10), dictionary=dictionary,
                                               recipe="sparsify",
                                               dictionary_cone=config.dictionary_cone), total_steps=steps)
    order_gen = generator(seed, "minibatch-order", device=dataset.data.device)
    for _ in range(config.epochs):
        check_terminated()
        order = rows[torch.randperm(len(rows), generator=order_gen, device=rows.device)]
        for start in range(0, len(order), config.batch_size):
            trainer.step(dataset.data[order[start:start + config.batch_size]])
        progress.update(1)


def save_weights(sae: ReluSAE | TopKSAE, index: int, row: SweepRow, out: Path) -> None:
    """OUT/weights/<the row's key>: SAE `index` of a ReLU stack, or the TopK SAE."""
    name = f"{row.data}-{row.transform}-L{row.latents}-c{row.l1_coef:.4g}-s{row.seed}-e{row.epochs}"
    name += f"-k{row.k}" if row.k is not None else ""
    name += "" if row.dictionary == "trained" else f"-{row.dictionary}"
    extra = {k: getattr(row, k) for k in KEY_COLUMNS}
    if isinstance(sae, TopKSAE):
        sae.save(out / "weights" / name, extra=extra)
    else:
        sae.save(out / "weights" / name, index, extra=extra)


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
    coefs = [0.0] if config.k is not None else sorted(set(config.l1))  # a TopK SAE has no coefficient
    todo: dict[tuple, list[float]] = {}
    for seed in range(config.seeds):
        for data in config.data:
            for transform in config.transform:
                for size in latents:
                    for dictionary in config.dictionaries:
                        missing = [c for c in coefs if SweepRow(data, transform, input_dims[data], size, c, seed,
                                                                config.epochs, dictionary=dictionary,
                                                                k=config.k).key not in done]
                        if missing:
                            todo[seed, data, transform, size, dictionary] = missing
    remaining = sum(len(c) for c in todo.values())
    planned = (config.seeds * len(config.data) * len(config.transform) * len(latents) * len(coefs)
               * len(config.dictionaries))
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
    for (seed, data, transform, size, dictionary), stack_coefs in mine.items():
        if dataset_key != (seed, data, transform):
            dataset = None  # let the previous data set go before making the next
            dataset, dataset_key = make_dataset(seed, data, transform), (seed, data, transform)
            dataset.data = dataset.data.to(device)
        assert dataset is not None
        arm = "" if dictionary == "trained" else f" {dictionary}"
        bar.set_description(f"seed {seed} {data}/{transform} {size} latents{arm}")
        input_dim = input_dims[data]
        sae: ReluSAE | TopKSAE
        if config.k is None:
            sae = ReluSAE(input_dim, size, num_saes=len(stack_coefs), standardize=config.standardize,
                          seed=derive_seed(seed, "sae", size)).to(device)
            train_relu_saes(sae, dataset.data, stack_coefs, epochs=config.epochs, batch_size=config.batch_size,
                            lr=config.lr, seed=seed, progress=bar, rows=dataset.train_rows,
                            l1_reduction=config.l1_reduction,  # pyright: ignore[reportArgumentType] (checked)
                            dictionary=dictionary, cone=config.dictionary_cone)
        else:
            sae = TopKSAE(input_dim, size, config.k, seed=derive_seed(seed, "sae", size)).to(device)
            train_topk(sae, dataset, config, seed, dictionary, bar)
        results = evaluate(sae, dataset, config.sparsity_stats, config.recovery_threshold)
        if not wrote_config:  # the record goes down with the first results made under it (every rank: the same)
            runs.write_record(out, config.COMMAND, record)
            wrote_config = True
        for i, (coef, metrics) in enumerate(zip(stack_coefs, results, strict=True)):
            status = "diverged" if is_diverged(metrics) else "ok"
            row = SweepRow(data, transform, input_dim, size, coef, seed, config.epochs, **metrics, status=status,
                           dictionary=dictionary, k=config.k)
            own.append(row)
            if status == "diverged":
                diverged.append(f"{data}/{transform} {size} latents, coefficient {coef:.4g}, seed {seed}{arm}")
                continue
            if config.save_weights:
                save_weights(sae, i, row, out)
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
