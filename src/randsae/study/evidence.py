"""What the verdict weighs, read from a study's stages: per unit (variant, seed) and layer, every verdict metric's
value, and — in a one-seed study — its bootstrap draws: over whole held-out contexts for the reconstruction
metrics (`lm eval`'s OUT/chunks, added up per context: tokens of one context are not independent), over sampled
latents for entropy (`lm latents`) and each AUROC
(`lm autointerp`). Writes OUT/compare/verdict.csv and OUT/compare/verdict.md."""

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from randsae import io
from randsae.sae.dictionaries import split_arm
from randsae.scorer_kinds import SCORER_KINDS
from randsae.study.records import ordered
from randsae.study.verdict import (
    METRICS,
    NOT_COMPARABLE,
    Measure,
    VerdictRow,
    VerdictSettings,
    by_layer,
    verdict_rows,
)
from randsae.tables import Table, write_table

log = logging.getLogger(__name__)

RESAMPLES = 1000
RECONSTRUCTION = ("explained_variance", "cosine_sim", "l1")


def unfinished_layers(sae_dir: Path, delta: float) -> dict[int, str]:
    """{layer: "still learning (…)" or "overfitting (…)"} of an SAE run whose learning curve (OUT/curve.csv) says
    so; a run without a curve (SAEs randsae did not train) is not refused."""
    from randsae.training.curves import run_convergence

    return {layer: f"{state.state} ({state.reason})" for layer, state in run_convergence(sae_dir, delta).items()
            if not state.finished}


def study_measures(study) -> list[Measure]:
    """Every unit's measures, in the units' order: each registered stage's that has `measures` and is done for
    the unit, with each layer's place against its baselines (said by one stage, the eval's) and its learning
    curve's state given to all of that layer's; the bootstrap's draws in a one-seed study."""
    readers = [(s.name, s.measures) for s in ordered() if s.measures is not None]
    done = {name: set(study.finished(name)) for name, _ in readers}
    delta = study.settings.verdict.converged_delta
    draws, measures = study.settings.seeds == 1, []
    for unit in study.units():
        found = [m for name, read in readers if unit in done[name] for m in read(study, unit, draws)]
        if not found:
            continue
        flags = {m.layer: m.below_baseline for m in found if m.below_baseline}
        unfinished = unfinished_layers(study.directory(unit, "sae"), delta)
        for m in found:
            m.below_baseline, m.unfinished = flags.get(m.layer, ""), unfinished.get(m.layer, "")
        measures += found
    return measures


def write_verdict(study) -> list[VerdictRow]:
    """OUT/compare/verdict.csv (a row per layer, metric and twin) and verdict.md (the table and a sentence per
    layer)."""
    settings = study.settings.verdict
    rows = verdict_rows(study_measures(study), settings)
    out = study.out / "compare"
    write_table(out / "verdict.csv", rows, VerdictRow)
    shares = dictionary_shares(rows)
    if shares:
        write_table(out / "dictionaries.csv", shares, ShareRow)
    io.atomic_write(out / "verdict.md", lambda p: p.write_text(verdict_markdown(rows, settings)))
    if rows:
        draw_verdict(rows, out / "verdict.png", study.settings.model)
    log.info("wrote %s", out / "verdict.csv")
    return rows


def verdict_title(model: str, rows: list[VerdictRow]) -> str:
    """What a verdict figure is of: the model, its blocks, the seeds."""
    layers = sorted({r.layer for r in rows})
    seeds = max((r.seeds for r in rows), default=1)
    return (f"Would a random network give these SAE results too? {model}, block{'s' if len(layers) > 1 else ''} "
            f"{', '.join(map(str, layers))}, {seeds} seed{'s' if seeds > 1 else ''}")


def draw_verdict(rows: list[VerdictRow], path: Path, model: str) -> Path:
    """The verdict at a glance as a figure (the report's matrices; the README's picture of the demo's)."""
    from randsae.plots import plot_verdict_matrix

    basis = "; ".join(dict.fromkeys(r.basis for r in rows if r.basis))
    matrices = verdict_matrices(rows)
    marks = shared_reasons(matrices)
    return plot_verdict_matrix(matrices, path, marks=marks, title=verdict_title(model, rows),
                               notes=[*reason_notes(marks), *([f"intervals: {basis}"] if basis else [])])


def _number(value: float | None, signed: bool = False, scale: float | None = None) -> str:
    """Three decimals for values of order 1, one for larger ones (an L1 of 228); `scale` picks for a group."""
    if value is None or not math.isfinite(value):
        return "–"
    digits = 3 if abs(scale if scale is not None else value) < 10 else 1
    return f"{value:{'+' if signed else ''}.{digits}f}"


def interval(value: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    shown = _number(value, signed, value)
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return shown
    return f"{shown} [{_number(low, signed, value)}, {_number(high, signed, value)}]"


VERDICT_COLUMNS = ("layer", "metric", "twin", "trained [95% CI]", "twin [95% CI]", "trained − twin [95% CI]",
                   "90% CI", "δ", "verdict", "over")


def verdict_cells(r: VerdictRow) -> list[str]:
    """One verdict row as the report's table shows it."""
    ci90 = "–" if r.low90 is None else (f"[{_number(r.low90, True, r.difference)}, "
                                        f"{_number(r.high90, True, r.difference)}]")
    outcome = r.outcome if r.outcome != "not comparable" else f"not comparable: {r.reason}"
    if r.outcome == "same":
        outcome = f"the same within ±{_number(r.delta)}"
    return [str(r.layer), METRICS[r.metric].label, r.twin, interval(r.trained, r.trained_low, r.trained_high),
            interval(r.twin_value, r.twin_low, r.twin_high),
            interval(r.difference, r.low95, r.high95, signed=True),
            ci90, _number(r.delta), outcome, r.basis or "–"]


VERDICT_NOTE = ("Each row compares the trained model's SAEs with one random twin's on one metric, from the "
                "interval of the difference (trained − twin): *differs* when its 95% interval excludes 0 and it "
                "exceeds δ; *the same within ±δ* when its 90% interval lies inside ±δ (two one-sided tests); "
                "*cannot tell* otherwise. *Not comparable* names why: an SAE below its simplest baselines (its "
                "explained variance under that of PCA-k fitted on the same training tokens, or a CE loss score "
                "below 0), a judge at chance on that scorer's known-answer set, or too few scored latents. The "
                "intervals are over seeds (Student's t, clipped to the metric's range), or with one seed a "
                "bootstrap over whole held-out contexts (reconstruction), latents (entropy, AUROC), tasks "
                "(k-sparse probing at the smallest k, paired: every arm is probed on the same tasks) or "
                "letters (absorption), as the last column says. The CE loss score is left out: it means little "
                "for a random model (docs/choices.md).")


# The verdict at a glance: per layer, metrics as rows and twins as columns, each cell its outcome and difference

@dataclass
class MatrixCell:
    outcome: str
    text: str  # the difference with its 95% interval, or why not comparable


def matrix_cell(r: VerdictRow) -> MatrixCell:
    if r.outcome == NOT_COMPARABLE:
        return MatrixCell(r.outcome, r.reason)
    shown = interval(r.difference, r.low95, r.high95, signed=True)
    if r.outcome == "same":
        shown += f" (±{_number(r.delta)})"
    return MatrixCell(r.outcome, shown)


def verdict_matrices(rows: list[VerdictRow]) -> list[tuple[int, list[str], list[str], list[list[MatrixCell]]]]:
    """Per layer: (layer, metric labels, twins, cells[metric][twin]) — the metrics each with a row, in the
    verdict's order; a cell the verdict has no row for is not comparable, "not measured"."""
    out = []
    for layer in by_layer(rows):
        metrics = list(dict.fromkeys(r.metric for r in layer.rows))
        twins = list(dict.fromkeys(r.twin for r in layer.rows))
        found = {(r.metric, r.twin): r for r in layer.rows}
        cells = [[matrix_cell(found[m, t]) if (m, t) in found else MatrixCell(NOT_COMPARABLE, "not measured")
                  for t in twins] for m in metrics]
        out.append((layer.layer, [METRICS[m].label for m in metrics], twins, cells))
    return out


def shared_reasons(matrices: list[tuple[int, list[str], list[str], list[list[MatrixCell]]]],
                   fewest: int = 3) -> dict[str, str]:
    """{reason: mark} of the not-comparable reasons that `fewest` or more cells share, most shared first: said
    once under a verdict matrix as (a), (b), …, and only marked in their cells."""
    counts = Counter(c.text for m in matrices for row in m[3] for c in row if c.outcome == NOT_COMPARABLE)
    shared = [text for text, n in counts.most_common() if n >= fewest][:26]
    return {text: f"({chr(ord('a') + i)})" for i, text in enumerate(shared)}


def reason_notes(marks: dict[str, str]) -> list[str]:
    return [f"{mark} {NOT_COMPARABLE}: {text}" for text, mark in marks.items()]


def matrix_markdown(rows: list[VerdictRow]) -> list[str]:
    lines = []
    matrices = verdict_matrices(rows)
    marks = shared_reasons(matrices)
    for layer, metrics, twins, cells in matrices:
        lines += [f"**Layer {layer}** (trained − twin, 95% interval)", "",
                  "| metric | " + " | ".join(twins) + " |", "|" + "---|" * (len(twins) + 1)]
        lines += ["| " + label + " | " + " | ".join(f"{c.outcome}: {marks.get(c.text, c.text)}" for c in row)
                  + " |" for label, row in zip(metrics, cells, strict=True)]
        lines.append("")
    return lines + [f"- {note}" for note in reason_notes(marks)] + ([""] if marks else [])


def verdict_markdown(rows: list[VerdictRow], settings: VerdictSettings) -> str:
    lines = ["## Verdict", ""]
    for layer in by_layer(rows):
        lines.append(f"- **Layer {layer.layer}**: {layer.sentence()}")
    lines += ["", *matrix_markdown(rows), "### Every comparison", ""]
    lines += ["| " + " | ".join(VERDICT_COLUMNS) + " |", "|" + "---|" * len(VERDICT_COLUMNS)]
    lines += ["| " + " | ".join(verdict_cells(r)) + " |" for r in rows]
    lines += ["", verdict_note(settings)]
    shares = dictionary_shares(rows)
    if shares:
        lines += ["", "## Random dictionaries", "", *[f"- {s}" for s in share_sentences(shares)], "",
                  "| " + " | ".join(SHARE_COLUMNS) + " |", "|" + "---|" * len(SHARE_COLUMNS),
                  *["| " + " | ".join(share_cells(s)) + " |" for s in shares], "", SHARE_NOTE]
    return "\n".join(lines) + "\n"


# How much of its model's trained-dictionary SAE a random dictionary reaches, on the metrics the question is about
SHARE_METRICS = ("explained_variance", "cosine_sim", "entropy_mean", SCORER_KINDS["tokens"].column)
SHARE_COLUMNS = ("layer", "model", "dictionary", "metric", "random dictionary", "trained dictionary", "share",
                 "qualified by")
SHARE_NOTE = ("A random-dictionary arm is an SAE on the same activations, trained with the same data order, seed "
              "and schedule as the model's own SAE, whose decoder or encoder stayed at (or near) a random draw "
              "(docs/choices.md \"Random dictionaries\"). Share: its value over the trained dictionary's, mean "
              "over seeds (none where either is not above zero); \"qualified by\": why the verdict does not count "
              "that comparison (an SAE below its baselines). The verdict table above gives both arms' intervals.")


@dataclass
class ShareRow(Table):
    """How much of its model's trained-dictionary result one random dictionary reaches, on one layer and metric
    (compare/dictionaries.csv)."""
    layer: int
    model: str  # the variant whose activations both arms read
    dictionary: str
    metric: str
    value: float
    trained_value: float
    share: float | None = None  # value / trained_value where both are above zero
    qualifier: str = ""  # the verdict's reason when it does not count the comparison


def dictionary_shares(rows: list[VerdictRow]) -> list[ShareRow]:
    """A `ShareRow` for every random-dictionary arm in the verdict's rows, on `SHARE_METRICS`, in layer, arm and
    metric order."""
    values: dict[tuple[int, str, str], float | None] = {}
    qualifiers: dict[tuple[int, str, str], str] = {}
    for r in rows:
        values[r.layer, r.metric, "trained"] = r.trained
        values[r.layer, r.metric, r.twin] = r.twin_value
        qualifiers[r.layer, r.metric, r.twin] = r.reason if r.outcome == NOT_COMPARABLE else ""
    shares = []
    for (layer, metric, arm), value in values.items():
        variant, dictionary = split_arm(arm)
        reference = values.get((layer, metric, variant))
        if dictionary == "trained" or metric not in SHARE_METRICS or value is None or reference is None:
            continue
        share = value / reference if value > 0 and reference > 0 else None
        shares.append(ShareRow(layer, variant, dictionary, metric, value, reference, share,
                               qualifiers[layer, metric, arm]))
    return sorted(shares, key=lambda s: (s.layer, s.model, s.dictionary, SHARE_METRICS.index(s.metric)))


def share_sentences(shares: list[ShareRow]) -> list[str]:
    """One sentence per layer, model and random dictionary, its metrics in `SHARE_METRICS` order."""
    groups: dict[tuple[int, str, str], list[ShareRow]] = {}
    for s in shares:
        groups.setdefault((s.layer, s.model, s.dictionary), []).append(s)
    sentences = []
    for (layer, variant, dictionary), group in groups.items():
        parts = []
        for s in group:
            label = METRICS[s.metric].label
            part = (f"{s.share:.2f} of its {label}" if s.share is not None else
                    f"{label} {_number(s.value)} against {_number(s.trained_value)} (no share below zero)")
            parts.append(part)
        model = "the trained model" if variant == "trained" else f"the {variant} twin"
        qualifiers = "; ".join(dict.fromkeys(s.qualifier for s in group if s.qualifier))
        sentences.append(f"Layer {layer}, {model}: {dictionary} reaches " + ", ".join(parts[:-1]) +
                         (" and " if len(parts) > 1 else "") + parts[-1] + " (against its trained dictionary)" +
                         (f" — not counted by the verdict: {qualifiers}." if qualifiers else "."))
    return sentences


def share_cells(s: ShareRow) -> list[str]:
    return [str(s.layer), s.model, s.dictionary, METRICS[s.metric].label, _number(s.value),
            _number(s.trained_value), f"{s.share:.2f}" if s.share is not None else "–", s.qualifier or "–"]


def verdict_note(settings: VerdictSettings) -> str:
    """What the verdict's words mean, with this study's δ and latent minimum."""
    deltas = ", ".join(f"{name.removeprefix('delta_').replace('_', ' ')} {value:g}" for name, value
                       in vars(settings).items() if name.startswith("delta_"))
    return (VERDICT_NOTE + f" δ: {deltas} (L1's as a fraction of the trained arm's mean); at least "
            f"{settings.min_latents} scored latents per arm.")


def read_verdict(out: Path) -> list[VerdictRow]:
    from randsae.tables import read_table

    path = out / "compare" / "verdict.csv"
    return read_table(path, VerdictRow) if path.is_file() else []


if __name__ == "__main__":  # python -m randsae.study.evidence OUT PNG: a study's verdict matrix drawn at PNG
    import sys

    study_out, figure = (Path(a) for a in sys.argv[1:3])
    found = read_verdict(study_out)
    if not found:
        sys.exit(f"{study_out / 'compare' / 'verdict.csv'} holds no verdict; run the study first (make demo).")
    print(draw_verdict(found, figure, io.read_json(study_out / "config.json", {"settings": dict})["settings"]
                       .get("model", "the model")))
