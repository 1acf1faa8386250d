"""`randsae toy`, `glove`, `plot`, `toy2d` and `export`: the superposition sweeps, their figures, and SAEs in
other tools' layouts."""

import logging
import os
from pathlib import Path

from randsae import runs
from randsae.cli.common import add_config_argument, add_format_argument, figure_formats, output_directory
from randsae.errors import BadInput, check_seed
from randsae.settings import add_flags, given

log = logging.getLogger("randsae")


def add_sweep_parser(sub, name: str, help_text: str, config_class) -> None:
    """The flags come from the config's fields (`randsae.settings`): its data settings, then the sweep's."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--out", required=True, help="output directory (results.csv, config.json, figures)")
    p.add_argument("--preset", choices=["paper", "quick"], default="paper",
                   help="paper: the whole grid (default); quick: minutes on a laptop CPU")
    p.add_argument("--config", help="TOML or JSON file of settings (flags override it)")
    add_flags(p, config_class)
    p.add_argument("--no-plots", action="store_true", help="write the table only")
    add_format_argument(p)


def sweep_config(args, config_class, presets: dict):
    """Preset, then config file, then flags; the file's every value checked, even one a flag overrides."""
    from randsae.config import coerce, read_config_file

    values = dict(presets[args.preset])
    if args.config:
        values.update(coerce(config_class, read_config_file(args.config)))
    values.update(given(args, config_class))
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


def run_sweep_command(args) -> None:
    """`randsae toy` or `randsae glove`: preset, file and flags into the config, the sweep, its figures."""
    from randsae.experiments import glove, toy

    config_class, presets, run = {"toy": (toy.ToyConfig, toy.PRESETS, toy.run_toy),
                                  "glove": (glove.GloveConfig, glove.PRESETS, glove.run_glove)}[args.command]
    config = sweep_config(args, config_class, presets)
    formats = figure_formats(args)
    with output_directory(args.out, command=config_class.COMMAND) as out:
        run(config, out, progress=not args.quiet)
        finish_sweep(args, out, formats)


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="(re)draw the figures from a results table")
    p.add_argument("run", help="a run directory holding results.csv")
    p.add_argument("--out", help="where to write the figures (default: the run directory)")
    add_format_argument(p)
    add_config_argument(p)


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
        raise BadInput(f"{table} has no rows to plot.")
    into_run = args.out is None or Path(args.out).resolve() == Path(args.run).resolve()
    with output_directory(args.out or args.run, command=None if into_run else "plot") as out:
        if not into_run:  # figures of their own: a record says which run they draw
            runs.write_record(out, "plot", {"run": str(Path(args.run).resolve()), "formats": formats})
        for path in plot_results(rows, out, formats=formats):
            log.info("wrote %s", path)


def add_toy2d_parser(sub) -> None:
    p = sub.add_parser("toy2d", help="the 2-D Lomax demonstration (paper Fig. 3)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    add_format_argument(p)
    add_config_argument(p)


def run_toy2d_command(args) -> None:
    from randsae.data import lomax
    from randsae.plots import plot_lomax
    from randsae.resources import check_memory

    if args.num_samples < 1:
        raise BadInput(f"--num-samples must be a positive integer, not {args.num_samples}.")
    check_seed(args.seed)
    formats = figure_formats(args)
    check_memory(lomax.bytes_needed(args.num_samples), f"the 2-D demo with {args.num_samples:,} samples")
    with output_directory(args.out, command="toy2d") as out:
        demo = lomax.generate(args.num_samples, seed=args.seed)
        path = plot_lomax(demo.inputs.numpy(), demo.outputs.numpy(), out / "lomax_2d.png", formats=formats)
        runs.write_record(out, "toy2d", {"num_samples": args.num_samples, "seed": args.seed, "formats": formats})
        log.info("wrote %s", path)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="SAEs in the layout another tool opens: sparsify (and delphi), SAELens")
    p.add_argument("run", help="an `lm train` run (its layer.<i> SAEs) or one SAE directory")
    p.add_argument("--format", required=True, help="sparsify or saelens")
    p.add_argument("--out", required=True)
    add_config_argument(p)


def run_export_command(args) -> None:
    from randsae.experiments.export import EXPORT_FORMATS, export

    if args.format not in EXPORT_FORMATS:
        raise BadInput(f"unknown export format {args.format!r}; choose from {', '.join(EXPORT_FORMATS)}.")
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"{args.run} is not a directory of SAEs.")
    with output_directory(args.out, command="export", inputs={"RUN": args.run}) as out:
        export(args.run, out, args.format)


def add_recovery_parser(sub) -> None:
    from randsae.experiments.recovery import RecoveryConfig

    p = sub.add_parser("recovery", help="where the truth is known: every SAE architecture, trained and with "
                                        "random dictionaries, on the independent-feature toy, by samples seen")
    p.add_argument("--out", required=True, help="output directory (recovery.csv, table.md, recovery.png, state/)")
    p.add_argument("--preset", choices=["paper", "quick"], default="paper",
                   help="paper: Korznikov et al.'s shape, 100 inputs, 3,200 features (default); quick: the same "
                        "ratios at 25 → 800, minutes on a laptop CPU")
    p.add_argument("--config", help="TOML or JSON file of settings (flags override it)")
    add_flags(p, RecoveryConfig)
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    add_format_argument(p)


def run_recovery_command(args) -> None:
    from randsae.experiments import recovery

    config = sweep_config(args, recovery.RecoveryConfig, recovery.PRESETS)
    formats = figure_formats(args)
    with output_directory(args.out, command=recovery.COMMAND) as out:
        rows = recovery.run_recovery(config, out, progress=not args.quiet)
        for path in recovery.write_outputs(rows, config, out, formats, plots=not args.no_plots):
            log.info("wrote %s", path)
