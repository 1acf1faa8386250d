"""What a study's report says first: which metrics separate trained from random here (compare/separation.csv) —
every verdict metric ranked by its standardised difference, with the verdict's counts — and the probes of every
arm side by side (compare/probing.csv: per layer, task family, probe and k, the mean held-out accuracy over the
family's tasks, with the input's ceiling and the token-only reference)."""

import math
from dataclasses import dataclass
from pathlib import Path

from randsae.study.verdict import CANNOT_TELL, DIFFERS, METRICS, NOT_COMPARABLE, SAME, VerdictRow
from randsae.tables import ProbeRow, Table, read_table, write_table

Z95 = 1.959964  # the normal quantile of a 95% interval


@dataclass
class SeparationRow(Table):
    """One verdict metric across the study's (layer, twin) comparisons (compare/separation.csv)."""
    metric: str
    label: str
    comparisons: int
    differs: int
    same: int
    cannot_tell: int
    not_comparable: int
    mean_z: float | None = None  # mean over the comparable cells of |trained − twin| / its standard error
    largest_z: float | None = None
    reasons: str = ""  # why not comparable, each reason once


def standardised(r: VerdictRow) -> float | None:
    """|trained − twin| over its standard error, read from the 95% interval's width; None where not compared."""
    if r.outcome == NOT_COMPARABLE or r.difference is None or r.low95 is None or r.high95 is None:
        return None
    if not (math.isfinite(r.low95) and math.isfinite(r.high95)):
        return None
    error = (r.high95 - r.low95) / (2 * Z95)
    return abs(r.difference) / error if error > 0 else (math.inf if r.difference else 0.0)


def separation(rows: list[VerdictRow]) -> list[SeparationRow]:
    """Every metric the verdict holds, by decreasing mean standardised difference (those never comparable
    last)."""
    out = []
    for metric in dict.fromkeys(r.metric for r in rows):
        cells = [r for r in rows if r.metric == metric]
        z = [v for r in cells if (v := standardised(r)) is not None]
        count = {o: sum(r.outcome == o for r in cells) for o in (DIFFERS, SAME, CANNOT_TELL, NOT_COMPARABLE)}
        reasons = "; ".join(dict.fromkeys(r.reason.split(" (")[0] for r in cells if r.outcome == NOT_COMPARABLE))
        out.append(SeparationRow(metric, METRICS[metric].label, len(cells), count[DIFFERS], count[SAME],
                                 count[CANNOT_TELL], count[NOT_COMPARABLE],
                                 sum(z) / len(z) if z else None, max(z) if z else None, reasons))
    return sorted(out, key=lambda s: (s.mean_z is None, -(s.mean_z or 0.0)))


SEPARATION_COLUMNS = ("metric", "mean |z|", "largest |z|", "differs", "same", "cannot tell", "not comparable")
SEPARATION_NOTE = ("z: the difference trained − twin over its standard error (the 95% interval's width / 3.92), "
                   "per layer and twin; the mean over the comparisons the verdict makes. A metric separates "
                   "trained from random where its z is large and its verdict says *differs*; *not comparable* "
                   "cells (an SAE below its baselines, a judge at chance, too few latents) count for nothing.")


def separation_grid(rows: list[SeparationRow]) -> tuple[list[str], list[list[str]]]:
    def z(value: float | None) -> str:
        return "–" if value is None else "∞" if math.isinf(value) else f"{value:.1f}"

    return list(SEPARATION_COLUMNS), [
        [s.label, z(s.mean_z), z(s.largest_z), str(s.differs), str(s.same), str(s.cannot_tell),
         f"{s.not_comparable}" + (f" ({s.reasons})" if s.reasons else "")] for s in rows]


def separation_sentence(rows: list[SeparationRow]) -> str:
    """What the ranking says, in one sentence."""
    separating = [s for s in rows if s.differs and s.mean_z is not None]
    never = [s.label for s in rows if s.mean_z is None]
    parts = []
    if separating:
        parts.append("trained and random separate most on " + ", ".join(
            f"{s.label} (differs in {s.differs} of {s.comparisons}, mean |z| {s.mean_z:.1f})"
            for s in separating[:3]))
    else:
        parts.append("no metric separates trained from random here")
    alike = [s.label for s in rows if s.mean_z is not None and not s.differs]
    if alike:
        parts.append("not on " + ", ".join(alike))
    if never:
        parts.append("never comparable: " + ", ".join(never))
    return parts[0][0].upper() + "; ".join(parts)[1:] + "."


# --- the probes of every arm, side by side -------------------------------------------------------------------

@dataclass
class ProbeSummaryRow(Table):
    """One arm's probes at one layer on one task family (compare/probing.csv): the mean held-out accuracy over
    the family's tasks."""
    layer: int
    arm: str
    family: str
    probe: str  # sae, input or tokens
    k: int  # 0: every dimension
    accuracy: float
    tasks: int
    # why the arm's SAE at this layer is not comparable in the verdict: "is below its baselines (…)", "is still
    # learning (…)" or "is overfitting (…)" (tables before the curves hold the baselines' reason alone)
    below_baseline: str = ""


def probe_summary(units: dict[str, Path], below: dict[tuple[str, int], str]) -> list[ProbeSummaryRow]:
    """{arm: its probing directory} → the family means of each arm's probing.csv; `below`: (arm, layer) → why
    its SAE is not comparable in the verdict, where it is not ("is below its baselines (…)", "is still learning
    (…)")."""
    out = []
    for arm, directory in units.items():
        rows = read_table(directory / "probing.csv", ProbeRow)
        groups: dict[tuple[int, str, str, int], list[float]] = {}
        for r in rows:
            groups.setdefault((r.layer, r.family, r.probe, r.k), []).append(r.accuracy)
        out += [ProbeSummaryRow(layer, arm, family, probe, k, sum(v) / len(v), len(v), below.get((arm, layer), ""))
                for (layer, family, probe, k), v in groups.items()]
    order = {"sae": 0, "input": 1, "tokens": 2}
    return sorted(out, key=lambda r: (r.layer, r.family, order.get(r.probe, 3), r.k))


def probe_label(probe: str, k: int) -> str:
    return {"sae": f"SAE, top-{k} latent{'s' if k > 1 else ''}", "input": "input, every dimension (ceiling)",
            "tokens": "the token id alone (reference)"}[probe]


Grid = tuple[int, list[str], list[list[str]], list[str]]  # layer, header, rows, notes


def probe_grids(rows: list[ProbeSummaryRow]) -> list[Grid]:
    """Per layer: (layer, header, rows, notes) — task family and probe as rows, arms as columns; an arm whose SAE
    the verdict does not compare (below its baselines, still learning, overfitting) marked ¹ in the header, the
    note saying why its numbers do not count."""
    out = []
    for layer in sorted({r.layer for r in rows}):
        part = [r for r in rows if r.layer == layer]
        arms = list(dict.fromkeys(r.arm for r in part))
        below = {r.arm: r.below_baseline for r in part if r.below_baseline}
        notes = [f"¹ {arm}: its SAE {why if why.startswith('is ') else f'is below its baselines ({why})'}: not "
                 "comparable in the verdict." for arm, why in below.items()]
        cells = {(r.family, r.probe, r.k, r.arm): r for r in part}
        lines = []
        for family, probe, k in dict.fromkeys((r.family, r.probe, r.k) for r in part):
            found = [cells.get((family, probe, k, a)) for a in arms]
            tasks = next((c.tasks for c in found if c is not None), 0)
            lines.append([f"{family} ({tasks} tasks)", probe_label(probe, k),
                          *[f"{c.accuracy:.3f}" if c is not None else "–" for c in found]])
        out.append((layer, ["tasks", "probe", *[f"{a} ¹" if a in below else a for a in arms]], lines, notes))
    return out


PROBE_NOTE = ("Held-out accuracy of SAEBench's k-sparse probes, averaged over each family's tasks (balanced: "
              "chance is 0.5). token: the word's first letter, capitalised, punctuation — the token decides them; "
              "context: the next token's class, inside brackets or quotes, seen earlier, late in the line — the "
              "context decides them; data: --probe-data. The input row is the ceiling (a probe on every "
              "dimension of the block output); the token row is what the token id alone predicts (each id's "
              "majority label in training; the same for every arm): a task it answers as well as the SAE does "
              "says nothing about what the network computed. Every arm is probed on the same tasks of the same "
              "text (docs/choices.md \"Probing and absorption\").")


def write_summaries(out: Path, rows: list[VerdictRow], probing: dict[str, Path],
                    below: dict[tuple[str, int], str]) -> None:
    """OUT/compare/separation.csv and, where arms were probed, OUT/compare/probing.csv (`below`: as
    `probe_summary`)."""
    write_table(out / "compare" / "separation.csv", separation(rows), SeparationRow)
    if probing:
        write_table(out / "compare" / "probing.csv", probe_summary(probing, below), ProbeSummaryRow)


def read_summaries(out: Path) -> tuple[list[SeparationRow], list[ProbeSummaryRow]]:
    found = []
    for name, kind in (("separation.csv", SeparationRow), ("probing.csv", ProbeSummaryRow)):
        path = out / "compare" / name
        found.append(read_table(path, kind) if path.is_file() else [])
    return found[0], found[1]
