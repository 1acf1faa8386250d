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


def write_record(out: Path, command: str, record: dict) -> Path:
    return io.write_json(Path(out) / "config.json", stamped(command, record))
