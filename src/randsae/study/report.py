"""The report of a `randsae baseline` study: OUT/report.md and a self-contained OUT/report.html (figures
inlined as data URIs, styles inline, no script, no network: it opens from disk), figures also as
OUT/figures/*.png.

It holds the settings, each stage's time, the judge's calibration, the Fig. 1–2 grid (every metric per
layer, a line per variant), Fig. 20, the verdict (per layer, metric and random twin: the difference with its
interval, and what it says: differs, the same within ±δ, cannot tell, not comparable) and a latent browser:
every sampled latent of every variant and layer with its
explanation, scores, entropy, top tokens and example windows shaded by activation, variants side by side.
"""

import base64
import html
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from randsae import io
from randsae.autointerp.clients import JudgeSettings
from randsae.study.browser import LatentCard, browser_html, fmt, read_cards
from randsae.study.evidence import VERDICT_COLUMNS, read_verdict, verdict_cells
from randsae.study.records import StageRecord, markdown_table, plan_grid, read_stages, stage_grid
from randsae.study.settings import text_conventions
from randsae.study.summaries import (
    PROBE_NOTE,
    SEPARATION_NOTE,
    probe_grids,
    read_summaries,
    separation_grid,
    separation_sentence,
)
from randsae.study.verdict import by_layer

log = logging.getLogger(__name__)

FIGURES = {"comparison": "Fig. 1–2: every metric per layer, a line per variant",
           "entropy_auroc": "Fig. 20: token-distribution entropy against fuzzing AUROC, a point per latent",
           "entropy": "Token-distribution entropy of the sampled latents, per variant and layer",
           "curves": "Learning curves: each arm's SAE by training tokens, held-out and training explained "
                     "variance and dead latents"}

# --- reading a study -----------------------------------------------------------------------------------------

@dataclass
class Study:
    out: Path
    config: dict
    stages: list[StageRecord]
    calibrations: dict  # variant → its judge's Calibration
    cards: list[LatentCard]


def read_study(out: Path) -> Study:
    from randsae.autointerp.records import read_calibration

    config = io.read_json(out / "config.json")
    settings = config["settings"]
    stages = list(read_stages(out).values())
    calibrations = {}
    for variant in settings["variants"]:
        autointerp = out / variant / "autointerp"
        if (autointerp / "calibration.json").is_file():
            calibrations[variant] = read_calibration(autointerp / "calibration.json")
    return Study(out, config, stages, calibrations, read_cards(out, settings))


# --- writing it ------------------------------------------------------------------------------------------------

def copy_figures(out: Path) -> dict[str, Path]:
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    found = {}
    for name in FIGURES:
        source = out / "compare" / f"{name}.png"
        if source.is_file():
            shutil.copyfile(source, figures / f"{name}.png")
            found[name] = figures / f"{name}.png"
    return found


def settings_rows(study: Study) -> list[tuple[str, str]]:
    s = study.config["settings"]
    layers = ", ".join(str(x) for x in study.config.get("layers", []))
    judge = JudgeSettings(**s["judge"]).describe()
    return [("model", s["model"] + (f" @ {s['revision']}" if s.get("revision") else "")),
            ("preset", s["preset"]), ("variants", ", ".join(s["variants"])), ("layers", layers),
            ("text", text_conventions(s)),
            ("training tokens per variant", training_tokens(study)),
            ("SAE", sae_text(study)), ("SAE architecture by arm", arm_architectures(study)),
            ("training recipe", recipe_text(study)),
            ("learning curves", curves_text(study)),
            ("schedule", s["schedule"] + (f", batch {s['batch_size']}" if s.get("batch_size") else "") +
             (f", lr {s['lr']}" if s.get("lr") else "")),
            ("tokens left out", (f"first {s['skip_positions']} positions " if s.get("skip_positions") else "") +
             (f"norm above {s['max_norm_ratio']} × median" if s.get("max_norm_ratio") else "") or "none (paper)"),
            ("eval tokens", f"{s['eval_tokens']:,}"),
            ("latent records from", "the training cache" if s.get("latent_tokens") is None else
             f"{s['latent_tokens']:,} tokens after the training text"),
            ("example sets", given_settings(s["examples"], "the paper's (docs/paper.md §2.3)")),
            ("auto-interpretability", given_settings(s["autointerp"], "the paper's")),
            ("judge", judge), ("seed", str(s["seed"])), ("seeds", seeds_text(s)),
            ("made by", made_by(study.config))]


def recipe_text(study: Study) -> str:
    """The recipe the arms' SAEs trained under and every value it set, as the first arm's `lm train` record has
    them (docs/choices.md "Training recipes")."""
    name = study.config["settings"].get("recipe", "randsae")
    for record in sorted(study.out.glob("*/sae/config.json")):
        values = io.read_json(record).get("schedule", {}).get("hyperparameters")
        if isinstance(values, dict) and values:
            shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v:,}" if isinstance(v, int)
                              else f"{k} {v}" for k, v in values.items() if k != "recipe")
            return f"{name} ({shown}; from {record.parent.parent.name}'s record)"
    return name


def curves_text(study: Study) -> str:
    """Each arm's SAEs by their learning curve's last doubling, per layer (compare/curves.png draws them):
    converged, still learning, overfitting, or no curve (SAEs randsae did not train: marked, not refused)."""
    from randsae.training.curves import run_convergence

    delta = study.config["settings"].get("verdict", {}).get("converged_delta", 0.01)
    arms = []
    for sae_dir in sorted(study.out.glob("*/sae")):
        states = run_convergence(sae_dir, delta)
        arms.append(f"{sae_dir.parent.name}: " + ("; ".join(f"{layer}: {state.state}" for layer, state in
                                                           states.items())
                                                 or "no curve (SAEs randsae did not train)"))
    return " · ".join(arms) or "–"


def training_tokens(study: Study) -> str:
    """The training tokens asked for, and those the text gave where it gave fewer (the trained arm's record)."""
    asked = study.config["settings"]["tokens"]
    record = study.out / "trained" / "sae" / "config.json"
    got = io.read_json(record).get("source", {}).get("tokens") if record.is_file() else None
    if isinstance(got, int) and got < asked:
        return f"{got:,} (asked {asked:,}: the text gives no more)"
    return f"{asked:,}"


def measured_l0(study: Study) -> dict[str, float]:
    """The user's SAEs' L0 per layer on the trained model's activations (what the twins are trained to)."""
    record = study.out / "trained" / "sae" / "config.json"
    return io.read_json(record).get("measured_l0", {}) if record.is_file() else {}


def sae_text(study: Study) -> str:
    """What SAEs the arms have: the study's own, or the user's and how the twins were trained beside them."""
    s = study.config["settings"]
    architecture = s.get("architecture", "topk")
    sparsity = f"L0 → {s['k']}" if architecture == "jumprelu" else f"k = {s['k']}"
    if not s.get("sae"):
        return f"{architecture}, {sparsity}, {s['expansion']} latents per dimension"
    l0 = ", ".join(f"layer {layer}: {value:.1f}" for layer, value in measured_l0(study).items())
    return f"trained arm: your SAEs ({s['sae']}; measured L0 {l0 or 'not recorded'}); {twin_training(study)}"


def twin_training(study: Study) -> str:
    """How the twins' SAEs were trained beside the user's, as the first twin's `lm train` record says."""
    s = study.config["settings"]
    for variant in s["variants"]:
        path = study.out / variant / "sae" / "config.json"
        if variant == "trained" or not path.is_file():
            continue
        train = io.read_json(path).get("train", {})
        how = "trained to your SAEs' measured L0" if train.get("layer_l0") else f"with k = {train.get('k')}"
        return (f"{train.get('architecture', 'topk')} twins of the same size, {how} (--twin-sae "
                f"{s.get('twin_sae', 'same')})")
    return "no twin trained yet"


OFF_TARGET = 0.10  # a twin whose held-out L0 is further than this from the L0 it was trained to is said so


def arm_architectures(study: Study) -> str:
    """Each arm's SAE architecture, held-out L0 and dead latents per layer (the mean over its seeds), as its
    quality eval measured them (`lm eval` results.csv); a twin trained to the user's SAEs' L0 that missed it by
    more than 10% says so."""
    from randsae.tables import EvalRow, read_table

    targets = measured_l0(study)
    found: dict[str, dict[int, list[EvalRow]]] = {}
    for path in sorted(study.out.glob("*/eval/results.csv")) + sorted(study.out.glob("*/*/eval/results.csv")):
        for row in read_table(path, EvalRow):
            found.setdefault(row.variant, {}).setdefault(row.layer, []).append(row)

    def l0_of(layer: int, rows: list[EvalRow]) -> str:
        values = [r.l0 for r in rows if r.l0 is not None]
        l0 = sum(values) / len(values) if values else None
        dead = [r.dead_fraction for r in rows if r.dead_fraction is not None]
        text = f"{layer}: {fmt(l0, 1)}" + (f" ({sum(dead) / len(dead):.0%} dead)" if dead else "")
        target = targets.get(str(layer)) if rows[0].variant != "trained" and rows[0].k is None else None
        if target and l0 is not None and abs(l0 / target - 1) > OFF_TARGET:
            text += f" (off its target {target:.1f} by {l0 / target - 1:+.0%})"
        return text

    def arm(name: str, layers: dict[int, list[EvalRow]]) -> str:
        rows = [r for group in layers.values() for r in group]
        seeds = max(len(group) for group in layers.values())
        over = f" (mean over {seeds} seeds)" if seeds > 1 else ""
        return (f"{name}: {', '.join(sorted({r.architecture or 'topk' for r in rows}))}, L0 (dead) by layer{over} "
                f"{'; '.join(l0_of(layer, group) for layer, group in sorted(layers.items()))}")

    return " · ".join(arm(name, layers) for name, layers in found.items()) or "–"


def seeds_text(s: dict) -> str:
    seeds = s.get("seeds", 1)
    if seeds == 1:
        return "1: the verdict's intervals are a bootstrap over held-out contexts and latents"
    return (f"{seeds} (seeds {s['seed']}–{s['seed'] + seeds - 1}): each arm's SAEs trained and each twin drawn "
            "anew per seed; the verdict's intervals are over seeds")


def given_settings(values: dict, otherwise: str) -> str:
    """Settings given (the rest the defaults) as "name value, …"."""
    if not values:
        return otherwise
    shown = [f"{name.replace('_', ' ')} {', '.join(map(str, v)) if isinstance(v, list) else v}"
             for name, v in values.items()]
    return "; ".join(shown) + " (the rest the paper's)"


def made_by(config: dict) -> str:
    """randsae's version, commit and command line from a config.json's provenance."""
    p = config.get("provenance")
    if not p:
        return "not recorded (a study begun before randsae recorded it)"
    commit = f" at commit {p['commit']}" if p.get("commit") else ""
    line = f": {p['command_line']}" if p.get("command_line") else ""
    return f"randsae {p['randsae']}{commit}, PyTorch {p['torch']}, {p['written']}{line}"


def calibration_lines(study: Study) -> list[str]:
    """The judge's calibration as `Calibration.label` says it, per LLM scorer, each judge once."""
    lines = []
    for calibration in study.calibrations.values():
        lines += [calibration.label(scorer) for scorer in sorted(calibration.scorers)]
    return list(dict.fromkeys(lines)) or ["no judge calibration (the auto-interpretability stage did not run)"]


def plan_basis(out: Path) -> str:
    """The machine and the basis the plan was made on (OUT/plan.json, OUT/plan.csv)."""
    from randsae.study.machines import Machine
    from randsae.study.plan import IGNORED_BASES, PlanRow
    from randsae.tables import read_table

    info = io.read_json(out / "plan.json") if (out / "plan.json").is_file() else {}
    machine = Machine(**info["machine"]).describe() if isinstance(info.get("machine"), dict) else "not recorded"
    bases = sorted({r.basis for r in read_table(out / "plan.csv", PlanRow) if r.basis not in IGNORED_BASES})
    ranks = info.get("ranks", 1)
    ranked = f"{ranks} rank{'s' if ranks != 1 else ''}"
    return f"Planned before the run for {machine}, {ranked}; from {'; '.join(bases)}."


def plan_html(study: Study) -> str:
    e = html.escape
    grid = plan_grid(study.out, study.stages)
    if grid is None:
        return ""
    return "<h3>The plan beside what it took</h3><p>" + e(plan_basis(study.out)) + "</p>" + html_table(*grid)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")


def markdown(study: Study, figures: dict[str, Path]) -> str:
    s = study.config["settings"]
    # as the README opens: the verdict, what separates, the probes; what qualifies them; how it was made after
    verdict = study.out / "compare" / "verdict.md"
    lines = [f"# Random baseline: {s['model']}", "", "Would a random network give these SAE results too?", "",
             verdict.read_text() if verdict.is_file() else "## Verdict\n\nnot reached (see the stages).\n",
             *summaries_markdown(study.out), "## Judge calibration", "",
             *[f"- {x}" for x in calibration_lines(study)], "", "## Figures", ""]
    lines += [f"![{caption}](figures/{name}.png)\n\n*{caption}*\n" for name, caption in FIGURES.items()
              if name in figures]
    lines += ["## Settings", "", "| setting | value |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in settings_rows(study)]]
    lines += ["", "## Stages", "", markdown_table(*stage_grid(study.stages))]
    grid = plan_grid(study.out, study.stages)
    if grid is not None:
        lines += ["", "### The plan beside what it took", "", plan_basis(study.out), "", markdown_table(*grid)]
    lines.append("")
    summary = study.out / "compare" / "summary.md"
    if summary.is_file():
        lines += ["## Tables", "", summary.read_text()]
    lines += ["## Latents", "", f"{len(study.cards)} sampled latents: open report.html for the latent browser.",
              ""]
    for card in study.cards:
        lines.append(f"- {card.variant}, layer {card.layer}, latent {card.latent}: "
                     f"{card.explanation or '(no explanation)'} — entropy {fmt(card.entropy, 2)}, " +
                     ", ".join(f"{k} {fmt(v, 2)}" for k, v in card.scores.items()))
    return "\n".join(lines) + "\n"


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
    """The comparison's summary.md as HTML: its tables as tables, its bullets as a list, the rest as
    paragraphs (the little Markdown `lm compare` writes; everything escaped)."""
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
        if line.strip():
            parts.append(f"<p>{e(line)}</p>")
        i += 1
    return "\n".join(parts)


def _image(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def page(study: Study, figures: dict[str, Path]) -> str:
    e = html.escape
    s = study.config["settings"]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>randsae baseline: {e(s['model'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Random baseline: {e(s['model'])}</h1><p>Would a random network give these SAE results too? "
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
              "<section id='stages'><h2>Stages</h2>" + html_table(*stage_grid(study.stages)) + plan_html(study) +
              "</section>"]
    summary = study.out / "compare" / "summary.md"
    if summary.is_file():
        parts.append(f"<section id='tables'><h2>Tables</h2>{markdown_html(summary.read_text())}</section>")
    parts.append(browser_html(study.cards, s["variants"]) + "</body></html>")
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
    from randsae.study.verdict import VerdictSettings

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
    note = emphasis_html(verdict_note(VerdictSettings(**study.config['settings'].get('verdict', {}))))
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


SEPARATES = "Which metrics separate trained from random here"


def summaries_markdown(out: Path) -> list[str]:
    """The report's opening: the metrics ranked by how well they separate trained from random, then the probes
    of every arm (none where the study has not compared)."""
    ranked, probes = read_summaries(out)
    lines = []
    if ranked:
        lines += [f"## {SEPARATES}", "", separation_sentence(ranked), "", markdown_table(*separation_grid(ranked)),
                  "", SEPARATION_NOTE, ""]
    if probes:
        lines += ["## Probing (no judge)", ""]
        for layer, header, rows, notes in probe_grids(probes):
            lines += [f"**Layer {layer}**", "", markdown_table(header, rows), "", *notes, ""]
        lines += [PROBE_NOTE, ""]
    return lines


def summaries_html(out: Path) -> str:
    e = html.escape
    ranked, probes = read_summaries(out)
    parts = []
    if ranked:
        parts.append(f"<section id='separation'><h2>{e(SEPARATES)}</h2><p>{e(separation_sentence(ranked))}</p>"
                     f"{html_table(*separation_grid(ranked))}<p class='meta'>{emphasis_html(SEPARATION_NOTE)}</p>"
                     "</section>")
    if probes:
        tables = "".join(f"<h3>Layer {layer}</h3>{html_table(header, rows)}"
                         + "".join(f"<p class='chance'>{e(note)}</p>" for note in notes)
                         for layer, header, rows, notes in probe_grids(probes))
        parts.append(f"<section id='probing'><h2>Probing (no judge)</h2>{tables}<p class='meta'>"
                     f"{e(PROBE_NOTE)}</p></section>")
    return "".join(parts)


def write_report(out: Path) -> tuple[Path, Path]:
    """OUT/report.md and OUT/report.html from what the study wrote."""
    study = read_study(out)
    figures = copy_figures(out)
    io.atomic_write(out / "report.md", lambda p: p.write_text(markdown(study, figures)))
    io.atomic_write(out / "report.html", lambda p: p.write_text(page(study, figures)))
    log.info("wrote %s and %s", out / "report.md", out / "report.html")
    return out / "report.md", out / "report.html"
