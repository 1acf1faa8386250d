"""The `randsae` command. Bad input ends with one sentence on stderr and exit code 2."""

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("randsae")


class UsageError(Exception):
    """Bad input from the command line: reported as one sentence, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of argparse's usage dump
        raise UsageError(f"{self.prog}: {message}.")


def writable_directory(path: str) -> Path:
    """Create `path` if needed and prove a file can be written there."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}.") from None
    return out


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


def given_flags(args, flags: dict) -> dict:
    """{config field: value} of the flags in `flags` (flag → (field, type, help)) that were given."""
    values = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in flags.items()}
    return {field: value for field, value in values.items() if value is not None}


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


def finish_sweep(args, out: Path) -> None:
    from randsae.io import read_rows
    from randsae.plots import plot_results

    if not args.no_plots:
        for path in plot_results(read_rows(out / "results.csv"), out):
            log.info("wrote %s", path)
    log.info("results in %s", out / "results.csv")


def run_toy_command(args) -> None:
    from randsae.experiments.toy import PRESETS, ToyConfig, run_toy

    config = sweep_config(args, ToyConfig, PRESETS, TOY_FLAGS)
    out = writable_directory(args.out)
    run_toy(config, out, progress=not args.quiet)
    finish_sweep(args, out)


def run_glove_command(args) -> None:
    from randsae.experiments.glove import PRESETS, GloveConfig, run_glove

    config = sweep_config(args, GloveConfig, PRESETS, GLOVE_FLAGS)
    out = writable_directory(args.out)
    run_glove(config, out, progress=not args.quiet)
    finish_sweep(args, out)


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="(re)draw the figures from a results table")
    p.add_argument("run", help="a run directory holding results.csv")
    p.add_argument("--out", help="where to write the figures (default: the run directory)")


def run_plot_command(args) -> None:
    from randsae.io import read_rows
    from randsae.plots import plot_results

    table = Path(args.run) / "results.csv"
    if not table.is_file():
        raise FileNotFoundError(
            f"{table} does not exist; give a directory written by `randsae toy` or `randsae glove`.")
    rows = read_rows(table)
    if not rows:
        raise ValueError(f"{table} has no rows to plot.")
    out = writable_directory(args.out or args.run)
    for path in plot_results(rows, out):
        log.info("wrote %s", path)


def add_toy2d_parser(sub) -> None:
    p = sub.add_parser("toy2d", help="the 2-D Lomax demonstration (paper Fig. 3)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)


def run_toy2d_command(args) -> None:
    from randsae.data import lomax
    from randsae.plots import plot_lomax

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive integer, not {args.num_samples}.")
    out = writable_directory(args.out)
    demo = lomax.generate(args.num_samples, seed=args.seed)
    log.info("wrote %s", plot_lomax(demo.inputs.numpy(), demo.outputs.numpy(), out / "lomax_2d.png"))


def run_lm_command(args) -> None:
    from randsae.lm.cli import LM_COMMANDS

    LM_COMMANDS[args.lm_command](args)


COMMANDS = {"toy": run_toy_command, "glove": run_glove_command, "plot": run_plot_command,
            "toy2d": run_toy2d_command, "lm": run_lm_command}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="randsae", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_sweep_parser(sub, "toy", "the toy-model sweep (Sharkey data, Gaussian control, random MLP)",
                     TOY_FLAGS)
    add_sweep_parser(sub, "glove", "GloVe word vectors through the same sweep", GLOVE_FLAGS)
    add_plot_parser(sub)
    add_toy2d_parser(sub)
    from randsae.lm.cli import add_lm_parser

    add_lm_parser(sub, Parser)
    for command in sub.choices.values():  # -q also after the subcommand, without overriding it before
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.quiet = args.quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 reports
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        COMMANDS[args.command](args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"randsae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("randsae: interrupted; finished rows are kept, rerun to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
