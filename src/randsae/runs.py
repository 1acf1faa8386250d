"""The run contract every command's output directory follows, and where an output came from.

Each command's OUT/config.json holds its settings, the command that wrote it (`command`) and its provenance
(`provenance`: randsae's version, the git commit of the code when it runs from a checkout, the command line,
Python's and PyTorch's versions, when). A command refuses, in one sentence, a directory that holds another
command's output; comparing settings on a rerun ignores the provenance (a rerun is a new command line).
Directories written before these keys existed carry neither: they still resume, or are refused by their
settings as before.
"""

import functools
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import randsae
from randsae import io
from randsae.errors import BadInput

COMMAND = "command"
PROVENANCE = "provenance"
_command_line: list[str] = []


def set_command_line(argv: list[str]) -> None:
    """The arguments the CLI was given (recorded in every output's provenance)."""
    _command_line[:] = ["randsae", *argv]


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout randsae runs from (with "+changes" when its tree differs), or None when it
    is installed from a package."""
    root = Path(randsae.__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def provenance() -> dict:
    import torch

    return {"randsae": randsae.__version__, "commit": git_commit(),
            "command_line": shlex.join(_command_line) if _command_line else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "written": datetime.now(UTC).isoformat(timespec="seconds")}


def stamped(command: str, record: dict) -> dict:
    """`record` as OUT/config.json holds it: the command first, the provenance last (JSON-ready)."""
    return io.json_round_trip({COMMAND: command, **record, PROVENANCE: provenance()})


def settings_of(record: dict) -> dict:
    """A config.json record without what changes from one run to the next (command, provenance)."""
    return {k: v for k, v in record.items() if k not in (COMMAND, PROVENANCE)}


def command_of(record: dict) -> str | None:
    """The command that wrote a config.json record (None for one written before the key existed)."""
    if record.get(COMMAND):
        return record[COMMAND]
    return "baseline" if record.get("study") else None


def previous_record(out: Path, command: str) -> dict | None:
    """OUT/config.json, or None; one sentence when it is another command's output."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    try:
        previous = io.read_json(path)
    except BadInput as e:
        raise BadInput(f"{str(e).rstrip('.')}; move it away or choose another --out.") from None
    other = command_of(previous)
    if other is not None and other != command:
        raise BadInput(f"{out} holds the output of `randsae {other}` ({path}); choose another --out.")
    return previous


def same_settings(out: Path, command: str, record: dict, holds: str) -> dict | None:
    """OUT/config.json's record (None: a new OUT), refused in one sentence naming what changed when its settings
    are not `record`'s (`holds`: what OUT holds, e.g. "an evaluation")."""
    previous = previous_record(out, command)
    if previous is not None and settings_of(previous) != record:
        changed = ", ".join(k for k in record if previous.get(k) != record[k])
        raise BadInput(f"{out} holds {holds} with other settings ({changed}: see {Path(out) / 'config.json'}); "
                       "choose another --out.")
    return previous


def write_record(out: Path, command: str, record: dict) -> Path:
    return io.write_json(Path(out) / "config.json", stamped(command, record))


SAE_CONFIG = "cfg.json"  # one SAE's folder (SAELens's and sparsify's layout)


def held_by(directory: Path) -> tuple[str | None, str] | None:
    """(the command that wrote it, what it is for the user) of what `directory` holds, by the files each
    command leaves; None when it holds nothing a command wrote. A lone SAE has no command."""
    config = directory / "config.json"
    if config.is_file():
        try:
            record = io.read_json(config)
        except BadInput:
            record = {}
        if "hookpoints" in record:
            return "export", "SAEs exported for sparsify (`randsae export`)"
        command = command_of(record)
        if command is not None:
            return command, f"the output of `randsae {command}`"
    if (directory / "manifest.json").is_file():
        return "lm activations", "an activation cache (`randsae lm activations`)"
    if (directory / SAE_CONFIG).is_file():
        return None, "an SAE (cfg.json)"
    if any((d / SAE_CONFIG).is_file() for d in directory.glob("layer.*")):
        return "export", "SAEs in layer.<i>/ folders"
    return None


Inputs = Mapping[str, str | Path | Sequence[str | Path] | None]  # a command's input flags → what they were given


def check_out(out: Path, command: str, inputs: Inputs) -> None:
    """--out is never one of the command's inputs (nor inside one), and never another command's output:
    one sentence naming what it holds. `inputs` maps each input flag to what it was given (a path, a list of
    them, or None); `command`'s own output is what a rerun resumes."""
    out = Path(out)
    target = out.resolve()
    for flag, given in inputs.items():
        for path in [given] if given is None or isinstance(given, str | Path) else given:
            if path is None or not Path(path).exists():
                continue
            source = Path(path).resolve()
            if target == source or source in target.parents:
                where = "is" if target == source else "lies inside"
                raise BadInput(f"--out {out} {where} the input {flag} {path}; choose another --out (a command "
                               "never writes into its inputs).")
    holds = held_by(out) if out.is_dir() else None
    if holds is not None and holds[0] != command:
        raise BadInput(f"{out} holds {holds[1]}; choose another --out.")
    if holds is None:
        previous_record(out, command)  # a config.json that is not JSON: said so
        check_no_foreign_files(out)


def check_no_foreign_files(out: Path) -> None:
    """OUT, when it exists and holds no record of a run, holds nothing else either (hidden files aside): one
    sentence naming a file found there. No command writes over a file it did not write."""
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    found = next((name for name in names if not name.startswith(".")), None)
    if found is not None:
        raise BadInput(f"--out {out} holds {found} and no record of a randsae run; choose an empty or new --out "
                       "(randsae never writes over a file it did not write).")
