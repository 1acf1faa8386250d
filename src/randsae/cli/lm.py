"""`randsae lm …`: activations, train, eval, probe, latents, autointerp, compare."""

import argparse
import logging
from pathlib import Path

from randsae.cli.common import (
    add_config_argument,
    add_format_argument,
    figure_formats,
    output_directory,
    parse_count,
)
from randsae.config import coerce
from randsae.errors import BadInput, check_seed
from randsae.lm.text import PREPEND_BOS_HELP
from randsae.settings import add_flags, given
from randsae.training.trainer import SCHEDULES

log = logging.getLogger("randsae")

GROUP_HELP = ("hold at most this many layers' SAEs at once, a pass over the text per group: for a device that "
              "does not hold every layer's beside the model (default: all at once)")

def add_source_arguments(p, model_default: str | None = "smollm2") -> None:
    """The flags that say which model, variant and text the activations come from."""
    p.add_argument("--model", default=model_default,
                   help="smollm2 (embedded), a .gguf file, a directory or a hub name")
    p.add_argument("--revision", default=None, help="hub revision of the trained model")
    p.add_argument("--variant", default="trained",
                   help="trained, rerandomized, rerandomized-no-embed, step0 or control")
    p.add_argument("--seed", type=int, default=0, help="seeds the variant, the context order and the SAEs")
    p.add_argument("--tokens", default=None,
                   help="how many tokens (e.g. 500k, 1M, 100M); default 1M from a model, all of a cache")
    p.add_argument("--dataset", default="shakespeare",
                   help="shakespeare (embedded), a .txt/.jsonl file, or a Hugging Face data set name")
    p.add_argument("--dataset-config", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--text-column", default="text")
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--prepend-bos", action="store_true", help=PREPEND_BOS_HELP)
    p.add_argument("--layers", default="all", help="'all' or a comma list of block indices")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def source_from_args(args):
    from randsae.lm.source import Source
    from randsae.lm.text import check_text_source
    from randsae.lm.variants import VARIANTS

    if args.variant not in VARIANTS:
        raise BadInput(f"unknown variant {args.variant!r}; choose from {', '.join(VARIANTS)}.")
    if args.context_length < 2:
        raise BadInput(f"--context-length must be at least 2, not {args.context_length}.")
    check_seed(args.seed)
    tokens = parse_count(args.tokens or "1M")
    check_text_source(args.dataset, tokens)
    return Source(model=args.model, revision=args.revision, variant=args.variant, seed=args.seed,
                  dataset=args.dataset, dataset_config=args.dataset_config, split=args.split,
                  text_column=args.text_column, context_length=args.context_length, tokens=tokens,
                  prepend_bos=args.prepend_bos)


def add_lm_parser(sub, parser_class) -> None:
    from randsae.autointerp.clients import JudgeSettings
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.experiments.lm_probe import ProbeSettings
    from randsae.lm.examples import ExampleSettings
    from randsae.training.trainer import TopKTrainConfig

    lm = sub.add_parser("lm", help="language models: activations, TopK SAEs, quality metrics")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, parser_class=parser_class)

    p = lm_sub.add_parser("activations", help="cache the residual stream of a model (or a random twin)")
    add_source_arguments(p)
    p.add_argument("--dtype", default="float16", help="cache dtype: float16, bfloat16 or float32")
    p.add_argument("--batch-size", type=int, default=8, help="contexts per forward pass")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("train", help="train a TopK SAE on every layer, from a cache or a model")
    p.add_argument("--acts", help="an activation cache (from `randsae lm activations`)")
    add_source_arguments(p, model_default=None)
    add_flags(p, TopKTrainConfig)
    p.add_argument("--schedule", default="budget", choices=SCHEDULES,
                   help="budget (default): a smaller batch and a higher learning rate when the tokens give too "
                        "few steps for the recipe's; paper: the recipe's batch and learning rate whatever the "
                        "budget (with --recipe sparsify: the paper's). --batch-size and --lr override either")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check against PCA-k on held-out text (it runs the model on 16 contexts)")
    p.add_argument("--seeds", type=int, default=1, help="SAEs per layer, seeded --seed, --seed + 1, …: the first "
                   "in OUT, seed i in OUT/seed<i> (each a whole run of its own) (default 1)")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("eval", help="quality metrics and CE loss score of trained SAEs, held-out text")
    p.add_argument("--sae", required=True, help="a directory written by `randsae lm train`")
    p.add_argument("--acts", help="the activation cache the SAEs were trained on (default: as recorded)")
    p.add_argument("--tokens", default="64k", help="held-out tokens to evaluate at most (default 64k)")
    p.add_argument("--fit-tokens", default="64k", help="training tokens the baselines (PCA-k, token lookup) are "
                   "fitted on and the SAEs' training explained variance is measured on (default 64k)")
    p.add_argument("--batch-size", type=int, default=4, help="contexts per forward pass")
    p.add_argument("--group-layers", type=int, default=None, help=GROUP_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("probe", help="k-sparse probing and first-letter absorption of trained SAEs (no judge)")
    p.add_argument("--sae", required=True, help="a directory written by `randsae lm train`")
    p.add_argument("--acts", help="the activation cache the SAEs were trained on (default: as recorded)")
    add_flags(p, ProbeSettings)
    p.add_argument("--group-layers", type=int, default=None, help=GROUP_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("latents", help="every latent's examples and token-distribution entropy")
    p.add_argument("--sae", required=True, help="a directory written by `randsae lm train`")
    p.add_argument("--acts", help="an activation cache of the same model and variant (default: the one the "
                                  "SAEs were trained on, as recorded)")
    p.add_argument("--model", default=None, help="run this model on the fly instead of reading a cache (the "
                                                   "model the SAEs were trained on, as recorded)")
    p.add_argument("--variant", default=None, help="with --model: the variant the SAEs were trained on")
    p.add_argument("--layers", default="all", help="'all' (every layer the SAE run trained) or a comma list")
    p.add_argument("--tokens", default=None, help="tokens to encode at most (default: all of a cache; 1M on the "
                                                  "fly, taken after every context the SAEs' run drew)")
    add_flags(p, ExampleSettings)
    p.add_argument("--seed", type=int, default=0, help="seeds the latent sample and every example draw")
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per SAE encoding batch")
    p.add_argument("--group-layers", type=int, default=None, help=GROUP_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("autointerp", help="explain the sampled latents with an LLM and score them (AUROC)")
    p.add_argument("--latents", help="a directory written by `randsae lm latents` (not needed with --calibrate)")
    p.add_argument("--calibrate", action="store_true",
                   help="only score the judge on the known-answer set (OUT/calibration.json)")
    add_flags(p, JudgeSettings, prefix="judge_")
    add_flags(p, AutointerpSettings)
    p.add_argument("--device", default="auto", help="local judge: auto, cpu or cuda")
    add_format_argument(p)
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("compare", help="one table and figure across variants and layers")
    p.add_argument("runs", nargs="+", help="directories written by `randsae lm eval`")
    p.add_argument("--latents", nargs="+", default=[], help="directories written by `randsae lm latents`")
    p.add_argument("--autointerp", nargs="+", default=[], help="directories written by `randsae lm autointerp`")
    add_format_argument(p)
    p.add_argument("--out", required=True)

    for name, command in lm_sub.choices.items():
        add_config_argument(command, sections=("judge",) if name == "autointerp" else ())
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info logs")


def run_activations(args) -> None:
    from randsae.experiments.lm_activations import cache_source
    from randsae.lm.activations import check_cache_dtype

    if args.batch_size < 1:
        raise BadInput(f"--batch-size must be a positive integer, not {args.batch_size}.")
    check_cache_dtype(args.dtype)
    source = source_from_args(args)
    with output_directory(args.out, command="lm activations", inputs={"--model": args.model}) as out:
        cache_source(source, args.layers, out, dtype=args.dtype, batch_size=args.batch_size, device=args.device,
                     progress=not args.quiet)


def run_train(args) -> None:
    from randsae.experiments.lm_train import train_from_cache, train_from_model
    from randsae.training.trainer import TopKTrainConfig

    if (args.acts is None) == (args.model is None):
        raise BadInput("give either --acts (an activation cache) or --model (train on the fly).")
    if args.acts is not None:
        defaults = {"revision": None, "variant": "trained", "dataset": "shakespeare", "dataset_config": None,
                    "split": "train", "text_column": "text", "context_length": 256}
        described = [name for name, default in defaults.items() if getattr(args, name) != default]
        if described:
            flag = "--" + described[0].replace("_", "-")
            raise BadInput(f"{flag} describes a model to train on the fly; a cache given with --acts "
                             "already records its model, variant and text.")
    given_settings = given(args, TopKTrainConfig)
    config = TopKTrainConfig(seed=args.seed, **given_settings)
    config.validate()
    schedule = {"fixed": set(given_settings), "auto": args.schedule == "budget", "check": not args.no_check}
    source = None if args.acts is not None else source_from_args(args)
    max_tokens = parse_count(args.tokens) if args.tokens and args.acts is not None else None
    if args.seeds < 1:
        raise BadInput(f"--seeds must be a positive integer, not {args.seeds}.")
    for index in range(args.seeds):  # each seed a whole run, resumable alone
        config.seed = args.seed + index
        with output_directory(Path(args.out) / (f"seed{index}" if index else ""), command="lm train",
                              inputs={"--acts": args.acts, "--model": args.model}) as out:
            if source is None:
                assert args.acts is not None
                train_from_cache(args.acts, args.layers, config, out, args.device, max_tokens=max_tokens,
                                 progress=not args.quiet, **schedule)
            else:
                train_from_model(source, args.layers, config, out, args.device, progress=not args.quiet,
                                 **schedule)


def counted(flag: str, text: str) -> int:
    """A count flag's value (2048, 500k, 1M), or one sentence naming the flag."""
    try:
        return parse_count(text)
    except BadInput as error:
        raise BadInput(f"{flag}: {error}") from None


def run_eval(args) -> None:
    from randsae.experiments.lm_eval import evaluate

    if args.batch_size < 1:
        raise BadInput(f"--batch-size must be a positive integer, not {args.batch_size}.")
    max_tokens, fit_tokens = (counted(flag, text) for flag, text in (("--tokens", args.tokens),
                                                                      ("--fit-tokens", args.fit_tokens)))
    with output_directory(args.out, command="lm eval", inputs={"--sae": args.sae, "--acts": args.acts}) as out:
        evaluate(args.sae, out, acts=args.acts, max_tokens=max_tokens, batch_size=args.batch_size,
                 device=args.device, progress=not args.quiet, fit_tokens=fit_tokens,
                 group_layers=args.group_layers)


def run_probe(args) -> None:
    from randsae.experiments.lm_probe import ProbeSettings, probe

    settings = ProbeSettings(**coerce(ProbeSettings, given(args, ProbeSettings)))
    inputs = {"--sae": args.sae, "--acts": args.acts, "--probe-data": settings.probe_data}
    with output_directory(args.out, command="lm probe", inputs=inputs) as out:
        probe(args.sae, out, settings, acts=args.acts, device=args.device, progress=not args.quiet,
              group_layers=args.group_layers)


def run_latents(args) -> None:
    from randsae.experiments.lm_latents import build_latents
    from randsae.lm.examples import ExampleSettings

    if args.batch_size < 1:
        raise BadInput(f"--batch-size must be a positive integer, not {args.batch_size}.")
    settings = ExampleSettings(seed=args.seed, **given(args, ExampleSettings))
    settings.validate()
    max_tokens = parse_count(args.tokens) if args.tokens else None
    if args.variant is not None and args.model is None:
        raise BadInput("--variant goes with --model (running the model on the fly).")
    model = (args.model, args.variant or "trained") if args.model is not None else None
    inputs = {"--sae": args.sae, "--acts": args.acts, "--model": args.model}
    with output_directory(args.out, command="lm latents", inputs=inputs) as out:
        build_latents(args.sae, out, acts=args.acts, layers=args.layers, max_tokens=max_tokens, settings=settings,
                      batch_size=args.batch_size, device=args.device, progress=not args.quiet, model=model,
                      group_layers=args.group_layers)


def run_compare(args) -> None:
    from randsae.experiments.lm_compare import compare

    formats = figure_formats(args)
    inputs = {"RUNS": args.runs, "--latents": args.latents, "--autointerp": args.autointerp}
    for name, paths in inputs.items():
        seen: dict[Path, str] = {}
        for path in paths:
            if Path(path).resolve() in seen:
                raise BadInput(f"{name} names {seen[Path(path).resolve()]} twice ({path}); give each directory "
                               "once.")
            seen[Path(path).resolve()] = path
    with output_directory(args.out, command="lm compare", inputs=inputs) as out:
        compare(args.runs, out, latents=args.latents, autointerp=args.autointerp, formats=formats)


def run_autointerp(args) -> None:
    from randsae.autointerp.clients import JudgeSettings
    from randsae.experiments.lm_autointerp import AutointerpSettings, autointerp, run_calibration

    settings = AutointerpSettings(**coerce(AutointerpSettings, given(args, AutointerpSettings)))
    judge = JudgeSettings(**given(args, JudgeSettings, prefix="judge_"), device=args.device).options()
    if "url" in judge:
        from randsae.autointerp.clients.openai import OpenAIJudge

        OpenAIJudge(**judge)  # checks the numbers before anything is written
    if args.calibrate:
        if args.latents is not None:
            raise BadInput("--calibrate scores only the known-answer set; leave out --latents.")
        with output_directory(args.out, command="lm autointerp") as out:
            run_calibration(out, judge, settings)
        return
    if args.latents is None:
        raise BadInput("give --latents (a directory written by `randsae lm latents`) or --calibrate.")
    formats = figure_formats(args)
    with output_directory(args.out, command="lm autointerp", inputs={"--latents": args.latents}) as out:
        autointerp(args.latents, out, judge, settings, progress=not args.quiet, formats=formats)


LM_COMMANDS = {"activations": run_activations, "train": run_train, "eval": run_eval, "probe": run_probe,
               "latents": run_latents,
               "autointerp": run_autointerp, "compare": run_compare}
