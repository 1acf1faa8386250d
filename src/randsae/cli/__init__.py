"""The `randsae` command: one module per command group (`toy` for the sweeps, `lm`, `baseline`), this one
the parser and the way out. Bad input ends with one sentence on stderr and exit code 2; anything else is a
fault and keeps its traceback."""

import argparse
import errno
import logging
import os
import signal
import sys
from pathlib import Path

from randsae import runs
from randsae.cli import baseline, lm, toy
from randsae.cli.common import Parser, UsageError, flag_file_defaults
from randsae.errors import BadInput, RunFailed, Terminated, request_termination
from randsae.io import out_of_space

log = logging.getLogger("randsae")

DESCRIPTION = ("Sparse autoencoders on trained and random networks: would a random network give your SAE results "
               "too? Bad input ends with one sentence on stderr and exit code 2.")


def run_lm_command(args) -> None:
    lm.LM_COMMANDS[args.lm_command](args)


COMMANDS = {"toy": toy.run_sweep_command, "glove": toy.run_sweep_command, "plot": toy.run_plot_command,
            "toy2d": toy.run_toy2d_command, "lm": run_lm_command, "export": toy.run_export_command,
            "baseline": baseline.run_baseline, "recovery": toy.run_recovery_command}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="randsae", description=DESCRIPTION)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    from randsae.experiments.glove import GloveConfig
    from randsae.experiments.toy import ToyConfig

    toy.add_sweep_parser(sub, "toy", "the toy-model sweep (Sharkey data, Gaussian control, random MLP)",
                         ToyConfig)
    toy.add_sweep_parser(sub, "glove", "GloVe word vectors through the same sweep", GloveConfig)
    toy.add_plot_parser(sub)
    toy.add_toy2d_parser(sub)
    toy.add_export_parser(sub)
    toy.add_recovery_parser(sub)
    lm.add_lm_parser(sub, Parser)
    baseline.add_baseline_parser(sub)
    for command in sub.choices.values():  # -q also after the subcommand, without overriding it before
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info logs")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, over a `--config` file's settings where the command reads its flags from one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "_flag_file_parser", None)
    if command is not None and args.config is not None:
        command.set_defaults(**flag_file_defaults(command, args.config, args._flag_file_sections))
        args = parser.parse_args(argv)
    return args


def _terminated(signum, frame) -> None:
    request_termination(frame)


def main(argv: list[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        args = parse(argv)
        runs.set_command_line(sys.argv[1:] if argv is None else argv)
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
    except BadInput as e:  # only what the user got wrong; any other ValueError is a fault and keeps its traceback
        print(f"randsae: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"randsae: failed: {e}", file=sys.stderr)
        return 1
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
        if out_of_space(e):
            where = f" writing {Path(e.filename).parent}" if e.filename else ""
            why = "the file-size limit was reached" if e.errno == errno.EFBIG else "no space left on the device"
            print(f"randsae: error: {why}{where}; finished files are kept, free space and rerun to resume.",
                  file=sys.stderr)
            return 2
        if e.errno is None:  # raised by randsae with its own sentence (a path the user gave that is not there)
            print(f"randsae: error: {e}", file=sys.stderr)
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
    """-q: no progress bars and no warnings from the libraries randsae drives (transformers' "Loading
    weights", the hub's downloads, torch's and matplotlib's UserWarnings): only randsae's own warnings and
    errors. The libraries read these variables when they are first imported, which happens after this."""
    import warnings

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_VERBOSITY"] = "error"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "huggingface_hub", "torch", "matplotlib", "PIL", "httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
        sys.modules["transformers"].utils.logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(main())
