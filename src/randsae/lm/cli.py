"""`randsae lm …` subcommands: activations, train, eval, latents, autointerp, compare."""

import argparse
import logging

from randsae.cliutil import add_format_argument, figure_formats, given_flags, output_directory, parse_count

log = logging.getLogger("randsae")

AUTOINTERP_SCORERS = ("fuzzing", "detection", "embedding", "tokens")  # randsae.autointerp.scorers.SCORERS


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
    p.add_argument("--layers", default="all", help="'all' or a comma list of block indices")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def source_from_args(args):
    from randsae.lm.source import Source
    from randsae.lm.variants import VARIANTS

    if args.variant not in VARIANTS:
        raise ValueError(f"unknown variant {args.variant!r}; choose from {', '.join(VARIANTS)}.")
    if args.context_length < 2:
        raise ValueError(f"--context-length must be at least 2, not {args.context_length}.")
    return Source(model=args.model, revision=args.revision, variant=args.variant, seed=args.seed,
                  dataset=args.dataset, dataset_config=args.dataset_config, split=args.split,
                  text_column=args.text_column, context_length=args.context_length,
                  tokens=parse_count(args.tokens or "1M"))


# flag → (TopKTrainConfig field, type, help)
TRAIN_FLAGS = {
    "--k": ("k", int, "latents kept per token (default 32)"),
    "--expansion": ("expansion", int, "latents per input dimension (default 64)"),
    "--batch-size": ("batch_size", int, "tokens per optimiser step, over all ranks (default 4096)"),
    "--lr": ("lr", float, "Adam learning rate (default 2e-4 / sqrt(latents / 2^14))"),
    "--warmup-steps": ("warmup_steps", int, "linear learning-rate warm-up (default 1000)"),
    "--auxk-alpha": ("auxk_alpha", float, "weight of the AuxK loss on dead latents (default 0: off)"),
    "--dead-tokens": ("dead_tokens", parse_count, "tokens without firing before a latent counts as dead"),
    "--autocast": ("autocast", str, "none (default) or bf16 (bfloat16 autocast, for GPUs)"),
    "--skip-positions": ("skip_positions", int, "leave out the first N positions of each context, in training "
                                                "and every metric (default 0, the paper's: none)"),
    "--max-norm-ratio": ("max_norm_ratio", float, "leave out tokens whose norm is above this × their batch's "
                                                  "median (default: none, the paper's)"),
}


# the judge of `lm autointerp`: flag → (type, default, help)
JUDGE_FLAGS = {
    "--llm": (str, "smollm2", "the local judge: smollm2 (embedded), a .gguf file, a directory or a hub name"),
    "--llm-url": (str, None, "an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1 (vLLM, "
                             "llama.cpp)"),
    "--llm-model": (str, None, "with --llm-url: the model name the server serves"),
    "--api-key-env": (str, "OPENAI_API_KEY", "environment variable holding the API key (read, never written)"),
    "--concurrency": (int, 8, "with --llm-url: requests in flight (default 8)"),
    "--timeout": (float, 60.0, "with --llm-url: seconds per request (default 60)"),
    "--retries": (int, 4, "with --llm-url: retries on 429, 5xx, timeouts, lost connections (default 4)"),
    "--retry-backoff": (float, 0.5, "with --llm-url: seconds before the first retry, doubling after each "
                                    "(default 0.5)"),
    "--windows-per-prompt": (int, 5, "with --llm-url: windows per judge prompt (default 5, the paper's)"),
}


# flag → (ExampleSettings field, type, help); defaults are the paper's (PAPER.md §2.3)
EXAMPLE_FLAGS = {
    "--window": ("window", int, "tokens per example window (default 32)"),
    "--max-examples": ("max_examples", int, "activating windows kept per latent, the strongest (default 10000)"),
    "--min-examples": ("min_examples", int, "activating windows a latent needs to be eligible (default 200)"),
    "--sample": ("sample", int, "eligible latents drawn per layer (default 100)"),
    "--explainer-examples": ("explainer_examples", int, "windows in the explainer set (default 40)"),
    "--test-examples": ("test_examples", int, "activating windows in the test set (default 100)"),
    "--quantiles": ("quantiles", int, "activation strata the test set is drawn from (default 10)"),
    "--non-activating": ("non_activating", int, "windows where the latent is silent (default 100)"),
}


def add_lm_parser(sub, parser_class) -> None:
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
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--schedule", default="budget", choices=("budget", "paper"),
                   help="budget (default): a smaller batch and a higher learning rate when the tokens give too "
                        "few steps for the paper's; paper: the paper's batch and learning rate whatever the "
                        "budget. --batch-size and --lr override either")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check against PCA-k on held-out text (it runs the model on 16 contexts)")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("eval", help="quality metrics and CE loss score of trained SAEs, held-out text")
    p.add_argument("--sae", required=True, help="a directory written by `randsae lm train`")
    p.add_argument("--acts", help="the activation cache the SAEs were trained on (default: as recorded)")
    p.add_argument("--tokens", default="64k", help="held-out tokens to evaluate at most (default 64k)")
    p.add_argument("--batch-size", type=int, default=4, help="contexts per forward pass")
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
    for flag, (_, kind, text) in EXAMPLE_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--seed", type=int, default=0, help="seeds the latent sample and every example draw")
    p.add_argument("--batch-size", type=int, default=4096, help="tokens per SAE encoding batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("autointerp", help="explain the sampled latents with an LLM and score them (AUROC)")
    p.add_argument("--latents", help="a directory written by `randsae lm latents` (not needed with --calibrate)")
    p.add_argument("--calibrate", action="store_true",
                   help="only score the judge on the known-answer set (OUT/calibration.json)")
    for flag, (kind, default, text) in JUDGE_FLAGS.items():
        p.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--scorers", default=",".join(AUTOINTERP_SCORERS),
                   help=f"comma list of {', '.join(AUTOINTERP_SCORERS)} (default: all)")
    p.add_argument("--prompt-format", default="delphi",
                   help="delphi (the paper's, default) or simple (fuzzing shows only the marked tokens)")
    p.add_argument("--layers", default="all", help="'all' or a comma list")
    p.add_argument("--latents-per-layer", type=int, default=None, help="score the first N sampled latents only")
    p.add_argument("--explainer-tokens", type=int, default=96, help="the explainer's answer at most (tokens)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--calibration-windows", type=int, default=20,
                   help="known-answer set: activating (and as many silent) windows per known latent")
    p.add_argument("--embedding-model", default="minilm",
                   help="embedding scorer: minilm (embedded all-MiniLM-L6-v2), a directory or a hub name")
    p.add_argument("--judge-batch-size", type=int, default=32, help="local judge: windows per forward pass")
    p.add_argument("--judge-dtype", default="float32",
                   help="local judge: float32 (default), bfloat16 (faster on GPUs and CPUs with bf16) or float16")
    p.add_argument("--seed", type=int, default=0, help="seeds the window order and the fuzzing marks")
    p.add_argument("--device", default="auto", help="local judge: auto, cpu or cuda")
    add_format_argument(p)
    p.add_argument("--out", required=True)

    p = lm_sub.add_parser("compare", help="one table and figure across variants and layers")
    p.add_argument("runs", nargs="+", help="directories written by `randsae lm eval`")
    p.add_argument("--latents", nargs="+", default=[], help="directories written by `randsae lm latents`")
    p.add_argument("--autointerp", nargs="+", default=[], help="directories written by `randsae lm autointerp`")
    add_format_argument(p)
    p.add_argument("--out", required=True)

    for command in lm_sub.choices.values():
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info logs")


def run_activations(args) -> None:
    from randsae.experiments.lm_activations import cache_source
    from randsae.lm.activations import check_cache_dtype

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, not {args.batch_size}.")
    check_cache_dtype(args.dtype)
    source = source_from_args(args)
    with output_directory(args.out) as out:
        cache_source(source, args.layers, out, dtype=args.dtype, batch_size=args.batch_size, device=args.device,
                     progress=not args.quiet)


def run_train(args) -> None:
    from randsae.experiments.lm_train import train_from_cache, train_from_model
    from randsae.train_topk import TopKTrainConfig

    if (args.acts is None) == (args.model is None):
        raise ValueError("give either --acts (an activation cache) or --model (train on the fly).")
    if args.acts is not None:
        defaults = {"revision": None, "variant": "trained", "dataset": "shakespeare", "dataset_config": None,
                    "split": "train", "text_column": "text", "context_length": 256}
        given = [name for name, default in defaults.items() if getattr(args, name) != default]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"{flag} describes a model to train on the fly; a cache given with --acts "
                             "already records its model, variant and text.")
    given = given_flags(args, TRAIN_FLAGS)
    config = TopKTrainConfig(seed=args.seed, **given)
    config.validate()
    schedule = {"fixed": set(given), "auto": args.schedule == "budget", "check": not args.no_check}
    source = None if args.acts is not None else source_from_args(args)
    max_tokens = parse_count(args.tokens) if args.tokens and args.acts is not None else None
    with output_directory(args.out) as out:
        if source is None:
            train_from_cache(args.acts, args.layers, config, out, args.device, max_tokens=max_tokens,
                             progress=not args.quiet, **schedule)
        else:
            train_from_model(source, args.layers, config, out, args.device, progress=not args.quiet, **schedule)


def run_eval(args) -> None:
    from randsae.experiments.lm_eval import evaluate

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, not {args.batch_size}.")
    max_tokens = parse_count(args.tokens)
    with output_directory(args.out) as out:
        evaluate(args.sae, out, acts=args.acts, max_tokens=max_tokens, batch_size=args.batch_size,
                 device=args.device, progress=not args.quiet)


def run_latents(args) -> None:
    from randsae.experiments.lm_latents import build_latents
    from randsae.lm.examples import ExampleSettings

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, not {args.batch_size}.")
    settings = ExampleSettings(seed=args.seed, **given_flags(args, EXAMPLE_FLAGS))
    settings.validate()
    max_tokens = parse_count(args.tokens) if args.tokens else None
    if args.variant is not None and args.model is None:
        raise ValueError("--variant goes with --model (running the model on the fly).")
    model = (args.model, args.variant or "trained") if args.model is not None else None
    with output_directory(args.out) as out:
        build_latents(args.sae, out, acts=args.acts, layers=args.layers, max_tokens=max_tokens, settings=settings,
                      batch_size=args.batch_size, device=args.device, progress=not args.quiet, model=model)


def run_compare(args) -> None:
    from randsae.experiments.lm_compare import compare

    formats = figure_formats(args)
    with output_directory(args.out) as out:
        compare(args.runs, out, latents=args.latents, autointerp=args.autointerp, formats=formats)


def run_autointerp(args) -> None:
    from randsae.experiments.lm_autointerp import AutointerpSettings, autointerp, run_calibration

    settings = AutointerpSettings(
        scorers=[s.strip() for s in args.scorers.split(",") if s.strip()], style=args.prompt_format,
        layers=args.layers, latents_per_layer=args.latents_per_layer, seed=args.seed,
        explainer_tokens=args.explainer_tokens, bootstrap=args.bootstrap,
        calibration_windows=args.calibration_windows, embedding_model=args.embedding_model)
    settings.validate()
    if args.llm_url is None and args.llm_model is not None:
        raise ValueError("--llm-model names the model of a server; give --llm-url too (or --llm for a local one).")
    if args.windows_per_prompt < 1:
        raise ValueError(f"--windows-per-prompt must be a positive integer, not {args.windows_per_prompt}.")
    if args.judge_dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--judge-dtype must be float32, bfloat16 or float16, not {args.judge_dtype!r}.")
    if args.judge_batch_size < 1:
        raise ValueError(f"--judge-batch-size must be a positive integer, not {args.judge_batch_size}.")
    judge = ({"url": args.llm_url, "model": args.llm_model, "concurrency": args.concurrency,
              "timeout": args.timeout, "retries": args.retries, "backoff": args.retry_backoff,
              "api_key_env": args.api_key_env,
              "windows_per_prompt": args.windows_per_prompt} if args.llm_url else
             {"llm": args.llm, "device": args.device, "batch_size": args.judge_batch_size,
              "dtype": args.judge_dtype})
    if args.llm_url:
        from randsae.autointerp.clients.openai import OpenAIJudge

        OpenAIJudge(**judge)  # checks the numbers before anything is written
    if args.calibrate:
        if args.latents is not None:
            raise ValueError("--calibrate scores only the known-answer set; leave out --latents.")
        with output_directory(args.out) as out:
            run_calibration(out, judge, settings)
        return
    if args.latents is None:
        raise ValueError("give --latents (a directory written by `randsae lm latents`) or --calibrate.")
    formats = figure_formats(args)
    with output_directory(args.out) as out:
        autointerp(args.latents, out, judge, settings, progress=not args.quiet, formats=formats)


def add_baseline_parser(sub) -> None:
    p = sub.add_parser("baseline", help="the whole random-baseline study of a model: every variant, every stage, "
                                        "one report (OUT/report.html)")
    p.add_argument("--preset", default="paper", help="paper (PAPER.md §2, default: GPU-sized) or demo (the "
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
    for flag, (_, kind, text) in EXAMPLE_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--scorers", default=None, help=f"comma list of {', '.join(AUTOINTERP_SCORERS)} (default all)")
    p.add_argument("--prompt-format", default=None, help="delphi (default) or simple")
    p.add_argument("--latents-per-layer", type=int, default=None, help="score the first N sampled latents only")
    p.add_argument("--explainer-tokens", type=int, default=None, help="the explainer's answer at most (tokens)")
    p.add_argument("--calibration-windows", type=int, default=None, help="known-answer windows per latent")
    for flag, (kind, _, text) in JUDGE_FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--judge-dtype", default=None, help="local judge: float32, bfloat16 or float16")
    p.add_argument("--sae", default=None, help="your SAEs as the trained arm (randsae, SAELens or sparsify TopK "
                                               "checkpoints); the twins get SAEs of the same k and size")
    p.add_argument("--seed", type=int, default=None, help="seeds the variants, the contexts, the SAEs, the draws")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--out", required=True)


# baseline flag → BaselineSettings field, for the flags that map one to one
BASELINE_FIELDS = ("model", "revision", "layers", "dataset", "dataset_config", "text_column", "context_length",
                   "k", "expansion", "schedule", "batch_size", "lr", "skip_positions", "max_norm_ratio", "sae",
                   "seed", "device")
AUTOINTERP_FIELDS = {"scorers": "scorers", "prompt_format": "style", "latents_per_layer": "latents_per_layer",
                     "explainer_tokens": "explainer_tokens", "calibration_windows": "calibration_windows"}
JUDGE_FIELDS = {"llm": "llm", "llm_url": "url", "llm_model": "model", "api_key_env": "api_key_env",
                "concurrency": "concurrency", "timeout": "timeout", "retries": "retries",
                "retry_backoff": "backoff", "windows_per_prompt": "windows_per_prompt", "judge_dtype": "dtype"}


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
    values["examples"] = given_flags(args, EXAMPLE_FLAGS)
    autointerp = {field: getattr(args, flag) for flag, field in AUTOINTERP_FIELDS.items()
                  if getattr(args, flag) is not None}
    if "scorers" in autointerp:
        autointerp["scorers"] = [s.strip() for s in autointerp["scorers"].split(",") if s.strip()]
    values["autointerp"] = autointerp
    judge = {field: getattr(args, flag) for flag, field in JUDGE_FIELDS.items() if getattr(args, flag) is not None}
    if "model" in judge and "url" not in judge:
        raise ValueError("--llm-model names the model of a server; give --llm-url too (or --llm for a local one).")
    values["judge"] = judge
    return values


def run_baseline(args) -> int:
    from pathlib import Path

    from randsae.experiments.baseline import baseline, check_out, preflight, settings_for, stage_table
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.lm.examples import ExampleSettings

    settings = settings_for(args.preset, baseline_overrides(args))
    ExampleSettings(seed=settings.seed, **settings.examples).validate()
    AutointerpSettings(seed=settings.seed, **settings.autointerp).validate()
    if "url" in settings.judge:
        from randsae.autointerp.clients.openai import OpenAIJudge
        from randsae.experiments.baseline import judge_options

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


LM_COMMANDS = {"activations": run_activations, "train": run_train, "eval": run_eval, "latents": run_latents,
               "autointerp": run_autointerp, "compare": run_compare}
