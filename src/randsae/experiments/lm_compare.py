"""`randsae lm compare`: the results of several `lm eval` runs (and, with --latents, the token-distribution
entropy of several `lm latents` runs) as one table, one summary and one figure."""

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from randsae import io
from randsae import runs as runs_contract
from randsae.errors import BadInput
from randsae.experiments.lm_eval import generalises_poorly, read_eval_rows
from randsae.lm.latents import LatentSummary, entropy_by_layer, open_latents
from randsae.plots import plot_entropy_auroc, plot_entropy_histograms, plot_lm_comparison
from randsae.scorer_kinds import SCORER_KINDS
from randsae.tables import AUROC_SCORERS, CompareRow, CorrelationRow, ScorerAccuracy, ScorerAuroc, write_table

log = logging.getLogger(__name__)

COMMAND = "lm compare"

SUMMARY_COLUMNS = ["explained_variance", "train_explained_variance", "pca_explained_variance",
                   "token_lookup_explained_variance", "pca_in_sample_explained_variance", "context_share",
                   "unseen_token_share", "cosine_sim", "l1", "l0", "dead_fraction", "ce_loss_score", "kl"]
BASELINES_NOTE = ("Baselines (docs/choices.md \"Baselines fitted where the SAE was fitted\"): train_explained_"
                  "variance is the SAE on a sample of its training tokens; pca_explained_variance PCA-k and "
                  "token_lookup_explained_variance each token's id mean, both fitted on that sample and scored on "
                  "the held-out tokens, as the SAE is; pca_in_sample_explained_variance PCA-k fitted on the "
                  "held-out tokens themselves, a bound no code fitted elsewhere meets; context_share the held-out "
                  "variance each context's own mean explains; unseen_token_share the held-out tokens whose id the "
                  "sample never held.")
ENTROPY_NOTE = ("Entropy: token-distribution entropy in nats (natural log) of each sampled latent's explainer "
                "set (docs/paper.md §2.4), mean ± standard deviation over the sampled latents.")
CE_NOTE = ("CE loss score: meaningful for the trained model only; for random variants the clean loss is "
           "already near chance and splicing can even lower it (scores above 1).")


def compare(runs: Sequence[str | Path], out: Path, latents: Sequence[str | Path] = (),
            autointerp: Sequence[str | Path] = (), formats: Sequence[str] = ("png",),
            replace: bool = False, strict: bool = True, notes: Sequence[str] = ()) -> list[CompareRow]:
    """OUT/results.csv (every row of every run), OUT/summary.md (the same as Markdown tables) and
    OUT/comparison.png; with `latents`, entropy columns, an entropy row in the figure and
    OUT/entropy.png; with `autointerp`, pooled AUROC rows (with their intervals and the judge's calibration)
    and OUT/entropy_auroc.png (Fig. 20 across variants). A (model, variant, layer) given twice is refused, and
    so is an OUT holding another command's output or (unless `replace`: a study's comparison, remade as its
    stages finish) a comparison of other directories. `strict`: latent records and scores of a (model,
    variant, layer) no evaluation holds are refused (a study, whose eval of a variant may have failed, shows
    them alone). `notes`: what else qualifies the numbers (a study's SAEs still learning), under the figure."""
    rows: dict[tuple, CompareRow] = {}
    seen: dict[tuple, str | Path] = {}
    for run in runs:
        table = Path(run) / "results.csv"
        if not table.is_file():
            raise FileNotFoundError(f"{table} does not exist; give directories written by `randsae lm eval`.")
        for row in read_eval_rows(table):
            key = row.key
            if key in seen:
                raise BadInput(f"{run} and {seen[key]} both hold {key[0]} {key[1]} layer {key[2]}.")
            seen[key] = run
            rows[key] = CompareRow(**dataclasses.asdict(row))
    summaries: list[LatentSummary] = []
    seen_latents: dict[tuple, str | Path] = {}
    for run in latents:
        records = open_latents(run)
        for key in {(r.model, r.variant, r.layer) for r in records.rows}:
            if key in seen_latents:
                raise BadInput(f"{run} and {seen_latents[key]} both hold latents of {key[0]} {key[1]} "
                                 f"layer {key[2]}.")
            seen_latents[key] = run
        summaries += records.rows
    if strict:
        unmatched(seen, seen_latents, "latents")
    for key, entropy in entropy_by_layer(summaries).items():
        row = rows.setdefault(key, CompareRow(*key))
        for name, value in entropy.items():
            setattr(row, name, value)
    scored, calibrations, hard, scored_keys = autointerp_rows(autointerp, rows)
    if strict:
        unmatched(seen, scored_keys, "scores")
    if not rows:
        raise BadInput("the given runs hold no rows to compare.")
    ordered = [rows[key] for key in sorted(rows)]
    record_comparison(out, {"runs": list(runs), "latents": list(latents), "autointerp": list(autointerp)},
                      replace)
    write_table(out / "results.csv", ordered, CompareRow)
    judge_notes = sorted({c.label("fuzzing") for c in calibrations})
    baseline_note = below_baseline_note(ordered)
    summary = markdown_summary(ordered, with_entropy=bool(summaries),
                               judge_notes=judge_notes if autointerp else None) + hard_negatives_summary(hard)
    io.atomic_write(out / "summary.md", lambda p: p.write_text(summary))
    figure_notes = [baseline_note, *notes, CE_NOTE, *([ENTROPY_NOTE] if summaries else []),
                    *([AUROC_NOTE, *judge_notes] if autointerp else [])]
    log.info("wrote %s", plot_lm_comparison(ordered, out / "comparison.png", notes=figure_notes, formats=formats))
    if summaries:
        log.info("wrote %s", plot_entropy_histograms(summaries, out / "entropy.png", formats=formats))
    if any(x.scorer == "fuzzing" for r in scored for x in r.results):  # Fig. 20 needs fuzzing scores
        at_chance = any(c.at_chance("fuzzing") for c in calibrations) or not calibrations
        table = correlations(scored, "fuzzing", at_chance)
        write_table(out / "correlations.csv", table, CorrelationRow)
        io.atomic_write(out / "summary.md", lambda p: p.write_text(summary + correlation_summary(table)))
        log.info("wrote %s", plot_entropy_auroc(scored, out / "entropy_auroc.png", "fuzzing", judge_notes,
                                                at_chance=at_chance, formats=formats))
    log.info("\n%s", summary)
    return ordered


def unmatched(evaluated: Mapping[tuple, str | Path], found: Mapping[tuple, str | Path], what: str) -> None:
    """One sentence when `found` (latent records or scores) holds a (model, variant, layer) that no evaluation
    given holds: a comparison never mixes one variant's evaluation with another's records."""
    for key, directory in sorted(found.items(), key=lambda item: str(item[0])):
        if key not in evaluated:
            held = ", ".join(sorted({f"{k[0]} {k[1]}" for k in evaluated}))
            raise BadInput(f"{directory} holds {what} of {key[0]} {key[1]} layer {key[2]}, which none of the "
                           f"evaluations given holds (they hold {held}); give the `lm eval` directory of the "
                           "same SAEs.")


def record_comparison(out: Path, inputs: dict[str, list], replace: bool) -> None:
    """OUT/config.json: the directories compared. Refused before anything is written: an OUT holding another
    command's output (an input among them), or, unless `replace`, a comparison of other directories."""
    record = {name: [str(Path(d).resolve()) for d in directories] for name, directories in inputs.items()}
    previous = runs_contract.previous_record(out, COMMAND)
    if previous is not None and not replace and runs_contract.settings_of(previous) != record:
        raise BadInput(f"{out} holds a comparison of other directories (see {out / 'config.json'}); choose "
                       "another --out.")
    runs_contract.write_record(out, COMMAND, record)


AUROC_NOTE = ("AUROC: each scorer's scores of the sampled latents' test windows (fuzzing and detection: the "
              "judge's P(1) given the explanation; embedding: similarity to the explanation; token lookup: the "
              "latent's top tokens; example embedding: closeness to its explainer windows — these three ask no "
              "judge), pooled over latents, with a 95% bootstrap interval over latents (docs/paper.md §2.3); 0.5 "
              "is chance. Intruder accuracy: the share of trials (4 activating windows, 1 silent) whose silent "
              "window the judge named; 0.2 is chance.")


def autointerp_rows(directories: Sequence[str | Path],
                    rows: dict[tuple, CompareRow]) -> tuple[list, list, list, dict[tuple, Path]]:
    """Adds the pooled AUROC of each `randsae lm autointerp` directory to `rows` (against random silent windows,
    the paper's); returns every scored latent (for Fig. 20), each directory's judge calibration, the summary
    rows against hard negatives (`scorer@kind`, shown apart) and where each (model, variant, layer) was read."""
    from randsae.autointerp.records import read_calibration, read_latents, read_summary

    scored, calibrations, hard, seen = [], [], [], {}
    keys: dict[tuple, Path] = {}
    for directory in directories:
        directory = Path(directory)
        path = directory / "summary.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; give directories written by `randsae lm autointerp`.")
        for s in read_summary(path):
            key = (s.model, s.variant, s.layer)
            keys.setdefault(key, directory)
            if seen.setdefault((key, s.scorer), directory) != directory:
                raise BadInput(f"{directory} and {seen[key, s.scorer]} both hold {s.scorer} scores of {key[0]} "
                                 f"{key[1]} layer {key[2]}.")
            if "@" in s.scorer:
                hard.append(s)
            if s.scorer not in AUROC_SCORERS:
                continue
            row = rows.setdefault(key, CompareRow(*key))
            if SCORER_KINDS[s.scorer].measure == "accuracy":
                row.set_scorer(s.scorer, ScorerAccuracy(s.accuracy, s.accuracy_low, s.accuracy_high, s.chance,
                                                        s.judge_at_chance))
            else:
                row.set_scorer(s.scorer, ScorerAuroc(s.auroc, s.auroc_low, s.auroc_high, s.judge_at_chance))
            row.auroc_latents, row.judge = s.latents, s.judge
            # each scorer keeps its own flag; the row's own flag says "at chance on any of them"
            row.judge_at_chance = any(x is not None and bool(x.judge_at_chance)
                                      for x in map(row.scorer, AUROC_SCORERS))
        if (directory / "calibration.json").is_file():
            calibrations.append(read_calibration(directory / "calibration.json"))
        scored += read_latents(directory)
    return scored, calibrations, hard, keys


def hard_negatives_summary(rows: list) -> str:
    """The AUROCs against hard negatives, beside the random ones the table above holds (nothing without)."""
    if not rows:
        return ""
    lines = ["", "| model | variant | layer | scorer | negatives | latents | AUROC or accuracy [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.model, r.variant, r.layer, r.scorer)):
        scorer, _, kind = r.scorer.partition("@")
        chance = " (judge AT CHANCE)" if r.judge_at_chance else ""
        value, low, high = (r.accuracy, r.accuracy_low, r.accuracy_high) if r.accuracy is not None else (
            r.auroc, r.auroc_low, r.auroc_high)
        lines.append(f"| {r.model} | {r.variant} | {r.layer} | {scorer} | {kind} | {r.latents} | "
                     f"{_cell(value)} [{_cell(low)}, {_cell(high)}]{chance} |")
    lines += ["", "Against hard negatives: silent windows that hold the latent's top tokens (similar-tokens) or "
              "where its nearest latents by decoder cosine fire (neighbours), in place of random silent windows; "
              "the verdict counts the random ones (the paper's)."]
    return "\n".join(lines) + "\n"


def correlations(results: list, scorer: str, at_chance: bool) -> list[CorrelationRow]:
    """Fig. 20 as a table: per (model, variant, layer), Spearman ρ of the scored latents' entropy against
    their `scorer` AUROC, with a bootstrap interval over latents."""
    from randsae.metrics import spearman_interval
    from randsae.seeding import derive_seed

    pairs: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for r in results:
        for s in r.results:
            if s.scorer == scorer and math.isfinite(s.auroc) and math.isfinite(r.entropy):
                pairs.setdefault((r.model, r.variant, r.layer), []).append((r.entropy, s.auroc))
    rows = []
    for (model, variant, layer), points in sorted(pairs.items()):
        x, y = (np.array(v) for v in zip(*points, strict=True))
        rho, low, high = spearman_interval(x, y, seed=derive_seed(0, "spearman", variant, layer))
        rho, low, high = (None if not math.isfinite(v) else v for v in (rho, low, high))
        rows.append(CorrelationRow(model, variant, layer, scorer, len(points), rho, low, high, at_chance))
    return rows


def correlation_summary(rows: list[CorrelationRow]) -> str:
    lines = ["", "| model | variant | layer | latents | Spearman ρ, entropy against fuzzing AUROC [95% CI] |",
             "|---|---|---|---|---|"]
    for r in rows:
        rho = "too few latents" if r.spearman is None else (
            f"{r.spearman:.2f} [{_cell(r.spearman_low, 2)}, {_cell(r.spearman_high, 2)}]")
        chance = " (judge AT CHANCE)" if r.judge_at_chance else ""
        lines.append(f"| {r.model} | {r.variant} | {r.layer} | {r.latents} | {rho}{chance} |")
    lines += ["", "Fig. 20's correlation as a table: ρ over the scored latents of each variant and layer, the "
              "interval a bootstrap over latents (docs/paper.md §2.5)."]
    return "\n".join(lines) + "\n"


def below_baseline_note(rows: list[CompareRow]) -> str:
    """One line naming the rows below their simplest baselines (`lm eval`'s below_baseline column), and one
    naming those far better on their training tokens than on held-out text."""
    flagged = [f"{r.variant} layer {r.layer} ({r.below_baseline})" for r in rows if r.below_baseline]
    note = ("✗ Below the simplest baselines (explained variance below that of PCA with k components fitted on the "
            "same training tokens; CE loss score below 0, worse than zeroing the block): " + ", ".join(flagged) +
            "." if flagged else "Every SAE beats PCA with k components fitted on its training tokens (explained "
                                "variance) and zero-ablation (CE loss score ≥ 0).")
    poor = [f"{r.variant} layer {r.layer} ({r.train_explained_variance:.3f} on its training tokens, "
            f"{r.explained_variance:.3f} held out)" for r in rows if generalises_poorly(r)]
    if poor:
        note += " Far better on what it trained on than on new text: " + ", ".join(poor) + "."
    return note


def _cell(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_summary(rows: list[CompareRow], with_entropy: bool = False,
                     judge_notes: list[str] | None = None) -> str:
    header = ["model", "variant", "layer", *SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row.explained_variance is None:
            continue
        cells = [row.model, row.variant, row.layer, *(_cell(getattr(row, c)) for c in SUMMARY_COLUMNS)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", below_baseline_note(rows), "", BASELINES_NOTE, "", f"{CE_NOTE}"]
    if with_entropy:
        lines += ["", "| model | variant | layer | sampled latents | entropy (nats) | whole-cache entropy, all "
                  "firing latents |", "|---|---|---|---|---|---|"]
        for row in rows:
            if row.entropy_mean is None and not row.sampled_latents:
                continue
            spread = f" ± {row.entropy_std:.2f}" if row.entropy_std is not None else ""
            mean = f"{row.entropy_mean:.2f}{spread}" if row.entropy_mean is not None else ""
            lines.append(f"| {row.model} | {row.variant} | {row.layer} | {row.sampled_latents or 0} "
                         f"| {mean} | {_cell(row.entropy_all_mean, 2)} |")
        lines += ["", ENTROPY_NOTE]
    if judge_notes is not None:
        labels = [f"{SCORER_KINDS[name].label} [95% CI]" for name in AUROC_SCORERS]  # AUROCs, intruder accuracy
        lines += ["", "| model | variant | layer | latents | " + " | ".join(labels) + " | judge |",
                  "|---|---|---|---|" + "---|" * len(labels) + "---|"]
        for row in rows:
            if row.auroc_latents is None:
                continue
            cells = []
            for scorer in map(row.scorer, AUROC_SCORERS):
                measure = "auroc" if isinstance(scorer, ScorerAuroc) else "accuracy"
                value, low, high = (None, None, None) if scorer is None else (
                    scorer.get(c) for c in (measure, f"{measure}_low", f"{measure}_high"))
                if value is None:
                    cells.append("")
                    continue
                assert scorer is not None
                guess = f", chance {scorer.chance:.2f}" if isinstance(scorer, ScorerAccuracy) else ""
                chance = " (judge AT CHANCE)" if scorer.judge_at_chance else ""
                cells.append(f"{value:.3f} [{_cell(low)}, {_cell(high)}]{guess}{chance}")
            lines.append(f"| {row.model} | {row.variant} | {row.layer} | {row.auroc_latents} | "
                         + " | ".join(cells) + f" | {row.judge} |")
        lines += ["", AUROC_NOTE, *(f"- {note}" for note in judge_notes)]
    return "\n".join(lines) + "\n"
