"""What every `randsae` command shares: the one-sentence error, the parser that raises it, output
directories (created, proved writable, locked against a second writer, removed again when a failed run
leaves them empty) and counts like 1M. Flags come from the settings' fields (`randsae.settings`).

Every module of `randsae.cli` imports from here.
"""

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from randsae.config import parse_count  # noqa: F401 (the commands read counts through here)
from randsae.errors import BadInput

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, as before
    fcntl = None

LOCK_FILE = ".randsae.lock"


class UsageError(BadInput):
    """Bad input from the command line (argparse's own sentence, which names the program): exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence instead of argparse's usage dump
        raise UsageError(f"{self.prog}: {message}.")


def _lock(out: Path) -> int | None:
    """An exclusive advisory lock on OUT/.randsae.lock, held by an open descriptor: the kernel releases it
    when the process ends, however it ends (kill -9 included). The file is empty and is removed by the
    holder on the way out (see `_unlock`), so a finished or refused run leaves OUT as it found it."""
    if fcntl is None:
        return None
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{out} is in use by another randsae run; wait for it to finish or choose "
                             "another --out.") from None
        try:  # the holder may have removed the file between our open and our lock: lock the current one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _unlock(out: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then release it."""
    try:
        (out / LOCK_FILE).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the directories this run made (deepest first) while they are empty."""
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


@contextmanager
def output_directory(path: str | Path, lock: bool = True) -> Iterator[Path]:
    """OUT for one run: created if needed, proved writable, and locked so that a second run into it is
    refused in one sentence. Under torchrun only rank 0 takes the lock (the others write nothing). On the
    way out, directories this call created are removed again if the run left them empty."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory.")
    created, parent = [], out
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    fd = None
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            if lock and int(os.environ.get("RANK", "0")) == 0:
                fd = _lock(out)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}.") from None
        yield out
    finally:
        if fd is not None:
            _unlock(out, fd)
        _remove_if_empty(created)


def add_format_argument(p) -> None:
    p.add_argument("--format", default="png", help="figure formats, a comma list of png, pdf, svg (default png; "
                                                   "pdf and svg are vector output for papers)")


def figure_formats(args) -> list[str]:
    """The --format of a drawing command, checked before any work starts."""
    from randsae.plots import parse_formats

    return parse_formats(args.format)
