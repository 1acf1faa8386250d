"""`randsae lm compare`: the results of several `lm eval` runs as one table, one summary and one figure."""

import logging
from pathlib import Path

from randsae import io
from randsae.experiments.lm_eval import COLUMNS, read_eval_rows
from randsae.plots import plot_lm_comparison

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["explained_variance", "pca_explained_variance", "cosine_sim", "l1", "l0", "dead_fraction",
                   "ce_loss_score", "kl"]


def compare(runs: list[str | Path], out: Path) -> list[dict]:
    """OUT/results.csv (every row of every run), OUT/summary.md (the same as a Markdown table) and
    OUT/comparison.png. A (model, variant, layer) given twice is refused."""
    rows, seen = [], {}
    for run in runs:
        table = Path(run) / "results.csv"
        if not table.is_file():
            raise FileNotFoundError(f"{table} does not exist; give directories written by `randsae lm eval`.")
        for row in read_eval_rows(table):
            key = (row["model"], row["variant"], row["layer"])
            if key in seen:
                raise ValueError(f"{run} and {seen[key]} both hold {key[0]} {key[1]} layer {key[2]}.")
            seen[key] = run
            rows.append(row)
    if not rows:
        raise ValueError("the given runs hold no rows to compare.")
    rows.sort(key=lambda r: (r["model"], r["variant"], int(r["layer"])))
    io.write_rows(out / "results.csv", COLUMNS, rows)
    summary = markdown_table(rows)
    io.atomic_write(out / "summary.md", lambda p: p.write_text(summary))
    log.info("wrote %s", plot_lm_comparison(rows, out / "comparison.png"))
    log.info("\n%s", summary)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = ["model", "variant", "layer", *SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["variant"], row["layer"]]
        cells += [f"{float(row[c]):.3f}" if row.get(c) not in (None, "") else "" for c in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
