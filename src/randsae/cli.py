"""The `randsae` command. Bad input ends with one sentence on stderr and exit code 2."""

import argparse
import errno
import logging
import os
import signal
import sys
from pathlib import Path

from randsae.cliutil import Parser, UsageError, add_format_argument, figure_formats, given_flags, output_directory

log = logging.getLogger("randsae")


# flag → (config field, type, help). Each flag defaults to None so that only given flags override.
SWEEP_FLAGS = {
    "--transform": ("transform", str, "comma list of: none, mlp"),
    "--l1": ("l1", str, "coefficients: comma list, or start:stop:num log-spaced"),
    "--seeds": ("seeds", int, "number of seeds (0 … N-1)"),
    "--epochs": ("epochs", int, "training epochs"),
    "--batch-size": ("batch_size", int, "minibatch size"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--val-fraction": ("val_fraction", float, "share of points held out for the metrics"),
    "--l1-reduction": ("l1_reduction", str, "mean (over batch × latents, default) or sum (per-sample)"),
    "--sparsity-stats": ("sparsity_stats", str, "per-sample (default): Hoyer and L1/√L2 per sample, then "
                         "averaged; batch-mean: from batch-mean norms, as the authors' code"),
    "--device": ("device", str, "auto, cpu or cuda"),
}
TOY_FLAGS = {
    "--data": ("data", str, "comma list of: sharkey, gaussian"),
    "--latents": ("latents", str, "comma list of dictionary sizes"),
    "--num-samples": ("num_samples", int, "data points per data set"),
    "--num-inputs": ("num_inputs", int, "input dimension n_d"),
    "--num-features": ("num_features", int, "ground-truth features n_s"),
    "--avg-active": ("avg_active_features", float, "mean active features m"),
    "--lambda-decay": ("lambda_decay", float, "feature-frequency decay λ"),
    "--decay": ("decay", str, "power (Figure 21) or product (p·λ^i)"),
}
GLOVE_FLAGS = {
    "--data": ("data", str, "comma list of: glove, gaussian"),
    "--vectors": ("vectors", str, "a GloVe text file (default: the embedded 6B 50d vectors)"),
    "--latent-multiples": ("latent_multiples", str, "dictionary sizes as multiples of the dimension"),
}


def add_sweep_parser(sub, name: str, help_text: str, flags: dict) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--out", required=True, help="output directory (results.csv, config.json, figures)")
    p.add_argument("--preset", choices=["paper", "quick"], default="paper",
                   help="paper: the whole grid (default); quick: minutes on a laptop CPU")
    p.add_argument("--config", help="TOML or JSON file of settings (flags override it)")
    for flag, (_, kind, text) in {**flags, **SWEEP_FLAGS}.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--no-standardize", action="store_true",
                   help="skip the per-sample standardisation of SAE inputs")
    p.add_argument("--save-weights", action="store_true", help="keep every SAE as safetensors")
    p.add_argument("--no-plots", action="store_true", help="write the table only")
    add_format_argument(p)


def sweep_config(args, config_class, presets: dict, flags: dict):
    """Preset, then config file, then flags."""
    from randsae.config import read_config_file

    values = dict(presets[args.preset])
    if args.config:
        values.update(read_config_file(args.config))
    values.update(given_flags(args, {**flags, **SWEEP_FLAGS}))
    if args.no_standardize:
        values["standardize"] = False
    if args.save_weights:
        values["save_weights"] = True
    return config_class.from_dict(values)


def finish_sweep(args, out: Path, formats: list[str]) -> None:
    from randsae.experiments.sweep import read_results
    from randsae.plots import plot_results

    if int(os.environ.get("RANK", "0")) > 0:
        return  # under torchrun, rank 0 draws
    if not args.no_plots:
        for path in plot_results(read_results(out / "results.csv"), out, formats=formats):
            log.info("wrote %s", path)
    log.info("results in %s", out / "results.csv")


def run_toy_command(args) -> None:
    from randsae.experiments.toy import PRESETS, ToyConfig, run_toy

    config = sweep_config(args, ToyConfig, PRESETS, TOY_FLAGS)
    formats = figure_formats(args)
    with output_directory(args.out) as out:
        run_toy(config, out, progress=not args.quiet)
        finish_sweep(args, out, formats)


def run_glove_command(args) -> None:
    from randsae.experiments.glove import PRESETS, GloveConfig, run_glove

    config = sweep_config(args, GloveConfig, PRESETS, GLOVE_FLAGS)
    formats = figure_formats(args)
    with output_directory(args.out) as out:
        run_glove(config, out, progress=not args.quiet)
        finish_sweep(args, out, formats)


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="(re)draw the figures from a results table")
    p.add_argument("run", help="a run directory holding results.csv")
    p.add_argument("--out", help="where to write the figures (default: the run directory)")
    add_format_argument(p)


def run_plot_command(args) -> None:
    from randsae.experiments.sweep import read_results
    from randsae.plots import plot_results

    formats = figure_formats(args)
    table = Path(args.run) / "results.csv"
    if not table.is_file():
        raise FileNotFoundError(
            f"{table} does not exist; give a directory written by `randsae toy` or `randsae glove`.")
    rows = read_results(table)
    if not rows:
        raise ValueError(f"{table} has no rows to plot.")
    with output_directory(args.out or args.run) as out:
        for path in plot_results(rows, out, formats=formats):
            log.info("wrote %s", path)


def add_toy2d_parser(sub) -> None:
    p = sub.add_parser("toy2d", help="the 2-D Lomax demonstration (paper Fig. 3)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    add_format_argument(p)


def run_toy2d_command(args) -> None:
    from randsae.data import lomax
    from randsae.plots import plot_lomax
    from randsae.resources import check_memory

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive integer, not {args.num_samples}.")
    formats = figure_formats(args)
    check_memory(lomax.bytes_needed(args.num_samples), f"the 2-D demo with {args.num_samples:,} samples")
    with output_directory(args.out) as out:
        demo = lomax.generate(args.num_samples, seed=args.seed)
        path = plot_lomax(demo.inputs.numpy(), demo.outputs.numpy(), out / "lomax_2d.png", formats=formats)
        log.info("wrote %s", path)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="SAEs in the layout another tool opens: sparsify (and delphi), SAELens")
    p.add_argument("run", help="an `lm train` run (its layer.<i> SAEs) or one SAE directory")
    p.add_argument("--format", required=True, help="sparsify or saelens")
    p.add_argument("--out", required=True)


def run_export_command(args) -> None:
    from randsae.experiments.export import EXPORT_FORMATS, export

    if args.format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {args.format!r}; choose from {', '.join(EXPORT_FORMATS)}.")
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"{args.run} is not a directory of SAEs.")
    with output_directory(args.out) as out:
        export(args.run, out, args.format)


def run_lm_command(args) -> None:
    from randsae.lm.cli import LM_COMMANDS

    LM_COMMANDS[args.lm_command](args)


def run_baseline_command(args) -> int:
    from randsae.lm.cli import run_baseline

    return run_baseline(args)


COMMANDS = {"toy": run_toy_command, "glove": run_glove_command, "plot": run_plot_command,
            "toy2d": run_toy2d_command, "lm": run_lm_command, "export": run_export_command,
            "baseline": run_baseline_command}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="randsae", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_sweep_parser(sub, "toy", "the toy-model sweep (Sharkey data, Gaussian control, random MLP)",
                     TOY_FLAGS)
    add_sweep_parser(sub, "glove", "GloVe word vectors through the same sweep", GLOVE_FLAGS)
    add_plot_parser(sub)
    add_toy2d_parser(sub)
    add_export_parser(sub)
    from randsae.lm.cli import add_baseline_parser, add_lm_parser

    add_lm_parser(sub, Parser)
    add_baseline_parser(sub)
    for command in sub.choices.values():  # -q also after the subcommand, without overriding it before
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info logs")
    return parser


def _terminated(signum, frame) -> None:
    raise Terminated


class Terminated(BaseException):  # not an Exception: no "except Exception" swallows it
    """SIGTERM, turned into an exception so that open files are closed and locks released on the way out."""


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        args = build_parser().parse_args(argv)
        args.quiet = args.quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 reports
        # randsae's own progress notes at INFO; other libraries only warn
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("randsae").setLevel(logging.WARNING if args.quiet else logging.INFO)
        if args.quiet:
            quiet_libraries()
        status = COMMANDS[args.command](args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"randsae: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("randsae: error: out of memory; choose smaller sizes (samples, latents, batch).", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if "allocate" not in str(e) and "out of memory" not in str(e):
            raise
        first = str(e).strip().splitlines()[0]
        print(f"randsae: error: out of memory ({first}); choose smaller sizes.", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENOSPC:
            where = f" writing {Path(e.filename).parent}" if e.filename else ""
            print(f"randsae: error: no space left on the device{where}; finished files are kept, free space "
                  "and rerun to resume.", file=sys.stderr)
            return 2
        print(f"randsae: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("randsae: interrupted; finished rows are kept, rerun to resume.", file=sys.stderr)
        return 130
    except Terminated:
        print("randsae: terminated (SIGTERM); finished rows are kept, rerun to resume.", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status if isinstance(status, int) else 0  # baseline: 1 when a stage failed


def quiet_libraries() -> None:
    """-q: no progress bars from the libraries randsae drives (transformers' "Loading weights", the hub's
    downloads). They read this variable when they are first imported, which happens after this."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
