"""`randsae recovery`: where the truth is known — every SAE architecture, trained and with each random dictionary,
on the independent-feature toy (Korznikov et al. 2026 §3), trained on a fresh stream of samples and measured
against the ground-truth features as samples are seen (docs/choices.md "Recovery on the independent-feature toy").

A unit is one (probabilities, architecture, dictionary). It trains with `lm train`'s modules and trainer
(`TopKTrainConfig.new_sae`, `TopKTrainer`) on `independent.Stream`'s batches, and at each point of the curve —
samples seen doubling up to `--samples` — measures the SAE on a fixed held-out set, writes its row and saves its
state, so that a killed run resumes at the unit's last point and sees the batches an unbroken run would have.
"""

import logging
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from randsae import io, runs
from randsae.config import coerce, parse_count, parse_list, resolve_device
from randsae.data.independent import Stream
from randsae.errors import BadInput, check_seed, check_terminated
from randsae.experiments.sweep import check_positive_int
from randsae.metrics import best_cosines
from randsae.sae.dictionaries import DEFAULT_CONE, DICTIONARIES, check_dictionary
from randsae.settings import setting
from randsae.tables import RecoveryRow, read_table, write_table
from randsae.training.curves import doubling_steps, reconstruction
from randsae.training.recipes import RECIPE_HELP, check_training_values, recipe
from randsae.training.trainer import ARCHITECTURES, TopKTrainConfig, TopKTrainer

log = logging.getLogger(__name__)

COMMAND = "recovery"
MAX_DECADES = 30  # a log-uniform spread wider than 10^30 has probabilities below any float32 sample's reach
TOY_BATCH = 1024  # samples per step where the recipe leaves the batch to the command
PROBABILITIES = ("constant", "log-uniform")
TABLE = "recovery.csv"


def fractions(text: str) -> list[float]:
    return parse_list(text, float)


@dataclass
class RecoveryConfig:
    num_inputs: int = setting(100, help="input dimension n")
    num_features: int = setting(3200, help="ground-truth features F, uniform on the unit sphere")
    avg_active: float = setting(20.0, help="mean active features per sample m (each feature on with mean "
                                           "probability m / F)")
    probabilities: list[str] = setting(default_factory=lambda: list(PROBABILITIES),
                                       help="comma list of: constant (every p = m / F), log-uniform")
    log_uniform_decades: float = setting(4.3, help="log-uniform p spans this many decades (the paper's 10^-5.5 … "
                                                   "10^-1.2), rescaled so the mean stays m / F")
    magnitude_sigma: float = setting(0.5, help="σ of the features' log-normal magnitudes (not in what we could "
                                               "read of the paper)")
    latents: int = setting(3200, help="SAE latents")
    k: int = setting(20, help="latents kept per sample (TopK, BatchTopK, Matryoshka); JumpReLU's target L0")
    architectures: list[str] = setting(default_factory=lambda: list(ARCHITECTURES),
                                       help="comma list of: " + ", ".join(ARCHITECTURES))
    dictionaries: list[str] = setting(default_factory=lambda: list(DICTIONARIES),
                                      help="comma list of: " + ", ".join(DICTIONARIES))
    recipe: str = setting("randsae", help=RECIPE_HELP)
    auxk_alpha: float | None = setting(None, shown="the recipe's",
                                       help="weight of the AuxK loss on dead latents (topk, batchtopk, "
                                            "matryoshka; 0: off)")
    k_aux: int | None = setting(None, shown="the recipe's", help="AuxK: dead latents each sample reconstructs "
                                                                 "its residual from")
    dead_samples: int | None = setting(None, parse=parse_count, shown="the recipe's",
                                       help="samples without firing before a latent counts as dead (for AuxK and "
                                            "resampling)")
    resample_every: int | None = setting(None, shown="the recipe's", help="every N steps, dead latents restart on "
                                                                          "the worst-reconstructed samples")
    matryoshka_fractions: list[float] = setting(default_factory=lambda: [0.5, 0.3, 0.2],
                                                parse=fractions,
                                                help="matryoshka: the nested groups' shares of the latents, "
                                                     "smallest prefix first")
    samples: int = setting(8_388_608, parse=parse_count, shown="8M (2^23)",
                           help="training samples per SAE, each fresh (the budget; 500k, 8M, …)")
    points: int = setting(8, help="points on the curve: samples seen doubling up to --samples")
    batch_size: int | None = setting(None, shown="the recipe's (randsae 1,024, bussmann 4,096)",
                                     help="samples per optimiser step")
    lr: float | None = setting(None, shown="the recipe's", help="Adam learning rate")
    adam_beta2: float | None = setting(None, shown="the recipe's", help="Adam's β2")
    warmup_steps: int | None = setting(None, shown="the recipe's",
                                       help="linear learning-rate warm-up, capped at a tenth of the run")
    decay_fraction: float | None = setting(None, shown="the recipe's",
                                           help="linear learning-rate decay to 0 over this last share of the run")
    held_out: int = setting(16384, help="fixed held-out samples every point is measured on")
    recovery_threshold: float = setting(0.8, help="a feature is recovered when some decoder direction's cosine "
                                                  "to it is above this")
    dictionary_cone: float = setting(DEFAULT_CONE, help="soft-frozen-decoder: the smallest cosine a decoder "
                                                        "direction keeps to its initial one")
    seed: int = setting(0, help="seeds the features, the probabilities, the stream and the SAEs")
    device: str = setting("auto", help="auto, cpu or cuda")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        for name in ("num_inputs", "num_features", "latents", "k", "points", "held_out", "samples"):
            check_positive_int(name, getattr(self, name))
        for name in ("batch_size", "dead_samples", "k_aux"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.num_inputs < 2:
            raise BadInput(f"num_inputs must be at least 2, not {self.num_inputs}.")
        if not (0 < self.avg_active <= self.num_features and math.isfinite(self.avg_active)):
            raise BadInput(f"avg_active must lie in (0, num_features = {self.num_features}], not "
                           f"{self.avg_active!r}.")
        if not (0 < self.log_uniform_decades <= MAX_DECADES):
            raise BadInput(f"log_uniform_decades must lie in (0, {MAX_DECADES}], not "
                           f"{self.log_uniform_decades!r}.")
        if not (self.magnitude_sigma >= 0 and math.isfinite(self.magnitude_sigma)):
            raise BadInput(f"magnitude_sigma must be finite and not negative, not {self.magnitude_sigma!r}.")
        if self.k > self.latents:
            raise BadInput(f"k ({self.k}) must not exceed the latents ({self.latents}).")
        for name, allowed in (("probabilities", PROBABILITIES), ("architectures", ARCHITECTURES),
                              ("dictionaries", tuple(DICTIONARIES))):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise BadInput(f"{name} takes each of its values once, at least one, not {values!r}.")
            for value in values:
                if value not in allowed:
                    raise BadInput(f"unknown {name} value {value!r}; choose from {', '.join(allowed)}.")
        check_dictionary("trained", self.dictionary_cone)
        fractions = self.matryoshka_fractions
        if not fractions or any(not (f > 0) for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise BadInput(f"matryoshka_fractions must be positive shares summing to 1, not {fractions!r}.")
        if len(set(matryoshka_widths(self.latents, fractions))) != len(fractions):
            raise BadInput(f"matryoshka_fractions {fractions!r} leave a group of {self.latents} latents empty.")
        if not 0 < self.recovery_threshold < 1:
            raise BadInput(f"recovery_threshold must lie in (0, 1), not {self.recovery_threshold!r}.")
        recipe(self.recipe)
        if self.architectures == ["jumprelu"] and self.auxk_alpha:
            raise BadInput("auxk_alpha is the AuxK loss of TopK-style SAEs (topk, batchtopk, matryoshka); a "
                           "JumpReLU SAE has none: leave it unset or add those architectures.")
        check_training_values({"lr": self.lr, "adam_beta2": self.adam_beta2, "warmup_steps": self.warmup_steps,
                               "decay_fraction": self.decay_fraction, "auxk_alpha": self.auxk_alpha,
                               "resample_every": self.resample_every})
        if self.samples < self.batch():
            raise BadInput(f"samples ({self.samples:,}) must be at least one batch ({self.batch():,}).")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BadInput(f"device must be auto, cpu or cuda, not {self.device!r}.")
        if "log-uniform" in self.probabilities:  # a spread that puts a probability above 1: one sentence now
            self.probability_spread("log-uniform")

    @classmethod
    def from_dict(cls, values: dict) -> "RecoveryConfig":
        return cls(**coerce(cls, values))

    def probability_spread(self, probabilities: str) -> float:
        """The ratio of the largest to the smallest probability (independent.probabilities' spread)."""
        spread = 1.0 if probabilities == "constant" else 10 ** self.log_uniform_decades
        if spread > 1 and self.avg_active / self.num_features * spread * math.log(spread) / (spread - 1) > 1:
            raise BadInput(f"log-uniform probabilities over {self.log_uniform_decades:g} decades around a mean of "
                           f"{self.avg_active / self.num_features:.3g} put some above 1; choose fewer decades or "
                           "fewer active features.")
        return spread

    def batch(self) -> int:
        """Samples per step: as given, else the recipe's (else TOY_BATCH)."""
        return self.batch_size or recipe(self.recipe).batch_size or TOY_BATCH

    def steps(self) -> int:
        return self.samples // self.batch()

    def checkpoints(self) -> list[int]:
        """The steps after which the curve has a point: the last step, and halving back from it (distinct)."""
        return doubling_steps(self.steps(), self.points)

    def train_config(self, architecture: str, dictionary: str) -> TopKTrainConfig:
        matryoshka = architecture == "matryoshka"
        widths = matryoshka_widths(self.latents, self.matryoshka_fractions) if matryoshka else None
        return TopKTrainConfig(k=self.k, expansion=1, batch_size=self.batch(), recipe=self.recipe, lr=self.lr,
                               adam_beta2=self.adam_beta2, warmup_steps=self.warmup_steps,
                               decay_fraction=self.decay_fraction, seed=self.seed, dictionary=dictionary,
                               dictionary_cone=self.dictionary_cone, architecture=architecture,
                               target_l0=float(self.k), matryoshka_widths=widths, dead_tokens=self.dead_samples,
                               k_aux=self.k_aux, resample_every=self.resample_every,
                               auxk_alpha=0.0 if architecture == "jumprelu" else self.auxk_alpha)

    def hyperparameters(self, architecture: str = "topk") -> dict:
        """What an SAE of this run trains with, every value the recipe set (config.json "recipe")."""
        train = self.train_config(architecture, "trained")
        return train.hyperparameters(self.num_inputs, self.latents, self.steps()).record()


PRESETS: dict[str, dict] = {
    "paper": {},
    # Korznikov et al.'s ratios (F = 32 n, m = n / 5, as many latents as features) at a quarter of the width: the
    # trained TopK SAE's recovery flattens within a few million samples on 2 CPU cores
    "quick": {"num_inputs": 25, "num_features": 800, "avg_active": 5.0, "latents": 800, "k": 5,
              "samples": 4_194_304, "points": 9},
}


def matryoshka_widths(latents: int, fractions: list[float]) -> list[int]:
    """The nested prefixes' widths from the groups' shares (0.5, 0.3, 0.2 of 3,200: 1,600, 2,560, 3,200)."""
    total, widths = 0.0, []
    for fraction in fractions:
        total += fraction
        widths.append(max(1, min(latents, round(total * latents))))
    widths[-1] = latents
    return widths


@dataclass(frozen=True)
class Unit:
    probabilities: str
    architecture: str
    dictionary: str

    @property
    def name(self) -> str:
        return f"{self.probabilities}-{self.architecture}-{self.dictionary}"


def unit_of(row: RecoveryRow) -> Unit:
    return Unit(row.probabilities, row.architecture, row.dictionary)


def units(config: RecoveryConfig) -> list[Unit]:
    return [Unit(p, a, d) for p in config.probabilities for a in config.architectures for d in config.dictionaries]


@torch.no_grad()
def measure(sae, stream: Stream, held_out: torch.Tensor, threshold: float) -> dict:
    """Explained variance, L0 and dead latents of the SAE as it is used (its inference form) on the held-out
    set (`curves.reconstruction`); each feature's best decoder cosine: recovered (above `threshold`) and their
    mean (MMCS)."""
    cosines = best_cosines(stream.features, sae.W_dec.float())
    recovered = int((cosines > threshold).sum())
    return {**reconstruction(sae, held_out), "recovered": recovered,
            "recovered_fraction": recovered / len(cosines), "mmcs": float(cosines.mean())}


def state_path(out: Path, unit: Unit) -> Path:
    return out / "state" / f"{unit.name}.pt"


def resume(trainer: TopKTrainer, path: Path, device: torch.device) -> float:
    """Restore `trainer` from its saved state at `path`; the seconds it had trained. A file that is not a state of
    this unit (unreadable, truncated, another architecture's) is one sentence naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        seconds = float(state.pop("seconds"))
        trainer.restore(state)
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            pickle.UnpicklingError) as error:
        why = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise BadInput(f"{path} is not a saved state of this unit ({why}); delete it to train the unit again from "
                       "its start.") from None
    return seconds


def save_state(path: Path, trainer: TopKTrainer, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**trainer.state(), "seconds": seconds}
    io.atomic_write(path, lambda p: torch.save(state, p))


def train_unit(config: RecoveryConfig, unit: Unit, stream: Stream, held_out: torch.Tensor, out: Path,
               rows: list[RecoveryRow], bar) -> list[RecoveryRow]:
    """Train one unit from its saved state (if any) to the last point, each point's row written into the table
    (`rows`, every unit's) as it is made; returns the table."""
    device = held_out.device
    train_config = config.train_config(unit.architecture, unit.dictionary)
    sae = train_config.new_sae(config.num_inputs, 0, seed=config.seed, latents=config.latents)
    trainer = TopKTrainer(sae, train_config, total_steps=config.steps())
    path, seconds = state_path(out, unit), 0.0
    if path.is_file():
        seconds = resume(trainer, path, device)
    # a point's row is written before its state: rows past the state (a kill between the two) are made again
    rows = [r for r in rows if unit_of(r) != unit or r.steps <= trainer.steps]
    points = [step for step in config.checkpoints() if step > trainer.steps]
    bar.update(trainer.steps)
    for point in points:
        start, steps_before = time.perf_counter(), trainer.steps
        while trainer.steps < point:
            check_terminated()
            trainer.step(stream.batch(trainer.steps, config.batch()))
            bar.update(1)
        took = time.perf_counter() - start
        seconds += took
        metrics = measure(sae, stream, held_out, config.recovery_threshold)
        row = RecoveryRow(unit.probabilities, unit.architecture, unit.dictionary, point * config.batch(),
                          point, **metrics, seconds=took, seconds_per_million=took / max(1, point - steps_before)
                          / config.batch() * 1e6, elapsed=seconds)
        rows.append(row)
        write_table(out / TABLE, rows, RecoveryRow)
        save_state(path, trainer, seconds)
    return rows


def stream_for(config: RecoveryConfig, probabilities: str, device: torch.device) -> Stream:
    return Stream(config.num_inputs, config.num_features, config.avg_active,
                  config.probability_spread(probabilities), config.magnitude_sigma, config.seed, device)


def run_recovery(config: RecoveryConfig, out: str | Path, progress: bool = True) -> list[RecoveryRow]:
    """Every unit not finished in OUT (resumable); returns the whole table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    # the stream's draws differ between a CPU's and a GPU's generator: a run goes on where it began
    record = {**asdict(config), "stream_device": device.type, "recipe_values": config.hyperparameters()}
    previous = runs.same_settings(out, COMMAND, record, "a recovery run")
    rows = read_table(out / TABLE, RecoveryRow) if previous is not None and (out / TABLE).is_file() else []
    if previous is None:
        runs.write_record(out, COMMAND, record)
    last = config.checkpoints()[-1]
    done = {unit_of(r) for r in rows if r.steps == last}
    todo = [u for u in units(config) if u not in done]
    if len(todo) < len(units(config)):
        log.info("%d of %d SAEs already trained in %s; training the rest", len(units(config)) - len(todo),
                 len(units(config)), out)
    bar = tqdm(total=len(todo) * last, unit="step", disable=not progress, smoothing=0.05)
    streams: dict[str, tuple[Stream, torch.Tensor]] = {}
    for unit in todo:
        if unit.probabilities not in streams:
            stream = stream_for(config, unit.probabilities, device)
            streams = {unit.probabilities: (stream, stream.held_out(config.held_out))}
        stream, held_out = streams[unit.probabilities]
        bar.set_description(f"{unit.probabilities} {unit.architecture} {unit.dictionary}")
        rows = train_unit(config, unit, stream, held_out, out, rows, bar)
    bar.close()
    return rows


# a curve has stopped growing when the last doubling of samples added fewer recovered features than this share of
# those already recovered (and than 1% of the features), and less than EV_GROWTH to the explained variance
CONVERGED_GROWTH = 0.05
EV_GROWTH = 0.005


def last_points(rows: list[RecoveryRow]) -> dict[Unit, tuple[RecoveryRow, RecoveryRow | None]]:
    """Each unit's last row and the one before it (None for a curve of one point)."""
    curves: dict[Unit, list[RecoveryRow]] = {}
    for row in sorted(rows, key=lambda r: r.steps):
        curves.setdefault(unit_of(row), []).append(row)
    return {unit: (curve[-1], curve[-2] if len(curve) > 1 else None) for unit, curve in curves.items()}


def still_growing(last: RecoveryRow, before: RecoveryRow | None, num_features: int) -> bool:
    if before is None:
        return True
    return (last.recovered - before.recovered >= max(CONVERGED_GROWTH * before.recovered, 0.01 * num_features)
            or last.explained_variance - before.explained_variance >= EV_GROWTH)


def recipe_text(config: RecoveryConfig) -> str:
    """The recipe and the values it trained with, in a few words."""
    h = config.hyperparameters()
    auxk = f"AuxK {h['auxk_alpha']:.3g} (k_aux {h['k_aux']}, dead after {h['dead_tokens']:,} samples)" \
        if h["auxk_alpha"] else "no AuxK"
    return (f"recipe {config.recipe}: batch {h['batch_size']:,}, lr {h['lr']:.3g}, Adam β2 {h['adam_beta2']:g}, "
            f"warm-up {h['warmup_steps']:,}, decay over the last {h['decay_steps']:,} steps, {auxk}")


def summary_markdown(rows: list[RecoveryRow], config: RecoveryConfig) -> str:
    """Korznikov et al.'s table from OUT: every unit at its last point, with the growth of its last doubling."""
    lines = [f"Independent-feature toy: n = {config.num_inputs}, F = {config.num_features:,}, m = "
             f"{config.avg_active:g}, {config.latents:,} latents at L0 {config.k}; {recipe_text(config)}, "
             f"seed {config.seed}. Recovered: best decoder cosine > "
             f"{config.recovery_threshold:g}.",
             "", "| p | architecture | dictionary | samples | explained variance | recovered | MMCS | L0 | dead | "
             "last doubling | training (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for unit, (last, before) in last_points(rows).items():
        added = "–" if before is None else f"{last.recovered - before.recovered:+,}"
        if unit.dictionary == "trained":
            added += " (still growing)" if still_growing(last, before, config.num_features) else " (stopped)"
        lines.append(f"| {unit.probabilities} | {unit.architecture} | {unit.dictionary} | {last.samples:,} | "
                     f"{last.explained_variance:.3f} | {last.recovered:,} ({last.recovered_fraction:.1%}) | "
                     f"{last.mmcs:.3f} | {last.l0:.1f} | {last.dead_fraction:.0%} | {added} | "
                     f"{last.elapsed:.0f} |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[RecoveryRow], config: RecoveryConfig, out: Path, formats: list[str],
                  plots: bool = True) -> list[Path]:
    """OUT/table.md and, unless `plots` is off, OUT/recovery.<format>."""
    from randsae.plots import plot_recovery

    written = [io.atomic_write(out / "table.md", lambda p: p.write_text(summary_markdown(rows, config)))]
    growing = [u for u, (last, before) in last_points(rows).items()
               if u.dictionary == "trained" and still_growing(last, before, config.num_features)]
    notes = [f"n = {config.num_inputs}, F = {config.num_features:,}, m = {config.avg_active:g}; "
             f"{config.latents:,} latents, L0 {config.k}; {recipe_text(config)}; recovered: "
             f"best decoder cosine > {config.recovery_threshold:g}."]
    if growing:
        notes.append("Still growing at the last point (trained): " + ", ".join(
            f"{u.architecture} ({u.probabilities} p)" for u in growing) + " — a larger --samples goes further.")
    if plots:
        path = plot_recovery(rows, config.num_features, out / "recovery", formats, notes)
        written += [path] if path is not None else []
    return written
