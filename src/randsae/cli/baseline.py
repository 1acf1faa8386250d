"""`randsae baseline`: the whole random-baseline study of one model (`randsae.study`)."""

import logging
from pathlib import Path

from randsae.autointerp.clients import JudgeSettings
from randsae.cli.common import output_directory
from randsae.config import coerce
from randsae.errors import BadInput
from randsae.experiments.lm_autointerp import AutointerpSettings
from randsae.experiments.lm_probe import ProbeSettings
from randsae.lm.examples import ExampleSettings
from randsae.settings import add_flags, given
from randsae.study.plan import PlanSettings
from randsae.study.settings import NESTED, PRESETS, BaselineSettings
from randsae.study.verdict import VerdictSettings

log = logging.getLogger("randsae")


def add_baseline_parser(sub) -> None:
    p = sub.add_parser("baseline", help="the whole random-baseline study of a model: every variant, every stage, "
                                        "one report (OUT/report.html)")
    p.add_argument("--preset", default="paper", help="paper (docs/paper.md §2, default: GPU-sized) or demo (the "
                                                     "embedded model, a few layers, minutes on a laptop)")
    def presets(part: str | None = None) -> dict[str, dict]:  # each preset's values, shown beside the defaults
        return {name: values if part is None else values.get(part, {}) for name, values in PRESETS.items()}

    add_flags(p, BaselineSettings, presets=presets())
    add_flags(p, PlanSettings)
    add_flags(p, VerdictSettings, prefix="verdict_", presets=presets("verdict"))
    add_flags(p, ExampleSettings, presets=presets("examples"))
    add_flags(p, AutointerpSettings, exclude=("layers", "seed", "scorers"), prefix="autointerp_",
              defaults={"judged_latents": "all get every scorer"}, presets=presets("autointerp"))
    add_flags(p, ProbeSettings, exclude=("seed", "absorption"), prefix="probing_", presets=presets("probing"))
    add_flags(p, JudgeSettings, prefix="judge_", presets=presets("judge"))
    p.add_argument("--config", help="TOML or JSON file of study settings: BaselineSettings' fields, with "
                                    "[examples], [autointerp], [judge] and [verdict] tables (flags override it)")
    p.add_argument("--out", required=True)


def baseline_overrides(args) -> dict:
    """The settings given as flags (None: not given), in BaselineSettings' terms."""
    values = given(args, BaselineSettings)
    if args.sae is not None and args.layers is None:
        values["layers"] = "all"  # every layer the given SAEs read, not the preset's
    values["examples"] = given(args, ExampleSettings)
    values["autointerp"] = coerce(AutointerpSettings, given(args, AutointerpSettings,
                                                           exclude=("layers", "seed", "scorers"),
                                                           prefix="autointerp_"))
    values["judge"] = given(args, JudgeSettings, prefix="judge_")
    values["probing"] = coerce(ProbeSettings, given(args, ProbeSettings, exclude=("seed", "absorption"),
                                                   prefix="probing_"))
    values["verdict"] = given(args, VerdictSettings, prefix="verdict_")
    JudgeSettings(**values["judge"])  # one sentence for a judge that cannot be, before the preset is read
    return values


TREES = {**NESTED, "verdict": VerdictSettings}  # a settings file's [tables]: the stages' settings, the verdict's


def with_file(overrides: dict, path: str | None) -> dict:
    """The flags' overrides over a settings file's (checked field by field: an unknown key or a value of the
    wrong type is one sentence naming it)."""
    from randsae.config import coerce, read_config_file
    if path is None:
        return overrides
    values = read_config_file(path)
    if "preset" in values:
        raise BadInput(f"config file {path} names a preset; give it as --preset (the file's settings override "
                       "the preset's).")
    for part in TREES:
        if not isinstance(values.get(part, {}), dict):
            raise BadInput(f"config file {path}: {part} must be a table of settings, not {values[part]!r}.")
    merged = coerce(BaselineSettings, {k: v for k, v in values.items() if k not in TREES})
    merged.update({k: v for k, v in overrides.items() if v is not None and k not in TREES})
    for part, cls in TREES.items():
        merged[part] = {**coerce(cls, values.get(part, {})), **(overrides.get(part) or {})}
    return merged


def run_baseline(args) -> int:
    import dataclasses

    from randsae.lm.text import describe_corpus
    from randsae.study.machines import parse_bytes, parse_machine, this_machine
    from randsae.study.plan import plan_table
    from randsae.study.preflight import planned, preflight, ranks_here
    from randsae.study.records import check_out, stage_table
    from randsae.study.runner import baseline
    from randsae.study.settings import autointerp_settings, latent_scorers, probe_settings, settings_for

    overrides = with_file(baseline_overrides(args), args.config)
    settings = settings_for(args.preset, overrides)
    if latent_scorers(settings):
        autointerp_settings(settings, settings.seed).validate()
    probe_settings(settings, settings.seed).validate()
    asked = PlanSettings(**given(args, PlanSettings))
    if asked.machine is not None and not asked.plan:
        raise BadInput("--machine states another machine to plan for; give it with --plan (a run plans for the "
                       "machine it runs on).")
    # the judge included: its numbers, its server, its model; your SAEs' input conventions taken
    check = preflight(settings, plan=asked.plan, given=set(overrides))
    ranks = ranks_here()
    if asked.machine is not None:
        machine = parse_machine(asked.machine)
        ranks = machine.devices if machine.kind == "cuda" else ranks
    else:
        machine = this_machine(Path(args.out), settings.device, ranks)
    if asked.device_memory is not None:
        memory = parse_bytes(asked.device_memory, "--device-memory")
        if memory < 1:
            raise BadInput(f"--device-memory must be a positive size such as 40GB, not {asked.device_memory!r}.")
        machine = dataclasses.replace(machine, device_memory=memory)
    settings, rows, problem = planned(settings, check, Path(args.out), machine, ranks)
    if asked.plan:
        print(plan_table(rows, machine, ranks, f"{describe_corpus(settings.dataset)}, {settings.tokens:,} "
                                               "training tokens asked per variant"), end="")
    if problem is not None:
        raise BadInput(problem)
    if asked.plan:
        return 0
    check_out(Path(args.out), settings)
    inputs = {"--sae": settings.sae, "--model": settings.model}
    with output_directory(args.out, command="baseline", inputs=inputs) as out:
        study = baseline(out, settings, check, progress=not args.quiet, plan=(rows, machine, ranks))
    log.info("\n%s", stage_table(study.stages))
    failed = [r for r in study.stages.values() if r.status == "failed"]
    if failed:
        log.error("%d stage%s failed (see OUT/stages.json and the report); rerun to retry them", len(failed),
                  "s" if len(failed) > 1 else "")
        return 1
    log.info("wrote %s", out / "report.html")
    return 0
