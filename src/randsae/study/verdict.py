"""The study's verdict: per layer of the trained model, does each metric separate it from every random twin?"""

import math
from dataclasses import dataclass, field

from randsae.scorer_kinds import COMPARED, SCORER_KINDS
from randsae.tables import CompareRow, finite, judge_at_chance

# metric → (label, how it is compared): "relative" (one seed, no spread: > RELATIVE_MARGIN apart),
# "spread" (mean ± std over latents: standard errors), "interval" (95% bootstrap intervals, disjoint)
VERDICT_METRICS = {
    "explained_variance": ("explained variance", "relative"),
    "cosine_sim": ("cosine similarity", "relative"),
    "l1": ("L1 of latents", "relative"),
    "entropy_mean": ("token entropy", "spread"),
    **{f"auroc_{name}": (SCORER_KINDS[name].label, "interval") for name in COMPARED},
}
RELATIVE_MARGIN = 0.05


@dataclass
class Separation:
    metric: str
    trained: float | None
    twins: dict[str, float | None]
    separates: bool | None  # None: not counted (no data, a judge at chance, SAEs that did not train)
    why: str = ""
    excluded: dict[str, str] = field(default_factory=dict)  # twin → why it is not comparable (left out)


@dataclass
class LayerVerdict:
    layer: int
    separations: list[Separation] = field(default_factory=list)

    @property
    def separating(self) -> list[str]:
        return [VERDICT_METRICS[s.metric][0] for s in self.separations if s.separates]


def _number(row: CompareRow | None, column: str) -> float | None:
    return None if row is None else finite(row.get(column))


def separation(metric: str, trained: CompareRow, twins: dict[str, CompareRow]) -> Separation:
    """Does `metric` separate the trained row from every comparable twin's row (of one layer)? An SAE below its
    simplest baselines (explained variance under PCA-k's, or a CE loss score below 0) did not train: what it
    measures says nothing about its network, so such a twin is left out (named), and a trained arm below its
    baselines makes the whole comparison not comparable."""
    values = {variant: _number(row, metric) for variant, row in twins.items()}
    if trained.below_baseline:
        return Separation(metric, _number(trained, metric), values, None, "not comparable: the trained model's "
                          f"SAE is below its baselines ({trained.below_baseline})")
    excluded = {variant: row.below_baseline for variant, row in twins.items() if row.below_baseline}
    comparable = {variant: row for variant, row in twins.items() if variant not in excluded}
    if not comparable:
        return Separation(metric, _number(trained, metric), values, None, "not comparable: every twin's SAE is "
                          "below its baselines", excluded)
    result = _separation(metric, trained, comparable)
    result.twins, result.excluded = values, excluded
    if excluded:
        result.why += "; left out, their SAEs below their baselines: " + ", ".join(
            f"{variant} ({why})" for variant, why in excluded.items())
    return result


def _separation(metric: str, trained: CompareRow, twins: dict[str, CompareRow]) -> Separation:
    how = VERDICT_METRICS[metric][1]
    t = _number(trained, metric)
    values = {variant: _number(row, metric) for variant, row in twins.items()}
    if t is None or not values or any(v is None for v in values.values()):
        return Separation(metric, t, values, None, "not measured for every variant")
    if how == "interval":
        if any(judge_at_chance(r, metric) for r in (trained, *twins.values())):
            return Separation(metric, t, values, None, "judge at chance: not counted")
        low, high = _number(trained, metric.replace("auroc_", "auroc_low_")), \
            _number(trained, metric.replace("auroc_", "auroc_high_"))
        lows = [_number(r, metric.replace("auroc_", "auroc_low_")) or 1 for r in twins.values()]
        highs = [_number(r, metric.replace("auroc_", "auroc_high_")) or 0 for r in twins.values()]
        apart = all(h < (low or 0) or lo > (high or 1) for lo, h in zip(lows, highs, strict=True))
        return Separation(metric, t, values, apart, "95% intervals disjoint" if apart else "intervals overlap")
    if how == "spread":
        n_t = _number(trained, "sampled_latents") or 1
        se_t = (_number(trained, "entropy_std") or 0) / math.sqrt(n_t)
        apart = True
        for variant, row in twins.items():
            se = (_number(row, "entropy_std") or 0) / math.sqrt(_number(row, "sampled_latents") or 1)
            apart &= abs(t - values[variant]) > 2 * math.hypot(se_t, se)
        return Separation(metric, t, values, apart, "more than 2 standard errors apart" if apart else
                          "within 2 standard errors")
    apart = all(abs(t - v) > RELATIVE_MARGIN * max(abs(t), abs(v)) for v in values.values())
    return Separation(metric, t, values, apart, f"{'more' if apart else 'less'} than {RELATIVE_MARGIN:.0%} apart "
                      "(one seed: no error bars)")


def verdicts(rows: list[CompareRow]) -> list[LayerVerdict]:
    """A verdict per layer of the trained model: each metric's separation from every twin."""
    out = []
    for layer in sorted({r.layer for r in rows}):
        here = {r.variant: r for r in rows if r.layer == layer}
        if "trained" not in here or len(here) < 2:
            continue
        twins = {v: r for v, r in here.items() if v != "trained"}
        out.append(LayerVerdict(layer, [separation(m, here["trained"], twins) for m in VERDICT_METRICS]))
    return out
