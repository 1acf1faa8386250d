"""The compare stage, once across the units: `lm compare` per seed (OUT/compare, OUT/compare/seed<i>), then the
verdict across seeds and what separates trained from random (OUT/compare/verdict.csv, separation.csv)."""

from pathlib import Path

from randsae.errors import BadInput
from randsae.study.plan import fixed_cost
from randsae.study.records import Stage, StudyState
from randsae.study.settings import parse_unit


def compare_directory(study: StudyState, index: int) -> Path:
    """OUT/compare (seed 0: the figures and tables the report shows) or OUT/compare/seed<i>."""
    return study.out / "compare" / (f"seed{index}" if index else "")


def run(study: StudyState, _: str) -> None:
    """`lm compare` per seed, then the verdict across seeds (OUT/compare/verdict.csv)."""
    from randsae.experiments.lm_compare import compare
    from randsae.experiments.lm_eval import read_eval_rows
    from randsae.study.evidence import write_verdict
    from randsae.study.summaries import write_summaries

    if not study.finished("eval", 0):
        raise BadInput("no variant got as far as its quality eval; there is nothing to compare.")
    unfinished: dict[int, dict[tuple[str, int], str]] = {}  # per seed: the SAEs their curves say are unfinished
    for index in range(study.settings.seeds):
        evaluated = study.finished("eval", index)
        if not evaluated:
            continue
        out = compare_directory(study, index)
        out.mkdir(parents=True, exist_ok=True)
        unfinished[index] = unfinished_saes(study, study.finished("train", index))
        compare([study.directory(u, "eval") for u in evaluated], out,
                latents=[study.directory(u, "latents") for u in study.finished("latents", index)],
                autointerp=[study.directory(u, "autointerp") for u in study.finished("autointerp", index)],
                replace=True, strict=False,
                notes=[f"{arm} layer {layer}: its SAE {why}: not comparable in the verdict"
                       for (arm, layer), why in unfinished[index].items()])
    draw_curves(study)
    rows = write_verdict(study)
    below = {(parse_unit(u)[0], r.layer): f"is below its baselines ({r.below_baseline})"
             for u in study.finished("eval", 0)
             for r in read_eval_rows(study.directory(u, "eval") / "results.csv") if r.below_baseline}
    for key, why in unfinished.get(0, {}).items():  # an SAE still learning is not compared either
        below.setdefault(key, why)
    write_summaries(study.out, rows, {parse_unit(u)[0]: study.directory(u, "probing")
                                      for u in study.finished("probing", 0)}, below)


def unfinished_saes(study: StudyState, units) -> dict[tuple[str, int], str]:
    """(arm, layer) → "is still learning (…)" or "is overfitting (…)" for the SAEs of `units` their learning
    curves say so of: not compared by the verdict, and said so beside their numbers."""
    from randsae.study.evidence import unfinished_layers

    delta = study.settings.verdict.converged_delta
    return {(parse_unit(unit)[0], layer): f"is {state}" for unit in units
            for layer, state in unfinished_layers(study.directory(unit, "sae"), delta).items()}


def draw_curves(study: StudyState) -> None:
    """OUT/compare/curves.png: each arm's learning curves at seed 0 (the arms whose SAEs randsae trained)."""
    from randsae.plots import plot_curves
    from randsae.tables import CurveRow, read_table

    curves = {parse_unit(u)[0]: read_table(path, CurveRow) for u in study.finished("train", 0)
              if (path := study.directory(u, "sae") / "curve.csv").is_file()}
    delta = study.settings.verdict.converged_delta
    plot_curves(curves, study.out / "compare" / "curves", notes=[
        f"An SAE whose held-out explained variance rose by more than {delta:g} over its last doubling is still "
        "learning, one whose held-out EV fell while its training EV rose is overfitting: the verdict does not "
        "compare either. Arms without a line are SAEs randsae did not train (no curve)."])


SECONDS = 8.0  # the plan's allowance for the comparison with its bootstrap (not measured)

STAGE = Stage("compare", run, reads=("eval", "probing", "latents", "autointerp"), per_unit=False,
              cost=fixed_cost("compare", SECONDS))
