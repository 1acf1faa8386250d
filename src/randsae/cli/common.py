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

from randsae import runs
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
def output_directory(path: str | Path, lock: bool = True, command: str | None = None,
                     inputs: runs.Inputs | None = None) -> Iterator[Path]:
    """OUT for one run: created if needed, proved writable, and locked so that a second run into it is
    refused in one sentence. With `command`, refused too when OUT is one of its `inputs` (flag → paths) or
    holds another command's output (`runs.check_out`). Under torchrun only rank 0 takes the lock (the others
    write nothing). On the way out, directories this call created are removed again if the run left them
    empty."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory.")
    if command is not None:
        runs.check_out(out, command, inputs or {})
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


def add_config_argument(p: argparse.ArgumentParser, sections: tuple[str, ...] = ()) -> None:
    """`--config FILE` on a command whose settings are its flags: the file's keys are the flags' names
    (`batch_size` or `batch-size`; a table such as `[judge]` holds the flags named `--judge-…`), its values
    stand in for the defaults, and a flag given on the command line wins. A key of one of `sections` may also
    stand alone (`url` for `--judge-url`). Inputs and outputs (positional arguments, required flags, `--out`)
    stay on the command line."""
    p.add_argument("--config", help="TOML or JSON file of this command's settings, keyed by flag name "
                                    "(flags given on the command line override it)")
    p.set_defaults(_flag_file_parser=p, _flag_file_sections=sections)


def _settings_actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each setting's action by its name: its dest's, and its flag's where that differs (`prompt_format` for
    --prompt-format; not a switch's, whose `--no-…` flag stores the opposite of its name)."""
    actions = [a for a in p._actions if a.option_strings and not a.required
               and a.dest not in ("help", "config", "out", "quiet") and not isinstance(a, argparse._HelpAction)]
    names = {a.option_strings[-1].removeprefix("--").replace("-", "_"): a for a in actions if a.nargs != 0}
    return {**names, **{a.dest: a for a in actions}}


def _flattened(values: dict) -> dict:
    """`[judge] url = …` → `judge_url`; keys with dashes read as the flag spells them."""
    flat = {}
    for key, value in values.items():
        key = str(key).replace("-", "_")
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in _flattened(value).items()})
        else:
            flat[key] = value
    return flat


def _resolve_key(key: str, actions: dict[str, argparse.Action], sections: tuple[str, ...]) -> str | None:
    """The dest a file's key names: itself, or a section's (`llm` → `judge_llm`)."""
    if key in actions:
        return key
    return next((f"{s}_{key}" for s in sections if f"{s}_{key}" in actions), None)


def _flag_value(key: str, value, action: argparse.Action, path: str):
    """A file's value as the flag's own parsing would give it; a value of the wrong kind is one sentence."""
    from randsae.config import strict_scalar

    flag = action.option_strings[-1]
    if action.nargs == 0:  # a switch: the file gives the value it stores, true or false
        if not isinstance(value, bool):
            raise BadInput(f"config file {path}: setting {key} ({flag}) must be true or false, not {value!r}.")
        return value
    kind = action.type
    if kind in (int, float):
        try:
            value = strict_scalar(key, value, kind)
        except BadInput as e:
            raise BadInput(f"config file {path}: {e}") from None
    else:
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadInput(f"config file {path}: setting {key} ({flag}) must be text, not {value!r}.")
        value = str(value)
        if callable(kind):
            try:
                value = kind(value)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
                raise BadInput(f"config file {path}: cannot read setting {key} ({flag}) {value!r}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise BadInput(f"config file {path}: setting {key} ({flag}) must be one of "
                       f"{', '.join(map(str, action.choices))}, not {value!r}.")
    return value


def flag_file_defaults(p: argparse.ArgumentParser, path: str, sections: tuple[str, ...] = ()) -> dict:
    """{dest: value} from a `--config` file of a command whose settings are its flags (see
    `add_config_argument`): an unknown key or a value of the wrong kind is one sentence naming it."""
    from randsae.config import read_config_file

    actions = _settings_actions(p)
    defaults = {}
    for key, value in _flattened(read_config_file(path)).items():
        name = _resolve_key(key, actions, sections)
        if name is None:
            known = ", ".join(sorted(actions)) or "none (its inputs and --out go on the command line)"
            raise BadInput(f"config file {path}: unknown setting {key!r}; known settings are {known}.")
        defaults[actions[name].dest] = _flag_value(key, value, actions[name], path)
    return defaults
