"""Atomic file writes and the results table: nothing half-written is ever left under its real name."""

import contextlib
import csv
import errno
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from randsae.errors import BadInput

# called with each path that `atomic_write` has just put in place: the kill-and-resume tests kill on what a
# run writes, never on a timer (see `randsae.study.runner.KillForTest`)
AFTER_WRITE: list[Callable[[Path], None]] = []


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file here; some writers (safetensors) give 0600
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(error: BaseException) -> bool:
    """A write that failed for want of space (a full disk, a quota, a file-size limit), however the library
    that wrote says it: an OSError, or safetensors' own error carrying the OS's text."""
    if isinstance(error, OSError):
        return error.errno in NO_SPACE
    text = str(error)
    return type(error).__name__ == "SafetensorError" and any(
        f"os error {code}" in text for code in NO_SPACE)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary file beside `path`, then rename it over `path` (readable as any new
    file here is). A write that runs out of space is an OSError(ENOSPC) naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            write(tmp)
        except Exception as e:
            if out_of_space(e) and not (isinstance(e, OSError) and e.filename):
                code = (e.errno if isinstance(e, OSError) else None) or next(
                    (c for c in NO_SPACE if f"os error {c}" in str(e)), errno.ENOSPC)
                raise OSError(code, os.strerror(code), str(path)) from None
            raise
        if tmp.is_file() and (tmp.stat().st_mode & 0o777) != FILE_MODE:
            tmp.chmod(FILE_MODE)
        tmp.replace(path)
        for hook in AFTER_WRITE:
            hook(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_round_trip(data):
    """`data` as it reads back from JSON (tuples become lists, keys strings): for comparing records."""
    return json.loads(json.dumps(data))


def write_json(path: str | Path, data: dict) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV table as dicts of strings; an absent file is an empty table."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = []
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise BadInput(f"{path} line {reader.line_num} has {len(cells)} cells where its header "
                                     f"has {len(header)}.")
                rows.append(dict(zip(header, cells, strict=True)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInput(f"{path} is not a readable CSV table ({e}).") from None
    return rows


def check_columns(path: str | Path, rows: list[dict], columns: Sequence[str], numeric: Sequence[str] = ()) -> None:
    """Every row of the table at `path` has `columns`, and `numeric` ones hold numbers (or are empty):
    one sentence naming the file, the row and the column otherwise."""
    for number, row in enumerate(rows, start=2):
        missing = [c for c in columns if c not in row]
        if missing:
            raise BadInput(f"{path} has no column {missing[0]!r}; is it the right kind of table?")
        for column in numeric:
            value = row.get(column)
            if value in (None, ""):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise BadInput(f"{path} row {number}: {column} is {value!r}, not a number.") from None


def write_rows(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write the whole table atomically; missing values (None) become empty cells."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return atomic_write(path, write)


def read_json(path: str | Path, fields: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """A JSON object from `path`, with `fields` (name → type) present and of their types; anything else is
    one sentence naming the file (and the key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"{path} is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} holds a JSON {type(data).__name__}, not an object of settings.")
    check_fields(data, fields or {}, path)
    return data


def check_fields(data: dict, fields: dict[str, type | tuple[type, ...]], where: str | Path) -> None:
    """Each of `fields` (name → type) is in `data` with that type (an int is not a bool)."""
    for name, kind in fields.items():
        if name not in data:
            raise BadInput(f"{where} lacks the key {name!r}.")
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise BadInput(f"{where}: {name!r} must be {names}, not {value!r}.")


SAFETENSORS_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
                          "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: str | Path) -> dict[str, dict]:
    """The header of a safetensors file ({name: {dtype, shape, data_offsets}}), after checking that it
    parses and that the file holds exactly the bytes it describes: a truncated or corrupt file is one
    sentence naming it, not an error deep inside the reader."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    size = path.stat().st_size

    def bad(reason: str) -> BadInput:
        return BadInput(f"{path} is not a complete safetensors file ({reason}); it is truncated or corrupt.")

    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes")
        length = int.from_bytes(head, "little")
        if length > size - 8:
            raise bad(f"its header claims {length:,} bytes of a {size:,}-byte file")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not an object")
    end = 0
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (start, stop) = [int(n) for n in info["shape"]], info["data_offsets"]
            count = math.prod(shape) * SAFETENSORS_ITEM_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} is described badly") from None
        if stop - start != count or start < 0:
            raise bad(f"tensor {name!r} has the wrong number of bytes")
        end = max(end, stop)
        tensors[name] = info
    if 8 + length + end != size:
        raise bad(f"{size:,} bytes where its header describes {8 + length + end:,}")
    return tensors


def load_safetensors(path: str | Path, names: list[str] | None = None) -> dict:
    """The tensors of a checked safetensors file (`check_safetensors`); `names` must all be in it."""
    from safetensors.torch import load_file

    header = check_safetensors(path)
    missing = [name for name in names or [] if name not in header]
    if missing:
        raise BadInput(f"{path} lacks the tensor {missing[0]!r}.")
    return load_file(str(path))


def cache_dir(*parts: str) -> Path:
    """Where randsae keeps what it converts once (parsed word vectors, converted models):
    $RANDSAE_CACHE, default ~/.cache/randsae."""
    return Path(os.environ.get("RANDSAE_CACHE", Path.home() / ".cache" / "randsae"), *parts)


def file_key(path: Path, length: int = 16) -> str:
    """A short key that changes when the file at `path` is replaced or modified (path, size, mtime)."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:length]


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created) for the block: processes that share a file take turns."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
