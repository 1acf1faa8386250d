"""Result tables: one dataclass per table, its columns derived from its fields, one writer and one reader that
convert by type, and one registry of columns saying what each number is, its formula and where it is computed.

A table is a dataclass deriving from `Table`. A field whose type is another `Table` is nested: its columns are
written flat, each named `<inner>_<outer>` (the `fuzzing` field's `auroc_low` is the column
`auroc_low_fuzzing`), and it reads back as None when all of its cells are empty. A row also answers
`row.get(column)` by its flat column name, so the code that draws or judges a column by name reads a typed row
the way it read a CSV row.

`python -m randsae.tables` prints the registry as the Markdown table docs/reference.md carries (`--write` puts
it there).
"""

import dataclasses
import functools
import math
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from randsae import io
from randsae.errors import BadInput
from randsae.scorer_kinds import COMPARED, SCORER_KINDS

# --- the registry ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    table: str  # the output that holds it
    name: str  # its CSV column
    label: str  # what a reader calls it
    formula: str
    where: str  # the function (module.name) that computes it
    unit: str = ""


REGISTRY: list[Column] = []


def register(table: str, where: str, columns: Sequence[tuple[str, str, str] | tuple[str, str, str, str]]) -> None:
    """Register `columns` (name, label, formula[, unit]) of `table`, all computed in `where`."""
    for name, label, formula, *unit in columns:
        REGISTRY.append(Column(table, name, label, formula, where, *unit))


def registered(table: str, name: str) -> Column:
    for column in REGISTRY:
        if column.table == table and column.name == name:
            return column
    raise KeyError(f"no column {name!r} is registered for {table}")


def markdown() -> str:
    """The registry as a Markdown table (the README's "where each number comes from")."""
    lines = ["| output | column | what it is | formula | computed in |", "|---|---|---|---|---|"]
    for c in REGISTRY:
        unit = f" ({c.unit})" if c.unit else ""
        lines.append(f"| {c.table} | `{c.name}` | {c.label}{unit} | {c.formula} | `{c.where}` |")
    return "\n".join(lines) + "\n"


# --- typed rows ------------------------------------------------------------------------------------------------

def _unwrap(hint) -> tuple[type, bool]:
    """(the type, whether None is allowed) of a field's annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


@functools.cache
def _field_types(cls) -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap(hints[f.name]) for f in dataclasses.fields(cls)}


def _is_table(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, Table)


class Table:
    """The base of every result table's row (subclasses are dataclasses)."""

    @classmethod
    def columns(cls) -> list[str]:
        """The CSV header, derived from the fields (nested tables flattened)."""
        out = []
        for name, (kind, _) in cls._fields().items():
            out += [f"{inner}_{name}" for inner in kind.columns()] if _is_table(kind) else [name]
        return out

    @classmethod
    def _fields(cls) -> dict[str, tuple[type, bool]]:
        """Field → (its type, whether None is allowed), worked out once per class."""
        return _field_types(cls)

    def flat(self) -> dict[str, Any]:
        """Column → value."""
        out: dict[str, Any] = {}
        for name, (kind, _) in self._fields().items():
            value = getattr(self, name)
            if _is_table(kind):
                inner = value.flat() if value is not None else dict.fromkeys(kind.columns())
                out.update({f"{key}_{name}": v for key, v in inner.items()})
            else:
                out[name] = value
        return out

    def get(self, column: str, default=None):
        """The value of a column by its flat name (None when the row does not have it)."""
        value = self.flat().get(column, default)
        return default if value is None else value

    @classmethod
    def from_cells(cls, cells: dict[str, str], where: str) -> Self:
        """A row from its CSV cells (strings), each converted to its field's type; a cell that is not of its
        type is one sentence naming `where` and the column. Columns the row lacks take the field's default."""
        values = {}
        types_ = cls._fields()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            kind, optional = types_[f.name]
            if _is_table(kind):
                inner = {key: cells.get(f"{key}_{f.name}", "") for key in kind.columns()}
                values[f.name] = kind.from_cells(inner, where) if any(v != "" for v in inner.values()) else None
                continue
            if f.name not in cells:
                if f.default is dataclasses.MISSING and not optional:
                    raise BadInput(f"{where} has no column {f.name!r}; is it the right kind of table?")
                values[f.name] = None if f.default is dataclasses.MISSING else f.default
                continue
            values[f.name] = _convert(cells[f.name], kind, optional, f"{where}: {f.name}")
        return cls(**values)


def _convert(text: str, kind: type, optional: bool, where: str):
    if text == "" and (optional or kind is not str):
        if optional:
            return None
        raise BadInput(f"{where} is empty.")
    try:
        if kind is bool:
            if text not in ("True", "False"):
                raise ValueError
            return text == "True"
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        wanted = "True or False" if kind is bool else "a number"
        raise BadInput(f"{where} is {text!r}, not {wanted}.") from None
    return text


def write_table(path: str | Path, rows: Iterable[Table], cls: type[Table]) -> Path:
    """The whole table at `path`, atomically; None is an empty cell."""
    return io.write_rows(path, cls.columns(), [row.flat() for row in rows])


def read_table(path: str | Path, cls: type[Table]) -> list:
    """The rows of the table at `path` as `cls`; an absent file is an empty table."""
    return [cls.from_cells(cells, f"{path} row {number}") for number, cells in enumerate(io.read_rows(path), 2)]


def finite(value) -> float | None:
    """A number that can be compared: None for a missing or non-finite value."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- the sweep tables (toy data, word vectors) ---------------------------------------------------------------

@dataclass
class SweepRow(Table):
    """One row of `randsae toy` / `glove`'s results.csv: one ReLU SAE of the grid on its validation split.
    `status` is "ok", or "diverged" when a metric is not finite (kept as a record, retried by a rerun, never
    plotted)."""
    data: str
    transform: str
    input_dim: int
    latents: int
    l1_coef: float
    seed: int
    epochs: int
    mse: float | None = None
    fvu: float | None = None
    explained_variance: float | None = None
    l0: float | None = None
    l1: float | None = None
    l2: float | None = None
    l1_over_sqrt_l2: float | None = None
    hoyer: float | None = None
    dead_fraction: float | None = None
    mmcs: float | None = None
    status: str = "ok"
    # after the columns of the first tables (which still read, as trained ReLU SAEs)
    dictionary: str = "trained"
    k: int | None = None  # a TopK SAE's k (its l1_coef is 0); None: ReLU + L1
    recovered: int | None = None
    recovered_fraction: float | None = None

    KEY = ("data", "transform", "input_dim", "latents", "l1_coef", "seed", "epochs", "dictionary", "k")

    @property
    def key(self) -> tuple:
        """The identity of a row; coefficients compare by value to 10 significant digits."""
        return (self.data, self.transform, self.input_dim, self.latents, float(f"{self.l1_coef:.10g}"), self.seed,
                self.epochs, self.dictionary, self.k)

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


# --- the language-model tables --------------------------------------------------------------------------------

@dataclass
class EvalRow(Table):
    """One row of `lm eval`'s results.csv: one trained layer's SAE on held-out text."""
    model: str
    variant: str
    layer: int
    k: int | None = None
    latents: int | None = None
    tokens: int | None = None
    explained_variance: float | None = None
    fvu: float | None = None
    cosine_sim: float | None = None
    l1: float | None = None
    l0: float | None = None
    dead_fraction: float | None = None
    ce_clean: float | None = None
    ce_sae: float | None = None
    ce_zero: float | None = None
    ce_loss_score: float | None = None
    kl: float | None = None
    pca_explained_variance: float | None = None  # PCA-k fitted on training tokens (before: on the evaluated ones)
    below_baseline: str | None = None
    architecture: str | None = None  # tables from before it was written: topk
    pca_components: int | None = None  # tables from before it was written: k
    pca_in_sample_explained_variance: float | None = None  # the bound: PCA-k fitted on the evaluated tokens
    token_lookup_explained_variance: float | None = None
    context_share: float | None = None
    train_explained_variance: float | None = None
    fit_tokens: int | None = None  # the training sample's tokens the baselines were fitted on
    unseen_token_share: float | None = None
    held_out_contexts: int | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.variant, self.layer


@dataclass
class ScorerAuroc(Table):
    """One scorer's pooled AUROC over a layer's sampled latents, and its judge's calibration on that scorer."""
    auroc: float | None = None
    auroc_low: float | None = None
    auroc_high: float | None = None
    judge_at_chance: bool | None = None  # None: no judge (a scorer that needs none) or not calibrated


@dataclass
class ScorerAccuracy(Table):
    """The intruder scorer's pooled accuracy over a layer's sampled latents, what guessing gives, and its
    judge's calibration on that scorer."""
    accuracy: float | None = None
    accuracy_low: float | None = None
    accuracy_high: float | None = None
    chance: float | None = None
    judge_at_chance: bool | None = None


AUROC_SCORERS = COMPARED  # the scorers the comparison carries, each a nested ScorerAuroc field of CompareRow


@dataclass
class CompareRow(EvalRow):
    """One row of `lm compare`'s results.csv: a (model, variant, layer) with its `lm eval` quality, its
    sampled latents' entropy and each scorer's pooled AUROC with that scorer's own judge flag."""
    sampled_latents: int | None = None
    entropy_mean: float | None = None
    entropy_std: float | None = None
    entropy_all_mean: float | None = None
    fuzzing: ScorerAuroc | None = None
    detection: ScorerAuroc | None = None
    embedding: ScorerAuroc | None = None
    token_lookup: ScorerAuroc | None = None  # the `tokens` scorer (`tokens` is EvalRow's count)
    examples: ScorerAuroc | None = None
    intruder: ScorerAccuracy | None = None
    auroc_latents: int | None = None
    judge: str | None = None
    judge_at_chance: bool | None = None  # at chance on any of the scorers

    def scorer(self, name: str) -> ScorerAuroc | ScorerAccuracy | None:
        return getattr(self, SCORER_KINDS[name].field or name) if name in AUROC_SCORERS else None

    def set_scorer(self, name: str, value: ScorerAuroc | ScorerAccuracy) -> None:
        setattr(self, SCORER_KINDS[name].field or name, value)


@dataclass
class CorrelationRow(Table):
    """One row of `lm compare`'s correlations.csv: Fig. 20's Spearman ρ between the sampled latents' token
    entropy and their AUROC on one scorer, per (model, variant, layer), with its bootstrap interval."""
    model: str
    variant: str
    layer: int
    scorer: str
    latents: int
    spearman: float | None = None
    spearman_low: float | None = None
    spearman_high: float | None = None
    judge_at_chance: bool | None = None  # the scorer's judge at chance: ρ says nothing about the latents


def judge_at_chance(row, metric: str) -> bool:
    """Is the judge at chance on the scorer of `metric` (its column, auroc_<field> or accuracy_intruder) in this
    comparison row (a `CompareRow` or a dict of its cells)? Never for a scorer that asks no judge. Each scorer
    has its own flag; a table written before those existed has only the row's, which then stands for every
    scorer that asks the judge."""
    kind = next((k for k in SCORER_KINDS.values() if k.column == metric), None)
    if kind is not None and not kind.uses_judge:
        return False
    field = metric.split("_", 1)[1] if kind is not None else metric.removeprefix("auroc_")
    flag = row.get(f"judge_at_chance_{field}")
    if flag in (None, ""):
        flag = row.get("judge_at_chance")
    return str(flag) == "True"


# --- judge-free probes -----------------------------------------------------------------------------------------

@dataclass
class ProbeRow(Table):
    """One row of `lm probe`'s probing.csv: one task's probe at one layer — on the SAE's top-k latents (`sae`),
    on every dimension of the block output (`input`: the ceiling) or on one-hot token ids (`tokens`: what the
    token alone answers); k is 0 for the last two (every dimension)."""
    model: str
    variant: str
    layer: int
    family: str  # token, context or data (randsae.lm.probe_tasks)
    task: str
    probe: str  # sae, input or tokens
    k: int
    accuracy: float
    train_examples: int
    test_examples: int


@dataclass
class AbsorptionRow(Table):
    """One row of `lm probe`'s absorption.csv: one first letter's absorption at one layer."""
    model: str
    variant: str
    layer: int
    letter: str
    absorption_fraction: float
    full_absorption: float
    words: int  # held-out words of the letter that the probe calls right
    main_latents: int
    probe_f1: float


# --- where the truth is known ----------------------------------------------------------------------------------

@dataclass
class RecoveryRow(Table):
    """One row of `randsae recovery`'s recovery.csv: one SAE (probabilities × architecture × dictionary) on the
    independent-feature toy, measured after `samples` fresh training samples."""
    probabilities: str  # constant or log-uniform
    architecture: str
    dictionary: str
    samples: int
    steps: int
    explained_variance: float
    recovered: int
    recovered_fraction: float
    mmcs: float
    l0: float
    dead_fraction: float
    seconds: float  # training since the previous point
    seconds_per_million: float  # the same, per million samples
    elapsed: float  # training since the start of the unit


@dataclass
class CurveRow(Table):
    """One point of `lm train`'s learning curve (OUT/curve.csv): a layer's SAE after `tokens` training tokens, on
    the fixed held-out sample and the fixed sample of its training tokens (randsae.training.curves)."""
    layer: int
    steps: int
    tokens: int
    held_out_explained_variance: float
    train_explained_variance: float
    l0: float
    dead_fraction: float


# --- a study's plan ----------------------------------------------------------------------------------------

@dataclass
class PlanRow(Table):
    """One row of OUT/plan.csv: what a unit's stage is expected to read, write, hold and take."""
    unit: str  # "" for the stages across units (compare, report)
    stage: str
    tokens: int  # tokens it reads (through the model or from a cache)
    disk_bytes: int  # bytes it leaves under OUT
    peak_memory_bytes: int  # on the busiest device it uses
    seconds: float
    basis: str  # what the time is estimated from
    groups: int = 1  # eval, latents: the layer groups that fit a device, one pass over the text each
    host_memory_bytes: int = 0  # a model split across devices: made whole on the CPU first


# --- what each column is --------------------------------------------------------------------------------------

SWEEP = "toy / glove results.csv"
EVAL = "lm eval results.csv"
COMPARE = "lm compare results.csv"
SCORES = "lm autointerp scores.csv"
CORRELATIONS = "lm compare correlations.csv"
VERDICT = "baseline compare/verdict.csv"
DICTIONARY_SHARES = "baseline compare/dictionaries.csv"
PLAN = "baseline plan.csv"
CURVE = "lm train curve.csv"
PROBING = "lm probe probing.csv"
SEPARATION = "baseline compare/separation.csv"
PROBE_SUMMARY = "baseline compare/probing.csv"
ABSORPTION = "lm probe absorption.csv"
RECOVERY = "recovery recovery.csv"

register(SWEEP, "randsae.metrics.sae_metrics", [
    ("mse", "mean squared error", "mean over all entries of (x̂ − x)²"),
    ("fvu", "fraction of variance unexplained", "MSE / variance of all entries of the held-out inputs"),
    ("explained_variance", "explained variance", "1 − fvu"),
    ("l0", "active latents per sample", "mean over samples of the count of non-zero latents"),
    ("l1", "L1 of the latents", "mean over samples of Σ|z|"),
    ("l2", "L2 of the latents", "mean over samples of ‖z‖₂"),
    ("l1_over_sqrt_l2", "L1/√L2", "per sample, then averaged (or from batch means: --sparsity-stats)"),
    ("hoyer", "Hoyer sparseness", "(√n − L1/L2)/(√n − 1), n latents; per sample, then averaged"),
    ("dead_fraction", "dead latents", "share of latents that never fire on the held-out split"),
])
register(SWEEP, "randsae.metrics.mmcs", [
    ("mmcs", "mean max cosine similarity", "mean over ground-truth features of the largest cosine with a decoder "
                                           "column (raw toy data only)"),
])
register(SWEEP, "randsae.metrics.recovery", [
    ("recovered", "recovered features", "ground-truth features whose largest cosine with a decoder direction is "
                                        "above --recovery-threshold (0.8)"),
    ("recovered_fraction", "share recovered", "recovered / ground-truth features"),
])
register(SWEEP, "randsae.experiments.sweep.train_stacks", [
    ("dictionary", "dictionary", "trained, or the random dictionary the SAE kept (randsae.sae.dictionaries)"),
    ("k", "TopK's k", "latents kept per sample of a TopK SAE; empty for ReLU + L1"),
])
register(EVAL, "randsae.metrics.TokenQuality.result", [
    ("explained_variance", "explained variance", "1 − fvu"),
    ("fvu", "fraction of variance unexplained", "Σ‖x̂ − x‖² / Σ‖x − mean(x)‖² over held-out tokens (per-dimension "
                                                "total variance: not the toy tables' fvu)"),
    ("cosine_sim", "cosine similarity", "mean over tokens of cos(x, x̂)"),
    ("l1", "L1 of the latents", "mean over tokens of Σ|z|"),
    ("l0", "active latents per token", "mean count of non-zero latents (k for TopK)"),
    ("dead_fraction", "dead latents", "share of latents that never fire on the held-out tokens"),
    ("pca_components", "PCA's components", "k; for an SAE without a fixed k (JumpReLU, Gated, BatchTopK at "
                                           "inference) its L0 on the training sample, rounded"),
    ("pca_explained_variance", "PCA-k explained variance (the baseline)",
     "explained variance on the held-out tokens of x̂ = μ + BBᵀ(x − μ), μ and the top-k eigenvectors B fitted "
     "on fit_tokens of the SAE's training tokens"),
    ("token_lookup_explained_variance", "token lookup explained variance",
     "explained variance on the held-out tokens of x̂ = the mean training activation of x's token id (the training "
     "mean for an id never seen): how much of the layer is the token alone"),
    ("unseen_token_share", "unseen token ids", "share of held-out tokens whose id the training sample never "
                                               "holds"),
    ("fit_tokens", "training sample", "training tokens the baselines are fitted on (and train_explained_variance "
                                      "measured on): the first of the cache, or of an on-the-fly run's contexts"),
    ("pca_in_sample_explained_variance", "PCA-k fitted on the evaluated tokens (a bound)",
     "share of the top k eigenvalues of the held-out tokens' own covariance: no code fitted elsewhere can be held "
     "to it"),
    ("context_share", "context share", "1 − Σ_c Σ_t∈c ‖x − mean_c(x)‖² / Σ‖x − mean(x)‖²: the held-out variance "
                                       "that each context's own mean explains (one offset per context)"),
    ("held_out_contexts", "held-out contexts", "contexts the held-out tokens come from: the units a one-seed "
                                               "bootstrap resamples"),
])
register(EVAL, "randsae.experiments.lm_eval.evaluate", [
    ("train_explained_variance", "explained variance on training tokens",
     "the SAE's explained variance on its training sample (fit_tokens): beside explained_variance, how well it "
     "generalises"),
])
register(EVAL, "randsae.sae.architecture_of", [
    ("architecture", "SAE architecture", "topk, jumprelu, gated, batchtopk or matryoshka_batchtopk (SAELens's "
                                         "names)"),
])
register(EVAL, "randsae.experiments.lm_eval.evaluate", [
    ("ce_clean", "clean loss", "next-token cross-entropy of the model", "nats"),
    ("ce_sae", "loss with the SAE spliced in", "the same with the block's output replaced by x̂", "nats"),
    ("ce_zero", "loss with the block zeroed", "the same with the block's output replaced by 0", "nats"),
    ("kl", "KL to the clean model", "mean over positions of KL(clean ‖ spliced)", "nats"),
])
register(EVAL, "randsae.experiments.lm_eval.ce_score", [
    ("ce_loss_score", "CE loss score", "(ce_zero − ce_sae) / (ce_zero − ce_clean); means little for a random "
                                       "model"),
])
register(EVAL, "randsae.lm.quality.below_baselines", [
    ("below_baseline", "below the simplest baselines", "EV < PCA-k's, both numbers, when explained_variance < "
                                                       "pca_explained_variance (PCA fitted on training tokens); "
                                                       "CE loss score < 0 when ce_loss_score < 0"),
])
register(COMPARE, "randsae.lm.latents.entropy_by_layer", [
    ("sampled_latents", "sampled latents", "latents drawn per layer among those with enough examples"),
    ("entropy_mean", "token entropy", "mean over sampled latents of −Σ p_t ln p_t over the explainer set",
     "nats"),
    ("entropy_std", "spread of token entropy", "standard deviation of the same over sampled latents", "nats"),
    ("entropy_all_mean", "whole-cache token entropy", "mean over every firing latent, over all its windows",
     "nats"),
])
register(COMPARE, "randsae.metrics.pooled_auroc", [
    ("auroc_<scorer>", "pooled AUROC", "AUROC of the judge's P(1) against the truth over every scored window of "
                                       "the layer's sampled latents"),
    ("auroc_low_<scorer>, auroc_high_<scorer>", "95% interval", "bootstrap over latents (1,000 resamples)"),
])
register(COMPARE, "randsae.metrics.pooled_mean_draws", [
    ("accuracy_intruder", "intruder accuracy", "share of intruder trials (4 activating windows, 1 silent) whose "
                                               "silent window the judge named, pooled over the sampled latents"),
    ("accuracy_low_intruder, accuracy_high_intruder", "95% interval", "bootstrap over latents"),
    ("chance_intruder", "chance", "1 / windows per trial (0.2)"),
])
register(COMPARE, "randsae.autointerp.records.Calibration.at_chance", [
    ("judge_at_chance_<scorer>", "judge at chance", "the lower end of the judge's interval on the known-answer "
                                                    "set for that scorer is not above chance (0.5; the "
                                                    "intruder's 0.2): not counted"),
])
register(CORRELATIONS, "randsae.metrics.spearman_interval", [
    ("spearman", "Fig. 20's Spearman ρ", "rank correlation of the sampled latents' token entropy with their "
                                         "AUROC"),
    ("spearman_low, spearman_high", "95% interval", "bootstrap over latents (1,000 resamples)"),
])
register(VERDICT, "randsae.study.verdict.compare_arms", [
    ("trained, twin_value", "each arm's value", "mean over seeds of the metric at that layer (one seed: its "
                                                "value)"),
    ("trained_low, trained_high, twin_low, twin_high", "each arm's 95% interval",
     "Student's t over seeds, clipped to the metric's range (AUROC and accuracy [0, 1], cosine [−1, 1], explained "
     "variance ≤ 1, L1 and entropy ≥ 0); one seed: percentile bootstrap over whole held-out contexts "
     "(reconstruction) or over latents (entropy, AUROC), 1,000 resamples"),
    ("difference", "trained − twin", "the difference of the arms' values"),
    ("low95, high95", "its 95% interval", "Welch's t over seeds, clipped to the range a difference of the metric "
                                          "can take; one seed: the bootstrap draws' differences, paired by "
                                          "resample"),
    ("low90, high90", "its 90% interval", "the same at 90%: the two one-sided tests at 5% each"),
    ("delta", "δ", "the smallest difference that counts (--delta-*; L1's relative to the trained mean)"),
    ("outcome", "the verdict", "differs: 95% excludes 0 and |difference| > δ; same: 90% inside ±δ; cannot tell: "
                               "neither; not comparable: the reason column says why"),
])
register(DICTIONARY_SHARES, "randsae.study.evidence.dictionary_shares", [
    ("value, trained_value", "the random and the trained dictionary's value", "the verdict's arm values (mean "
                                                                              "over seeds) of the same model"),
    ("share", "share of the trained dictionary's", "value / trained_value where both are above zero"),
    ("qualifier", "qualified by", "the verdict's reason when it does not count the comparison (an SAE below its "
                                  "baselines, too few latents)"),
])
register(SCORES, "randsae.metrics.auroc", [
    ("auroc", "a latent's AUROC", "AUROC of P(1) against the truth over that latent's scored windows"),
])
register(PROBING, "randsae.probing.sparse_accuracies", [
    ("accuracy", "held-out probe accuracy", "a logistic regression (L2, C = 1) on the k latents with the largest "
     "|mean difference| between the task's training positives and negatives, its accuracy on a balanced held-out "
     "set (SAEBench's k-sparse probing); probe input: every block-output dimension; tokens: one-hot token ids"),
    ("train_examples, test_examples", "examples", "the balanced training and held-out rows (half positives)"),
])
register(ABSORPTION, "randsae.probing.absorption", [
    ("absorption_fraction", "mean absorption fraction", "over held-out words of the letter the ground-truth probe "
     "calls right: the share of the probe's projection that the letter's main latents miss and up to 3 other "
     "latents aligned with the probe (cosine ≥ 0.1) make up, when those make up ≥ 40% (SAEBench)"),
    ("full_absorption", "full absorption rate", "share of those words where no main latent fires and the latent "
     "projecting most on the probe (cosine ≥ 0.025) carries ≥ 40% of its projection"),
    ("main_latents", "main latents", "k of the k-sparse probe, grown while each latent raises the held-out F1 by "
     "≥ 0.03 (at most 10)"),
    ("probe_f1", "ground-truth probe F1", "the probe on every block-output dimension, on the held-out words; a "
                                           "letter under 0.6 is left out"),
])
register(SEPARATION, "randsae.study.summaries.separation", [
    ("mean_z, largest_z", "standardised difference", "|trained − twin| / its standard error ((high95 − low95) / "
     "3.92), mean and largest over the metric's comparable (layer, twin) cells; the rows ranked by the mean"),
    ("differs, same, cannot_tell, not_comparable", "verdict counts", "the verdict's outcomes over the metric's "
                                                                      "(layer, twin) cells"),
])
register(PROBE_SUMMARY, "randsae.study.summaries.probe_summary", [
    ("accuracy", "family accuracy", "mean over the family's tasks of the arm's held-out probe accuracy"),
    ("below_baseline", "qualified by", "why the arm's SAE at that layer is not comparable in the verdict: below "
                                       "PCA-k fitted on its training tokens (`lm eval`'s gate), or still learning "
                                       "or overfitting (its learning curve): shown, not counted"),
])
register(RECOVERY, "randsae.experiments.recovery.measure", [
    ("samples", "training samples seen", "steps × batch, every sample fresh (randsae.data.independent.Stream)"),
    ("explained_variance", "explained variance", "1 − Σ (x̂ − x)² / Σ (x − mean x)² over the held-out samples, "
     "the SAE as it is used (BatchTopK, Matryoshka: its inference threshold)"),
    ("recovered, recovered_fraction", "recovered features", "ground-truth features whose largest cosine with a "
     "decoder direction is above --recovery-threshold (0.8), and their share of F"),
    ("mmcs", "MMCS", "mean over features of that largest cosine"),
    ("l0, dead_fraction", "L0, dead latents", "active latents per held-out sample; latents never active on them"),
])
register(RECOVERY, "randsae.experiments.recovery.train_unit", [
    ("seconds, seconds_per_million, elapsed", "training time", "wall seconds training since the previous point "
     "(per million samples), and since the start of the unit, without the measuring", "s"),
])
register(CURVE, "randsae.training.curves.reconstruction", [
    ("steps, tokens", "training seen", "optimiser steps and tokens trained on at the point: the run's last step "
                                       "and halving back from it (--curve-points points)"),
    ("held_out_explained_variance", "held-out explained variance", "1 − Σ‖x̂ − x‖² / Σ‖x − mean x‖² on the fixed "
     "held-out sample (--curve-tokens tokens of the held-out contexts), the SAE as it is used"),
    ("train_explained_variance", "training explained variance", "the same on the first --curve-tokens tokens it "
                                                                "trained on"),
    ("l0, dead_fraction", "L0, dead latents", "active latents per held-out token; latents active on none of them"),
])
register(PLAN, "randsae.study.plan.plan_study", [
    ("tokens", "tokens read", "the stage's tokens through the model or from the cache"),
    ("disk_bytes", "disk written", "cache: tokens × layers × d × cache bytes; latents: tokens × layers × k × 8",
     "bytes"),
    ("peak_memory_bytes", "peak memory per device", "model weights + the stage's SAEs (training: 8 × L × d floats "
     "each + batch × L) + one batch's activations", "bytes"),
    ("seconds", "estimated time", "load + FLOPs / the calibrated rate (forward: 2 × non-embedding parameters + "
     "2 × V × d + 2 × layers × context × d per token; SAE training 6 × d × L, encoding 2 × d × L)", "s"),
    ("groups", "layer groups", "eval and latents: ⌈layers / the layers whose SAEs fit a device beside the model⌉, "
                               "one pass over the text each (randsae.study.plan.layer_groups)"),
    ("host_memory_bytes", "host memory", "with --device-map: the model and its twin made whole on the CPU (2 × "
                                         "its weights) before they are dispatched; else 0", "bytes"),
])


REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
START, END = "<!-- columns:start -->\n", "<!-- columns:end -->"


def write_reference(path: Path = REFERENCE) -> None:
    """The registry's table written between the markers of docs/reference.md."""
    text = path.read_text()
    path.write_text(text[:text.index(START) + len(START)] + markdown() + text[text.index(END):])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_reference()
    else:
        sys.stdout.write(markdown())
