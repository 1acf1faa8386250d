"""The one line between the user's mistakes and ours.

`BadInput` is what the user got wrong — a flag, a file, a directory, a setting — said in one sentence that
names it and what to do instead. The CLI prints that sentence and exits with code 2. Every other exception
is a fault of randsae's (or of a library under it): it keeps its traceback, and the CLI exits with code 1.
"""


class BadInput(ValueError):
    """Bad input, in one sentence: the CLI prints it and exits 2. A `ValueError`, so that library callers
    catching those keep working."""
