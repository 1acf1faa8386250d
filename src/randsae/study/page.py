"""The report of a `randsae baseline` study as one self-contained HTML page (OUT/report.html): figures inlined as
data URIs, styles inline, no script, no network: it opens from disk. What it says is read as the Markdown report
reads it (`randsae.study.report`)."""

import base64
import html
from pathlib import Path

from randsae.study import summaries
from randsae.study.browser import browser_html
from randsae.study.evidence import VERDICT_COLUMNS, read_verdict, verdict_cells
from randsae.study.plan import plan_grid
from randsae.study.records import stage_grid
from randsae.study.report import (
    FIGURES,
    SEPARATES,
    Study,
    calibration_lines,
    plan_basis,
    settings_rows,
    stage_sections,
)
from randsae.study.verdict import by_layer


def plan_html(study: Study) -> str:
    e = html.escape
    grid = plan_grid(study.out, study.records)
    if grid is None:
        return ""
    return "<h3>The plan beside what it took</h3><p>" + e(plan_basis(study.out)) + "</p>" + html_table(*grid)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f2f2f2}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
.chance{color:#b00020;font-weight:bold}.yes{color:#0a7d28;font-weight:bold}.no{color:#666}
.same{color:#1f4fb4;font-weight:bold}
.matrices{display:flex;flex-wrap:wrap;gap:16px}.matrix caption{font-weight:600;text-align:left}
.matrix td.cell{min-width:9em}span.cell{padding:1px 6px;border-radius:3px}
.side{display:grid;gap:12px;grid-template-columns:repeat(var(--n),minmax(0,1fr))}
.variant-column h4{margin:.2em 0;position:sticky;top:0;background:#fff}
.latent-card{border:1px solid #ccc;border-radius:6px;padding:6px 8px;margin:0 0 8px;background:#fafafa}
.latent-card summary{cursor:pointer;font-weight:600}.explanation{font-style:italic;margin:4px 0}
.window{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;
border-top:1px dotted #ddd;padding:3px 0}.tok{border-radius:2px}.meta{color:#555;font-size:12px}
"""


def markdown_html(text: str) -> str:
    """The comparison's summary.md (or a stage's section) as HTML: its headings, its tables as tables, its bullets
    as a list, the rest as paragraphs (the little Markdown `lm compare` writes; everything escaped)."""
    e = html.escape
    parts: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [row for row in block[1:] if not all(set(c) <= set("-: ") for c in row)]
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in block[0]) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{e(lines[i][2:])}</li>")
                i += 1
            parts.append("<ul>" + "".join(items) + "</ul>")
            continue
        heading = len(line) - len(line.lstrip("#"))
        if 0 < heading <= 4 and line[heading:].startswith(" "):
            parts.append(f"<h{heading}>{e(line[heading:].strip())}</h{heading}>")
        elif line.strip():
            parts.append(f"<p>{e(line)}</p>")
        i += 1
    return "\n".join(parts)


def _image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def page(study: Study, figures: dict[str, Path]) -> str:
    e = html.escape
    s = study.settings
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>randsae baseline: {e(s.model)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Random baseline: {e(s.model)}</h1><p>Would a random network give these SAE results too? "
             "Each variant below is the same architecture with other weights (docs/paper.md §2.1); each got SAEs "
             "trained and measured the same way.</p>", verdict_html(study), summaries_html(study.out),
             "<section id='calibration'><h2>Judge calibration</h2><ul>" +
             "".join(f"<li class='{'chance' if 'AT CHANCE' in x else ''}'>{e(x)}</li>"
                     for x in calibration_lines(study)) + "</ul></section>"]
    parts.append("<section id='figures'><h2>Figures</h2>" + "".join(
        f"<figure id='fig-{name}'><img src='{_image(path)}' alt='{e(FIGURES[name])}'>"
        f"<figcaption>{e(FIGURES[name])}</figcaption></figure>" for name, path in figures.items()) + "</section>")
    parts += ["<section id='settings'><h2>Settings</h2><table>" +
              "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in settings_rows(study)) +
              "</table></section>",
              "<section id='stages'><h2>Stages</h2>" + html_table(*stage_grid(study.records)) + plan_html(study) +
              "</section>"]
    summary = study.out / "compare" / "summary.md"
    if summary.is_file():
        parts.append(f"<section id='tables'><h2>Tables</h2>{markdown_html(summary.read_text())}</section>")
    parts += [f"<section>{markdown_html(text)}</section>" for text in stage_sections(study)]
    parts.append(browser_html(study.cards, s.variants) + "</body></html>")
    return "\n".join(parts)


OUTCOME_CLASS = {"differs": "yes", "same": "same", "cannot tell": "no", "not comparable": "chance"}


def emphasis_html(text: str) -> str:
    """Escaped text whose *emphasis* (the verdict note's Markdown) renders as emphasis."""
    import re

    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", html.escape(text))


def matrix_html(rows: list) -> str:
    """The verdict at a glance: per layer a small table, metrics as rows and twins as columns, each cell the
    difference trained − twin with its 95% interval, coloured by outcome."""
    from randsae.plots import OUTCOME_COLOURS
    from randsae.study.evidence import reason_notes, shared_reasons, verdict_matrices

    e = html.escape
    parts = ["<div class='matrices'>"]
    matrices = verdict_matrices(rows)
    marks = shared_reasons(matrices)
    for layer, metrics, twins, cells in matrices:
        head = "".join(f"<th>{e(t)}</th>" for t in twins)
        body = "".join(
            f"<tr><th>{e(label)}</th>" + "".join(
                f"<td class='cell' style='background:{OUTCOME_COLOURS[c.outcome]}'>"
                f"<b>{e(c.outcome)}</b><br><span class='meta'>{e(marks.get(c.text, c.text))}</span></td>"
                for c in row)
            + "</tr>"
            for label, row in zip(metrics, cells, strict=True))
        parts.append(f"<table class='matrix'><caption>Layer {layer}: trained − twin, 95% interval</caption>"
                     f"<tr><th>metric</th>{head}</tr>{body}</table>")
    legend = " ".join(f"<span class='cell' style='background:{colour}'>{e(o)}</span>"
                      for o, colour in OUTCOME_COLOURS.items())
    notes = "".join(f"<li>{e(note)}</li>" for note in reason_notes(marks))
    shared = f"<ul class='meta'>{notes}</ul>" if notes else ""
    return "".join(parts) + f"</div><p class='meta'>{legend}</p>{shared}"


def verdict_html(study: Study) -> str:
    """The verdict: a sentence per layer, then the table (a row per layer, metric and twin), outcome coloured."""
    from randsae.study.evidence import verdict_note

    e = html.escape
    rows = read_verdict(study.out)
    if not rows:
        return "<section id='verdict'><h2>Verdict</h2><p>not reached (see the stages).</p></section>"
    sentences = "".join(f"<li><b>Layer {v.layer}</b>: {e(v.sentence())}</li>" for v in by_layer(rows))
    head = "".join(f"<th>{e(c)}</th>" for c in VERDICT_COLUMNS)
    outcome = VERDICT_COLUMNS.index("verdict")
    body = "".join("<tr>" + "".join(f"<td class='{OUTCOME_CLASS[r.outcome]}'>{e(c)}</td>" if i == outcome else
                                    f"<td>{e(c)}</td>" for i, c in enumerate(verdict_cells(r))) + "</tr>"
                   for r in rows)
    note = emphasis_html(verdict_note(study.settings.verdict))
    return (f"<section id='verdict'><h2>Verdict</h2>{matrix_html(rows)}<ul>{sentences}</ul>"
            f"<details id='every-comparison'><summary>Every comparison: both arms' values and intervals, the 90% "
            f"interval, δ and what the intervals are over ({len(rows)} rows)</summary>"
            f"<table><tr>{head}</tr>{body}</table></details>"
            f"<p>{note}</p>{dictionaries_html(rows)}</section>")


def dictionaries_html(rows: list) -> str:
    """How much of the trained dictionary's result each random dictionary reaches (none: nothing)."""
    from randsae.study.evidence import SHARE_COLUMNS, SHARE_NOTE, dictionary_shares, share_cells, share_sentences

    e = html.escape
    shares = dictionary_shares(rows)
    if not shares:
        return ""
    sentences = "".join(f"<li>{e(s)}</li>" for s in share_sentences(shares))
    head = "".join(f"<th>{e(c)}</th>" for c in SHARE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in share_cells(s)) + "</tr>" for s in shares)
    return (f"<h3 id='dictionaries'>Random dictionaries</h3><ul>{sentences}</ul><table><tr>{head}</tr>{body}"
            f"</table><p>{e(SHARE_NOTE)}</p>")


def summaries_html(out: Path) -> str:
    e = html.escape
    ranked, probes = summaries.read_summaries(out)
    parts = []
    if ranked:
        sentence, note = summaries.separation_sentence(ranked), emphasis_html(summaries.SEPARATION_NOTE)
        parts.append(f"<section id='separation'><h2>{e(SEPARATES)}</h2><p>{e(sentence)}</p>"
                     f"{html_table(*summaries.separation_grid(ranked))}<p class='meta'>{note}</p></section>")
    if probes:
        tables = "".join(f"<h3>Layer {layer}</h3>{html_table(header, rows)}"
                         + "".join(f"<p class='chance'>{e(note)}</p>" for note in notes)
                         for layer, header, rows, notes in summaries.probe_grids(probes))
        parts.append(f"<section id='probing'><h2>Probing (no judge)</h2>{tables}<p class='meta'>"
                     f"{e(summaries.PROBE_NOTE)}</p></section>")
    return "".join(parts)
