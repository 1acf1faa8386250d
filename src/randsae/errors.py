"""The one line between the user's mistakes and ours.

`BadInput` is what the user got wrong — a flag, a file, a directory, a setting — said in one sentence that
names it and what to do instead. The CLI prints that sentence and exits with code 2. Every other exception
is a fault of randsae's (or of a library under it): it keeps its traceback, and the CLI exits with code 1.
"""


class BadInput(ValueError):
    """Bad input, in one sentence: the CLI prints it and exits 2. A `ValueError`, so that library callers
    catching those keep working."""


class RunFailed(Exception):
    """The command did what it was asked but nothing came of it, for a reason outside randsae and the input
    (a judge that answered no call usably): one sentence, what was kept, and exit code 1 — never a success."""


class Terminated(BaseException):  # not an Exception: no "except Exception" swallows it
    """SIGTERM, turned into an exception so that open files are closed and locks released on the way out."""


_termination = {"requested": False}


def request_termination(frame=None) -> None:
    """SIGTERM's handler: raise `Terminated` where the program is. Where an exception raised there would be
    ignored — inside the import machinery's callbacks, which Python runs as "unraisable" — only note it;
    the next `check_terminated` in a long loop raises it."""
    _termination["requested"] = True
    code = getattr(frame, "f_code", None)
    if code is None or not code.co_filename.startswith("<frozen importlib"):
        raise Terminated


def check_terminated() -> None:
    """Raise `Terminated` when a SIGTERM arrived at a place that could not raise it (long loops call this)."""
    if _termination["requested"]:
        raise Terminated


def check_seed(seed: object, flag: str = "--seed") -> None:
    """Seeds are whole numbers from 0, the same in every command."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadInput(f"{flag} must be a whole number from 0, not {seed!r}.")
