"""The study's verdict: per (layer, metric, random twin), what the interval of the difference trained − twin says.

Each arm (a variant at one layer) is measured once per seed. With two or more seeds the difference's interval is
Welch's over seeds; with one seed a bootstrap stands in — over whole held-out contexts for the reconstruction
metrics (paired: both arms are measured on the same contexts), over latents for entropy and AUROC — and the table
says which. Then, in this order (docs/choices.md "The verdict"):

Probing (each task family's mean k-sparse accuracy at the smallest k) is bootstrapped over its tasks, paired (every
arm is probed on the same tasks of the same text), and absorption over letters.

- *not comparable*: an arm's SAE is below its simplest baselines (its explained variance below that of PCA-k
  fitted on the same training tokens, or CE < 0: it learnt less than PCA would have, so it says little about its
  network), the judge is at chance on that scorer, an arm has fewer scored latents than
  `min_latents`, or the metric was not measured — the reason is named;
- *differs*: the 95% interval excludes 0 and the difference exceeds δ (the smallest effect worth the name);
- *the same within ±δ*: the 90% interval lies inside ±δ (two one-sided tests at 5% each);
- *cannot tell*: neither.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from randsae.metrics import percentile_interval, welch_interval
from randsae.scorer_kinds import COMPARED, SCORER_KINDS
from randsae.settings import setting
from randsae.tables import Table

DIFFERS, SAME, CANNOT_TELL, NOT_COMPARABLE = "differs", "same", "cannot tell", "not comparable"
OUTCOMES = (DIFFERS, SAME, CANNOT_TELL, NOT_COMPARABLE)


@dataclass
class VerdictSettings:
    """The smallest differences that count (δ), per metric, and the fewest latents an arm needs."""
    delta_auroc: float = setting(0.05, help="δ for every AUROC: a difference within ±δ is 'the same'")
    delta_accuracy: float = setting(0.05, help="δ for the intruder's accuracy")
    delta_explained_variance: float = setting(0.02, help="δ for explained variance")
    delta_cosine: float = setting(0.02, help="δ for the cosine similarity of input and reconstruction")
    delta_l1: float = setting(0.10, help="δ for the latents' L1, as a fraction of the trained arm's mean")
    delta_entropy: float = setting(0.25, help="δ for the latents' token entropy (nats)")
    delta_probing: float = setting(0.02, help="δ for a task family's mean k-sparse probing accuracy")
    delta_absorption: float = setting(0.05, help="δ for the mean first-letter absorption fraction")
    min_latents: int = setting(20, help="an arm with fewer scored latents gives no verdict on entropy or AUROC")
    converged_delta: float = setting(0.01, help="an SAE whose held-out explained variance rose by more than this "
                                                "over its learning curve's last doubling is still learning: its "
                                                "comparisons are not comparable")

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        self.validate()

    def validate(self) -> None:
        from randsae.errors import BadInput

        for name, value in vars(self).items():
            if not (value > 0 and math.isfinite(value)):
                raise BadInput(f"--{name.replace('_', '-')} must be a positive number, not {value}.")
        if self.converged_delta >= 1:
            raise BadInput(f"--converged-delta must lie in (0, 1) (a change of explained variance), not "
                           f"{self.converged_delta}.")
        for metric in METRICS.values():  # a δ as wide as a bounded metric's range calls every difference the same
            value, width = getattr(self, metric.delta), metric.high - metric.low
            if not metric.relative and math.isfinite(width) and value >= width:
                raise BadInput(f"--{metric.delta.replace('_', '-')} {value} covers the whole range of "
                               f"{metric.label} ({metric.low:g} … {metric.high:g}); give a δ below {width:g}.")


@dataclass(frozen=True)
class Metric:
    name: str  # the CompareRow column
    label: str
    delta: str  # the VerdictSettings field holding its δ
    over: str  # what a one-seed bootstrap resamples: "held-out contexts" or "latents"
    relative: bool = False  # δ is a fraction of the trained arm's mean
    scorer: str | None = None  # an AUROC: the scorer whose judge must not be at chance
    low: float = -math.inf  # the metric's range: an interval is clipped to it (docs/choices.md "The verdict")
    high: float = math.inf
    optional: bool = False  # a row only where an arm measured it (a stage --scorers may leave out)
    fewest: int = 0  # the units (letters) an arm needs for a verdict

    def clip(self, interval: tuple[float, float], difference: bool = False) -> tuple[float, float]:
        """An interval of the metric (or of a difference of two arms' values) kept inside its range."""
        low, high = (self.low - self.high, self.high - self.low) if difference else (self.low, self.high)
        return (float(np.clip(interval[0], low, high)) if math.isfinite(interval[0]) else interval[0],
                float(np.clip(interval[1], low, high)) if math.isfinite(interval[1]) else interval[1])


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("explained_variance", "explained variance", "delta_explained_variance", "held-out contexts", high=1),
    Metric("cosine_sim", "cosine similarity", "delta_cosine", "held-out contexts", low=-1, high=1),
    Metric("l1", "L1 of latents", "delta_l1", "held-out contexts", relative=True, low=0),
    Metric("entropy_mean", "token entropy", "delta_entropy", "latents", low=0),
    *(Metric(SCORER_KINDS[name].column, SCORER_KINDS[name].label, f"delta_{SCORER_KINDS[name].measure}",
             "latents", scorer=name, low=0, high=1) for name in COMPARED),
    *(Metric(f"probing_{family}", f"{family}-task probing", "delta_probing", "tasks", low=0, high=1,
             optional=True) for family in ("token", "context", "data")),
    Metric("absorption", "first-letter absorption", "delta_absorption", "letters", low=0, high=1, optional=True,
           fewest=5),
)}


@dataclass
class Measure:
    """One arm (variant, seed) at one layer on one metric: its value, its bootstrap draws (one-seed studies), and
    what decides whether it may be compared at all."""
    variant: str
    seed: int
    layer: int
    metric: str
    value: float | None
    draws: np.ndarray | None = None
    latents: int | None = None  # scored latents (entropy, AUROC), letters (absorption)
    below_baseline: str = ""
    judge_at_chance: bool = False
    unmeasured: str = ""  # why the value is None, where the stage said
    unfinished: str = ""  # why its SAE has not finished learning (still learning, overfitting), from its curve


@dataclass
class VerdictRow(Table):
    """One (layer, metric, twin) of the verdict (compare/verdict.csv)."""
    layer: int
    metric: str
    twin: str
    outcome: str  # differs, same, cannot tell or not comparable
    trained: float | None = None  # the arm's mean over seeds
    trained_low: float | None = None  # its 95% interval (over seeds, or the bootstrap's)
    trained_high: float | None = None
    twin_value: float | None = None
    twin_low: float | None = None
    twin_high: float | None = None
    difference: float | None = None  # trained − twin
    low95: float | None = None
    high95: float | None = None
    low90: float | None = None  # the two one-sided tests' interval
    high90: float | None = None
    delta: float | None = None
    seeds: int = 1  # the fewer of the two arms'
    basis: str = ""  # what the intervals are over
    reason: str = ""  # why not comparable, or what the intervals said


def _arm_interval(metric: Metric, measures: list[Measure]) -> tuple[float, float, float]:
    values = np.array([m.value for m in measures], dtype=np.float64)
    mean = float(values.mean())
    if len(values) > 1:
        return mean, *metric.clip(welch_interval(values, np.zeros(1), 0.95))
    draws = measures[0].draws
    return (mean, *percentile_interval(draws)) if draws is not None and len(draws) else (mean, math.nan, math.nan)


def seeds_basis(trained: int, twin: int) -> str:
    """What an interval over seeds is over, in words."""
    if trained == twin:
        return f"{trained} seeds per arm"
    return f"{trained} seed{'s' if trained > 1 else ''} of the trained arm, {twin} of the twin"


def _measured(arm: list[Measure]) -> bool:
    return bool(arm) and all(m.value is not None and math.isfinite(m.value) for m in arm)


def _why_not(metric: Metric, trained: list[Measure], twin: list[Measure], settings: VerdictSettings) -> str:
    if not (_measured(trained) and _measured(twin)):
        said = next((m.unmeasured + (" (the trained arm)" if m.variant == "trained" else "")
                     for m in (*trained, *twin) if m.unmeasured), "")
        return said or "not measured for every seed of both arms"
    for who, arm in (("the trained model's", trained), (f"{twin[0].variant}'s", twin)):
        below = next((m.below_baseline for m in arm if m.below_baseline), "")
        if below:
            return f"{who} SAE is below its baselines ({below})"
    for who, arm in (("the trained model's", trained), (f"{twin[0].variant}'s", twin)):
        unfinished = next((m.unfinished for m in arm if m.unfinished), "")
        if unfinished:
            return f"{who} SAE is {unfinished}"
    if metric.scorer is not None and any(m.judge_at_chance for m in (*trained, *twin)):
        return f"the judge is at chance on {metric.scorer}"
    if metric.over == "latents":
        fewest = min(m.latents or 0 for m in (*trained, *twin))
        if fewest < settings.min_latents:
            return f"{fewest} scored latents in an arm, fewer than {settings.min_latents}"
    if metric.fewest:
        fewest = min(m.latents or 0 for m in (*trained, *twin))
        if fewest < metric.fewest:
            return f"{fewest} {metric.over} in an arm, fewer than {metric.fewest}"
    return ""


def compare_arms(metric: Metric, trained: list[Measure], twin: list[Measure], settings: VerdictSettings,
                 layer: int, name: str) -> VerdictRow:
    """The verdict on one metric between the trained arm's and one twin's measures (one per seed)."""
    seeds = min(len(trained), len(twin))
    over_seeds = max(len(trained), len(twin)) > 1
    basis = seeds_basis(len(trained), len(twin)) if over_seeds else f"1 seed: bootstrap over {metric.over}"
    row = VerdictRow(layer, metric.name, name, NOT_COMPARABLE, seeds=seeds, basis=basis)
    if _measured(trained):  # shown even where not comparable
        row.trained, row.trained_low, row.trained_high = _arm_interval(metric, trained)
    if _measured(twin):
        row.twin_value, row.twin_low, row.twin_high = _arm_interval(metric, twin)
    why = _why_not(metric, trained, twin, settings)
    if why:
        row.reason = why
        return row
    assert row.trained is not None and row.twin_value is not None  # both measured: _why_not said nothing
    row.delta = delta = getattr(settings, metric.delta) * (abs(row.trained) if metric.relative else 1)
    row.difference = row.trained - row.twin_value
    if over_seeds:
        a, b = (np.array([m.value for m in arm], dtype=float) for arm in (trained, twin))
        (row.low95, row.high95), (row.low90, row.high90) = (
            metric.clip(welch_interval(a, b, level), difference=True) for level in (0.95, 0.90))
    else:
        t, w = trained[0].draws, twin[0].draws
        if t is None or w is None or not len(t) or not len(w):
            row.outcome, row.reason = CANNOT_TELL, "one seed and nothing to resample"
            return row
        n = min(len(t), len(w))
        difference = t[:n] - w[:n]  # the same resample index: paired where both arms saw the same units
        (row.low95, row.high95), (row.low90, row.high90) = (percentile_interval(difference, level)
                                                            for level in (0.95, 0.90))
    row.outcome, row.reason = decide(row.difference, (row.low95, row.high95), (row.low90, row.high90), delta)
    return row


def decide(difference: float, ci95: tuple[float, float], ci90: tuple[float, float],
           delta: float) -> tuple[str, str]:
    """differs / same / cannot tell, and the reason, from the difference's intervals and δ."""
    excludes_zero = ci95[0] > 0 or ci95[1] < 0
    if excludes_zero and abs(difference) > delta:
        return DIFFERS, "95% interval excludes 0 and |difference| > δ"
    if -delta < ci90[0] and ci90[1] < delta:
        return SAME, "90% interval inside ±δ"
    if excludes_zero:
        return CANNOT_TELL, "95% interval excludes 0, but |difference| ≤ δ and the 90% interval leaves ±δ"
    return CANNOT_TELL, "the interval holds 0 and leaves ±δ"


def verdict_rows(measures: list[Measure], settings: VerdictSettings) -> list[VerdictRow]:
    """Every (layer, metric, twin) the measures hold, in order."""
    arms: dict[tuple[int, str, str], list[Measure]] = {}
    for m in measures:
        arms.setdefault((m.layer, m.metric, m.variant), []).append(m)
    rows = []
    for layer in sorted({m.layer for m in measures}):
        twins = list(dict.fromkeys(m.variant for m in measures if m.layer == layer and m.variant != "trained"))
        for metric in METRICS.values():
            trained = arms.get((layer, metric.name, "trained"), [])
            if metric.optional and not any((layer, metric.name, v) in arms for v in ("trained", *twins)):
                continue  # not asked for (--scorers, --probe-data)
            for twin in twins:
                rows.append(compare_arms(metric, trained, arms.get((layer, metric.name, twin), []), settings,
                                         layer, twin))
    return rows


@dataclass
class LayerVerdict:
    layer: int
    rows: list[VerdictRow] = field(default_factory=list)

    def sentence(self) -> str:
        """"a random network gives the same result on …; a different one on …; cannot tell on …; not
        comparable: …" — each metric with the twins it holds for (every twin: no list), each reason once, and a
        twin not comparable on every metric for one reason said as such."""
        twins = list(dict.fromkeys(r.twin for r in self.rows))
        metrics = list(dict.fromkeys(r.metric for r in self.rows))
        counted = [t for t in twins if any(r.twin == t and r.outcome != NOT_COMPARABLE for r in self.rows)]

        def listed(rows: list[VerdictRow]) -> str:  # no twins named where it holds for all that count
            by_metric: dict[str, list[str]] = {}
            for r in rows:
                by_metric.setdefault(METRICS[r.metric].label, []).append(r.twin)
            return ", ".join(label + ("" if held in (twins, counted) else f" ({', '.join(held)})")
                             for label, held in by_metric.items())

        parts = []
        heads = ((SAME, "a random network gives the same result on ", None),
                 (DIFFERS, "a random network gives a different result on ", "a different one on "),
                 (CANNOT_TELL, "cannot tell on ", None))
        for outcome, first, then in heads:
            rows = [r for r in self.rows if r.outcome == outcome]
            if rows:
                parts.append((then if parts and then else first) + listed(rows))
        for reason in dict.fromkeys(r.reason for r in self.rows if r.outcome == NOT_COMPARABLE):
            rows = [r for r in self.rows if r.outcome == NOT_COMPARABLE and r.reason == reason]
            whole = [t for t in twins if sum(r.twin == t for r in rows) == len(metrics)]  # every metric of a twin
            if len(whole) == len(twins):
                parts.append(f"not comparable at all: {reason}")
                continue
            if whole:
                parts.append(f"not comparable on any metric of {', '.join(whole)}: {reason}")
            rest = [r for r in rows if r.twin not in whole]
            if rest:
                parts.append(f"not comparable on {listed(rest)}: {reason}")
        return "; ".join(parts) + "."


def by_layer(rows: list[VerdictRow]) -> list[LayerVerdict]:
    layers: dict[int, LayerVerdict] = {}
    for r in rows:
        layers.setdefault(r.layer, LayerVerdict(r.layer)).rows.append(r)
    return [layers[k] for k in sorted(layers)]
