"""`randsae baseline`: the whole random-baseline study of one model (`randsae.study`)."""

import logging
from pathlib import Path

from randsae.autointerp.clients import JudgeSettings
from randsae.cli.common import output_directory, parse_count
from randsae.cli.lm import AUTOINTERP_SCORERS
from randsae.errors import BadInput
from randsae.lm.examples import ExampleSettings
from randsae.settings import add_flags, given

log = logging.getLogger("randsae")


def add_baseline_parser(sub) -> None:
    p = sub.add_parser("baseline", help="the whole random-baseline study of a model: every variant, every stage, "
                                        "one report (OUT/report.html)")
    p.add_argument("--preset", default="paper", help="paper (docs/paper.md §2, default: GPU-sized) or demo (the "
                                                     "embedded model, a few layers, minutes on a laptop)")
    p.add_argument("--model", default=None, help="smollm2 (embedded), a .gguf file, a directory or a hub name")
    p.add_argument("--revision", default=None, help="hub revision of the trained model")
    p.add_argument("--variants", default=None, help="comma list of trained, rerandomized, rerandomized-no-embed, "
                                                    "step0, control (default: all five; the demo: four)")
    p.add_argument("--layers", default=None, help="'all', 'paper' (every layer to 410m parameters, every 2nd to "
                                                  "1b, every 4th above) or a comma list (default: all)")
    for flag, text in (("--dataset", "shakespeare (embedded), a .txt/.jsonl file or a Hugging Face data set"),
                       ("--dataset-config", "the data set's configuration"), ("--text-column", "default text")):
        p.add_argument(flag, default=None, help=text)
    p.add_argument("--context-length", type=int, default=None, help="tokens per context (default 256)")
    p.add_argument("--tokens", default=None, help="training tokens per variant (paper: 100M; demo: 48k)")
    p.add_argument("--no-cache", action="store_true", help="train on the fly instead of caching activations")
    p.add_argument("--k", type=int, default=None, help="latents kept per token (default 32)")
    p.add_argument("--expansion", type=int, default=None, help="latents per input dimension (paper 64, demo 8)")
    p.add_argument("--schedule", default=None, choices=("budget", "paper"), help="as `lm train --schedule`")
    p.add_argument("--batch-size", type=int, default=None, help="tokens per optimiser step (default: the rule)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the rule)")
    p.add_argument("--skip-positions", type=int, default=None, help="as `lm train --skip-positions`")
    p.add_argument("--max-norm-ratio", type=float, default=None, help="as `lm train --max-norm-ratio`")
    p.add_argument("--eval-tokens", default=None, help="held-out tokens for the quality eval (default 64k)")
    p.add_argument("--latent-tokens", default=None, help="tokens the latent records are drawn from, run on the "
                                                         "fly after the training text (paper 10M), or 'cache': "
                                                         "the training cache (the demo's)")
    add_flags(p, ExampleSettings, defaults={"sample": "100; the demo: 2"})
    p.add_argument("--scorers", default=None, help=f"comma list of {', '.join(AUTOINTERP_SCORERS)} (default all)")
    p.add_argument("--prompt-format", default=None, help="delphi (default) or simple")
    p.add_argument("--latents-per-layer", type=int, default=None, help="score the first N sampled latents only")
    p.add_argument("--explainer-tokens", type=int, default=None, help="the explainer's answer at most (tokens)")
    p.add_argument("--calibration-windows", type=int, default=None, help="known-answer windows per latent")
    add_flags(p, JudgeSettings, prefix="judge_", defaults={"dtype": "float32; the demo: bfloat16"})
    p.add_argument("--sae", default=None, help="your SAEs as the trained arm (randsae, SAELens or sparsify TopK "
                                               "checkpoints); the twins get SAEs of the same k and size")
    p.add_argument("--seed", type=int, default=None, help="seeds the variants, the contexts, the SAEs, the draws")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--config", help="TOML or JSON file of study settings: BaselineSettings' fields, with "
                                    "[examples], [autointerp] and [judge] tables (flags override it)")
    p.add_argument("--out", required=True)


# baseline flag → BaselineSettings field, for the flags that map one to one
BASELINE_FIELDS = ("model", "revision", "layers", "dataset", "dataset_config", "text_column", "context_length",
                   "k", "expansion", "schedule", "batch_size", "lr", "skip_positions", "max_norm_ratio", "sae",
                   "seed", "device")
AUTOINTERP_FIELDS = {"scorers": "scorers", "prompt_format": "style", "latents_per_layer": "latents_per_layer",
                     "explainer_tokens": "explainer_tokens", "calibration_windows": "calibration_windows"}
def baseline_overrides(args) -> dict:
    """The settings given as flags (None: not given), in BaselineSettings' terms."""
    values = {name: getattr(args, name) for name in BASELINE_FIELDS}
    if args.sae is not None and args.layers is None:
        values["layers"] = "all"  # every layer the given SAEs read, not the preset's
    if args.variants is not None:
        values["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in ("tokens", "eval_tokens"):
        value = getattr(args, name)
        values[name] = parse_count(value) if value is not None else None
    if args.latent_tokens is not None:
        values["latent_tokens"] = None if args.latent_tokens == "cache" else parse_count(args.latent_tokens)
        values["latent_tokens_given"] = True
    if args.no_cache:
        values["cache"] = False
    values["examples"] = given(args, ExampleSettings)
    autointerp = {field: getattr(args, flag) for flag, field in AUTOINTERP_FIELDS.items()
                  if getattr(args, flag) is not None}
    if "scorers" in autointerp:
        autointerp["scorers"] = [s.strip() for s in autointerp["scorers"].split(",") if s.strip()]
    values["autointerp"] = autointerp
    values["judge"] = given(args, JudgeSettings, prefix="judge_")
    JudgeSettings(**values["judge"])  # one sentence for a judge that cannot be, before the preset is read
    return values


NESTED = ("examples", "autointerp", "judge")


def with_file(overrides: dict, path: str | None) -> dict:
    """The flags' overrides over a settings file's (checked field by field: an unknown key or a value of the
    wrong type is one sentence naming it)."""
    from randsae.config import coerce, read_config_file
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.study.runner import BaselineSettings

    if path is None:
        return overrides
    values = read_config_file(path)
    trees = {"examples": ExampleSettings, "autointerp": AutointerpSettings, "judge": JudgeSettings}
    if "preset" in values:
        raise BadInput(f"config file {path} names a preset; give it as --preset (the file's settings override "
                       "the preset's).")
    for part in NESTED:
        if not isinstance(values.get(part, {}), dict):
            raise BadInput(f"config file {path}: {part} must be a table of settings, not {values[part]!r}.")
    merged = coerce(BaselineSettings, {k: v for k, v in values.items() if k not in NESTED})
    merged.update({k: v for k, v in overrides.items() if v is not None and k not in NESTED})
    for part in NESTED:
        merged[part] = {**coerce(trees[part], values.get(part, {})), **(overrides.get(part) or {})}
    return merged


def run_baseline(args) -> int:
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.lm.examples import ExampleSettings
    from randsae.study.runner import baseline, check_out, preflight, settings_for, stage_table

    settings = settings_for(args.preset, with_file(baseline_overrides(args), args.config))
    ExampleSettings(seed=settings.seed, **settings.examples).validate()
    AutointerpSettings(seed=settings.seed, **settings.autointerp).validate()
    if "url" in settings.judge:
        from randsae.autointerp.clients.openai import OpenAIJudge
        from randsae.study.runner import judge_options

        OpenAIJudge(**judge_options(settings))  # checks the numbers before anything is written
    check = preflight(settings)
    check_out(Path(args.out), settings)
    with output_directory(args.out) as out:
        study = baseline(out, settings, check, progress=not args.quiet)
    log.info("\n%s", stage_table(study.stages))
    failed = [r for r in study.stages.values() if r.status == "failed"]
    if failed:
        log.error("%d stage%s failed (see OUT/stages.json and the report); rerun to retry them", len(failed),
                  "s" if len(failed) > 1 else "")
        return 1
    log.info("wrote %s", out / "report.html")
    return 0
