"""Learning curves: an SAE measured at doubling amounts of training, on fixed samples, while it trains.

The points are the steps after which the curve is measured: the run's last step and, halving back from it, up to
`points` steps in all (distinct, ≥ 1) — so the samples or tokens seen double from one point to the next and the
last point is the run's end. At each point the SAE is measured as it is used (its inference form) on a fixed
held-out sample and a fixed sample of what it trained on: explained variance, L0 and the latents that fired on no
held-out token. `randsae recovery` and `lm train` draw their curves with these functions.

A curve says whether an SAE has finished learning: `still_learning` when the held-out explained variance rose by
more than δ over the last doubling, `overfitting` when it fell while the training sample's rose.
"""

import math
from dataclasses import dataclass

import torch


def doubling_steps(last: int, points: int) -> list[int]:
    """The steps after which a curve of `points` points over a run of `last` steps is measured: the last step,
    and halving back from it (distinct, at least 1), ascending."""
    return sorted({max(1, last >> j) for j in range(min(points, last.bit_length() + 1))})


@torch.no_grad()
def reconstruction(sae, x: torch.Tensor, chunk: int = 4096) -> dict:
    """The SAE as it is used (`sae.inference()`) on `x` (tokens × d): explained variance (1 − Σ‖x̂ − x‖² /
    Σ‖x − mean x‖²), L0 (active latents per token) and the share of latents active on none of them."""
    model = sae.inference().to(x.device)
    fired = torch.zeros(sae.num_latents, dtype=torch.bool, device=x.device)
    squared_error, active = 0.0, 0
    for part in x.split(chunk):
        values, indices = model.encode(part)
        squared_error += float((model.decode(values, indices) - part).square().sum())
        on = values > 0
        active += int(on.sum())
        fired[indices[on]] = True
    variance = float((x - x.mean(0)).square().sum())
    return {"explained_variance": 1 - squared_error / max(variance, 1e-30), "l0": active / max(1, len(x)),
            "dead_fraction": float((~fired).float().mean())}


# the δ of `still_learning`: a held-out explained variance that rose by more than this over the last doubling
CONVERGED_DELTA = 0.01


@dataclass(frozen=True)
class Convergence:
    """What a curve's last doubling says: `state` is converged, still learning, overfitting or no curve."""

    state: str
    reason: str

    @property
    def finished(self) -> bool:
        return self.state in ("converged", "no curve")


def convergence(points: list[tuple[int, float, float | None]], delta: float = CONVERGED_DELTA) -> Convergence:
    """The state of a curve given as (tokens, held-out EV, training-sample EV or None) per point, ascending: its
    last two points decide. No curve (a released SAE) or one point says so and is not refused."""
    if len(points) < 2:
        return Convergence("no curve", "no learning curve was recorded (an SAE randsae did not train, or a curve "
                                       "of one point)")
    (before, ev_before, train_before), (last, ev_last, train_last) = points[-2], points[-1]
    rise = ev_last - ev_before
    if train_before is not None and train_last is not None and rise < 0 and train_last > train_before:
        return Convergence("overfitting", f"held-out EV fell {ev_before:.3f} → {ev_last:.3f} while training "
                                          f"EV rose {train_before:.3f} → {train_last:.3f} from {before:,} to "
                                          f"{last:,} tokens")
    if rise > delta:
        return Convergence("still learning", f"held-out EV rose {ev_before:.3f} → {ev_last:.3f} (+{rise:.3f} > δ "
                                             f"{delta:g}) from {before:,} to {last:,} tokens")
    return Convergence("converged", f"held-out EV {ev_before:.3f} → {ev_last:.3f} over the last doubling")


def run_convergence(sae_dir, delta: float = CONVERGED_DELTA) -> dict[int, Convergence]:
    """{layer: its curve's convergence} of an SAE run's OUT/curve.csv ({} for a run without one)."""
    from pathlib import Path

    from randsae.tables import CurveRow, read_table

    path = Path(sae_dir) / "curve.csv"
    rows = sorted(read_table(path, CurveRow), key=lambda r: r.steps) if path.is_file() else []
    return {layer: convergence([(r.tokens, r.held_out_explained_variance, r.train_explained_variance)
                                for r in rows if r.layer == layer], delta)
            for layer in sorted({r.layer for r in rows})}


def check_delta(delta: float) -> None:
    from randsae.errors import BadInput

    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 < delta < 1):
        raise BadInput(f"converged_delta must lie in (0, 1) (a change of explained variance), not {delta!r}.")
