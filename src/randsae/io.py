"""Atomic file writes and the results table: nothing half-written is ever left under its real name."""

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, data: dict) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV table as dicts of strings; an absent file is an empty table."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write the whole table atomically; missing values (None) become empty cells."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return atomic_write(path, write)


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON.") from None


def cache_dir(*parts: str) -> Path:
    """Where randsae keeps what it converts once (parsed word vectors, converted models):
    $RANDSAE_CACHE, default ~/.cache/randsae."""
    return Path(os.environ.get("RANDSAE_CACHE", Path.home() / ".cache" / "randsae"), *parts)


def file_key(path: Path, length: int = 16) -> str:
    """A short key that changes when the file at `path` is replaced or modified (path, size, mtime)."""
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:length]
