"""The report of a `randsae baseline` study: OUT/report.md and a self-contained OUT/report.html (figures
inlined as data URIs, styles inline, no script, no network: it opens from disk), figures also as
OUT/figures/*.png.

It holds the settings, each stage's time, the judge's calibration, the Fig. 1–2 grid (every metric per
layer, a line per variant), Fig. 20, the verdict (per layer, metric and random twin: the difference with its
interval, and what it says: differs, the same within ±δ, cannot tell, not comparable) and a latent browser:
every sampled latent of every variant and layer with its
explanation, scores, entropy, top tokens and example windows shaded by activation, variants side by side.
"""

import logging
import shutil
from pathlib import Path

from randsae import io
from randsae.settings import differs
from randsae.study.browser import LatentCard, fmt, read_cards
from randsae.study.plan import plan_grid
from randsae.study.records import StageRecord, StudyState, markdown_table, ordered, recorded_settings, stage_grid
from randsae.study.settings import BaselineSettings, text_conventions
from randsae.study.stages.train import recorded_l0
from randsae.study.summaries import (
    PROBE_NOTE,
    SEPARATION_NOTE,
    probe_grids,
    read_summaries,
    separation_grid,
    separation_sentence,
)

log = logging.getLogger(__name__)

FIGURES = {"comparison": "Fig. 1–2: every metric per layer, a line per variant",
           "entropy_auroc": "Fig. 20: token-distribution entropy against fuzzing AUROC, a point per latent",
           "entropy": "Token-distribution entropy of the sampled latents, per variant and layer",
           "curves": "Learning curves: each arm's SAE by training tokens, held-out and training explained "
                     "variance and dead latents"}

# --- reading a study -----------------------------------------------------------------------------------------

class Study(StudyState):
    """A study as its report reads it: the `StudyState` every stage and the verdict read, its settings from
    OUT/config.json (`recorded_settings`), and what only the report shows: the record's provenance and layers,
    each arm's judge calibration, a card per sampled latent."""

    def __init__(self, out: Path):
        from randsae.autointerp.records import read_calibration

        self.config = io.read_json(out / "config.json")
        super().__init__(out, recorded_settings(self.config["settings"]), progress=False)
        self.calibrations = {}  # variant → its judge's Calibration
        for variant in self.settings.variants:
            path = out / variant / "autointerp" / "calibration.json"
            if path.is_file():
                self.calibrations[variant] = read_calibration(path)
        self.cards: list[LatentCard] = read_cards(out, self.settings.model, self.settings.revision,
                                                  self.settings.variants)

    @property
    def records(self) -> list[StageRecord]:
        """Every stage's record, as OUT/stages.json holds them."""
        return list(self.stages.values())


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
    s = study.settings
    layers = ", ".join(str(x) for x in study.config.get("layers", []))
    judge = s.judge.describe()
    return [("model", s.model + (f" @ {s.revision}" if s.revision else "")),
            ("preset", s.preset), ("variants", ", ".join(s.variants)), ("layers", layers),
            ("text", text_conventions(s)),
            ("training tokens per variant", training_tokens(study)),
            ("SAE", sae_text(study)), ("SAE architecture by arm", arm_architectures(study)),
            ("training recipe", recipe_text(study)),
            ("learning curves", curves_text(study)),
            ("schedule", s.schedule + (f", batch {s.batch_size}" if s.batch_size else "") +
             (f", lr {s.lr}" if s.lr else "")),
            ("tokens left out", (f"first {s.skip_positions} positions " if s.skip_positions else "") +
             (f"norm above {s.max_norm_ratio} × median" if s.max_norm_ratio else "") or "none (paper)"),
            ("eval tokens", f"{s.eval_tokens:,}"),
            ("latent records from", "the training cache" if s.latent_tokens is None else
             f"{s.latent_tokens:,} tokens after the training text"),
            ("example sets", given_settings(differs(s.examples, ("seed",)), "the paper's (docs/paper.md §2.3)")),
            ("auto-interpretability", given_settings(differs(s.autointerp, ("seed", "layers", "scorers")),
                                                     "the paper's") + scorers_text(s)),
            ("judge", judge), ("seed", str(s.seed)), ("seeds", seeds_text(s)),
            ("made by", made_by(study.config))]


def recipe_text(study: Study) -> str:
    """The recipe the arms' SAEs trained under and every value it set, as the first arm's `lm train` record has
    them (docs/choices.md "Training recipes")."""
    name = study.settings.recipe
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

    delta = study.settings.verdict.converged_delta
    arms = []
    for sae_dir in sorted(study.out.glob("*/sae")):
        states = run_convergence(sae_dir, delta)
        arms.append(f"{sae_dir.parent.name}: " + ("; ".join(f"{layer}: {state.state}" for layer, state in
                                                           states.items())
                                                 or "no curve (SAEs randsae did not train)"))
    return " · ".join(arms) or "–"


def training_tokens(study: Study) -> str:
    """The training tokens asked for, and those the text gave where it gave fewer (the trained arm's record)."""
    asked = study.settings.tokens
    record = study.out / "trained" / "sae" / "config.json"
    got = io.read_json(record).get("source", {}).get("tokens") if record.is_file() else None
    if isinstance(got, int) and got < asked:
        return f"{got:,} (asked {asked:,}: the text gives no more)"
    return f"{asked:,}"


def sae_text(study: Study) -> str:
    """What SAEs the arms have: the study's own, or the user's and how the twins were trained beside them."""
    s = study.settings
    sparsity = f"L0 → {s.k}" if s.architecture == "jumprelu" else f"k = {s.k}"
    if not s.sae:
        return f"{s.architecture}, {sparsity}, {s.expansion} latents per dimension"
    l0 = ", ".join(f"layer {layer}: {value:.1f}" for layer, value in recorded_l0(study).items())
    return f"trained arm: your SAEs ({s.sae}; measured L0 {l0 or 'not recorded'}); {twin_training(study)}"


def twin_training(study: Study) -> str:
    """How the twins' SAEs were trained beside the user's, as the first twin's `lm train` record says."""
    s = study.settings
    for variant in s.variants:
        path = study.out / variant / "sae" / "config.json"
        if variant == "trained" or not path.is_file():
            continue
        train = io.read_json(path).get("train", {})
        how = "trained to your SAEs' measured L0" if train.get("layer_l0") else f"with k = {train.get('k')}"
        return (f"{train.get('architecture', 'topk')} twins of the same size, {how} (--twin-sae "
                f"{s.twin_sae})")
    return "no twin trained yet"


OFF_TARGET = 0.10  # a twin whose held-out L0 is further than this from the L0 it was trained to is said so


def arm_architectures(study: Study) -> str:
    """Each arm's SAE architecture, held-out L0 and dead latents per layer (the mean over its seeds), as its
    quality eval measured them (`lm eval` results.csv); a twin trained to the user's SAEs' L0 that missed it by
    more than 10% says so."""
    from randsae.tables import EvalRow, read_table

    targets = recorded_l0(study)
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


def scorers_text(s: BaselineSettings) -> str:
    return f"; scorers {', '.join(s.scorers)}" if s.scorers is not None else ""


def seeds_text(s: BaselineSettings) -> str:
    seeds = s.seeds
    if seeds == 1:
        return "1: the verdict's intervals are a bootstrap over held-out contexts and latents"
    return (f"{seeds} (seeds {s.seed}–{s.seed + seeds - 1}): each arm's SAEs trained and each twin drawn "
            "anew per seed; the verdict's intervals are over seeds")


def given_settings(values: dict, otherwise: str) -> str:
    """Settings that differ from their defaults (`randsae.settings.differs`) as "name value, …"."""
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


def stage_sections(study: Study) -> list[str]:
    """Each registered stage's own section of the report (Markdown, its heading included), from the units whose
    stage is done; none for a stage that declares none."""
    sections = []
    for stage in ordered():
        done = [r.unit for r in study.records if r.stage == stage.name and r.status == "done"]
        text = stage.section(study.out, done) if stage.section is not None and done else None
        sections += [text.strip()] if text else []
    return sections


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


def markdown(study: Study, figures: dict[str, Path]) -> str:
    s = study.settings
    # as the README opens: the verdict, what separates, the probes; what qualifies them; how it was made after
    verdict = study.out / "compare" / "verdict.md"
    lines = [f"# Random baseline: {s.model}", "", "Would a random network give these SAE results too?", "",
             verdict.read_text() if verdict.is_file() else "## Verdict\n\nnot reached (see the stages).\n",
             *summaries_markdown(study.out), "## Judge calibration", "",
             *[f"- {x}" for x in calibration_lines(study)], "", "## Figures", ""]
    lines += [f"![{caption}](figures/{name}.png)\n\n*{caption}*\n" for name, caption in FIGURES.items()
              if name in figures]
    lines += ["## Settings", "", "| setting | value |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in settings_rows(study)]]
    lines += ["", "## Stages", "", markdown_table(*stage_grid(study.records))]
    grid = plan_grid(study.out, study.records)
    if grid is not None:
        lines += ["", "### The plan beside what it took", "", plan_basis(study.out), "", markdown_table(*grid)]
    lines.append("")
    summary = study.out / "compare" / "summary.md"
    if summary.is_file():
        lines += ["## Tables", "", summary.read_text()]
    lines += [f"{text}\n" for text in stage_sections(study)]
    lines += ["## Latents", "", f"{len(study.cards)} sampled latents: open report.html for the latent browser.",
              ""]
    for card in study.cards:
        lines.append(f"- {card.variant}, layer {card.layer}, latent {card.latent}: "
                     f"{card.explanation or '(no explanation)'} — entropy {fmt(card.entropy, 2)}, " +
                     ", ".join(f"{k} {fmt(v, 2)}" for k, v in card.scores.items()))
    return "\n".join(lines) + "\n"


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
