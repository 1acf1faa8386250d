"""Probing tasks with no labels to download, derived from the tokens of any text (docs/choices.md "Probing and
absorption"), and the user's own labelled texts.

Token-level, two families:
- *token* — answered by the token alone: its first letter (one task per letter, among word tokens), capitalised,
  punctuation;
- *context* — answered only from the context: the next token's class (a newline, punctuation, a capital), inside
  brackets, inside quotes, the token seen earlier in the same context, past the Nth token of its line.
Each task labels every token 1, 0, or −1 (left out: a non-word for a first letter, the last token of a context
for the next token's class).

Sequence-level, family *data*: a JSONL or CSV file of `text` and `label` (one task per class against the rest;
one task for two classes), each text mean-pooled over its tokens as SAEBench does."""

import csv
import json
import math
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from randsae.errors import BadInput

FAMILIES = ("token", "context", "data")
PUNCTUATION = set(string.punctuation) | set("“”‘’—–…")
OPENING, CLOSING = "([{", ")]}"
QUOTES = '"“”'
LINE_POSITION = 8  # "late in line": more than this many tokens since the line began


@dataclass
class Task:
    name: str
    family: str
    labels: np.ndarray  # per row: 1, 0 or −1 (left out)


def token_texts(tokenizer, ids: np.ndarray) -> dict[int, str]:
    """Each distinct id's text as the tokenizer decodes it alone."""
    return {int(i): tokenizer.decode([int(i)]) for i in np.unique(ids)}


def word_of(text: str) -> str:
    return text.strip()


def token_tasks(ids: np.ndarray, texts: dict[int, str], families: tuple[str, ...] = ("token", "context"),
                line_position: int = LINE_POSITION) -> list[Task]:
    """The token-level tasks of `ids` (contexts × length), each labelling every token (flattened row-major)."""
    words = np.vectorize(lambda i: word_of(texts[int(i)]), otypes=[object])(ids)
    raw = np.vectorize(lambda i: texts[int(i)], otypes=[object])(ids)
    first = np.vectorize(lambda w: w[:1], otypes=[object])(words)
    is_word = np.vectorize(lambda c: c.isalpha() and c.isascii(), otypes=[bool])(first)
    capital = np.vectorize(lambda c: c.isupper(), otypes=[bool])(first)
    punctuation = np.vectorize(lambda w: bool(w) and all(c in PUNCTUATION for c in w), otypes=[bool])(words)
    newline = np.vectorize(lambda t: "\n" in t, otypes=[bool])(raw)
    tasks = []
    if "token" in families:
        lower = np.vectorize(lambda c: c.lower(), otypes=[object])(first)
        for letter in string.ascii_lowercase:
            tasks.append(Task(f"first letter {letter}", "token",
                              np.where(is_word, (lower == letter).astype(np.int8), -1).reshape(-1)))
        tasks.append(Task("capitalised", "token", capital.astype(np.int8).reshape(-1)))
        tasks.append(Task("punctuation", "token", punctuation.astype(np.int8).reshape(-1)))
    if "context" in families:
        for name, what in (("next is a newline", newline), ("next is punctuation", punctuation),
                           ("next is capitalised", capital)):
            labels = np.full(ids.shape, -1, dtype=np.int8)
            labels[:, :-1] = what[:, 1:]
            tasks.append(Task(name, "context", labels.reshape(-1)))
        brackets, quotes, seen, line = _running(ids, raw)
        tasks.append(Task("inside brackets", "context", brackets.astype(np.int8).reshape(-1)))
        tasks.append(Task("inside quotes", "context", quotes.astype(np.int8).reshape(-1)))
        tasks.append(Task("seen earlier in the context", "context", seen.astype(np.int8).reshape(-1)))
        tasks.append(Task(f"past token {line_position} of its line", "context",
                          (line > line_position).astype(np.int8).reshape(-1)))
    return tasks


def _running(ids: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per token, from what came before it in its context: an unclosed bracket, an odd count of double quotes,
    the same token id earlier, and the tokens since the last newline."""
    shape = ids.shape
    brackets, quotes, seen = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
    line = np.zeros(shape, dtype=np.int64)
    for c in range(shape[0]):
        depth = quote = since = 0
        earlier: set[int] = set()
        for t in range(shape[1]):
            text = raw[c, t]
            brackets[c, t], quotes[c, t], line[c, t] = depth > 0, quote % 2 == 1, since
            seen[c, t] = int(ids[c, t]) in earlier
            earlier.add(int(ids[c, t]))
            depth = max(0, depth + sum(text.count(o) for o in OPENING) - sum(text.count(x) for x in CLOSING))
            quote += sum(text.count(q) for q in QUOTES)
            since = 0 if "\n" in text else since + 1
    return brackets, quotes, seen, line


# --- the user's labelled texts -------------------------------------------------------------------------------

def read_probe_data(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, labels) of a JSONL (one object per line with "text" and "label") or CSV (columns text, label)
    file, or one sentence naming what is wrong."""
    if str(path).startswith("hf:"):
        return hub_probe_data(str(path)[3:])
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"--probe-data {path} does not exist.")
    try:
        if path.suffix.lower() == ".csv":
            csv.field_size_limit(max(csv.field_size_limit(), 2 ** 31 - 1))  # a long text is still a text
            with path.open(newline="", encoding="utf-8-sig") as f:  # a byte-order mark is no part of a column
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
                    raise BadInput(f"--probe-data {path} must have the columns text and label, not "
                                   f"{', '.join(reader.fieldnames or []) or 'none'}.")
                try:
                    rows = [(r["text"], r["label"]) for r in reader]
                except csv.Error as error:
                    raise BadInput(f"--probe-data {path} line {reader.line_num} is not CSV ({error}).") from None
        elif path.suffix.lower() in (".jsonl", ".json"):
            rows = []
            # lines end at "\n" alone: JSON strings may hold U+2028 and other characters str.splitlines splits at
            for number, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    raise BadInput(f"--probe-data {path} line {number} is not JSON.") from None
                if not isinstance(item, dict) or "text" not in item or "label" not in item:
                    raise BadInput(f"--probe-data {path} line {number} must be an object with \"text\" and "
                                   "\"label\".")
                rows.append((item["text"], item["label"]))
        else:
            raise BadInput(f"--probe-data {path} must be a .jsonl or .csv file of text and label.")
    except UnicodeDecodeError:
        raise BadInput(f"--probe-data {path} is not UTF-8 text.") from None
    return checked_examples(rows, str(path))


HUB_EXAMPLES = 5000  # SAEBench's 4,000 training and 1,000 test examples


def hub_probe_data(name: str) -> tuple[list[str], list[str]]:
    """The first HUB_EXAMPLES examples (text, label) of a Hugging Face data set's train split."""
    try:
        from datasets import load_dataset

        data = load_dataset(name, split="train", streaming=True)
        rows = [(r.get("text"), r.get("label")) for _, r in zip(range(HUB_EXAMPLES), data, strict=False)]
    except Exception as error:  # noqa: BLE001 — no network, no such data set: said in one sentence
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BadInput(f"--probe-data hf:{name} could not be read from the Hugging Face hub ({first}).") from None
    return checked_examples(rows, f"hf:{name}")


def label_name(label) -> str:
    """A label as its class's name: a number and the same number written otherwise (1, 1.0, "1.0") are one
    class; any other text is itself, stripped."""
    if isinstance(label, bool):
        return str(label).lower()
    try:
        value = float(label)
    except (TypeError, ValueError):
        return str(label).strip()
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value) if math.isfinite(value) else str(label).strip()


def checked_examples(rows: list, where: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of (text, label) pairs, each checked, or one sentence naming the first that is wrong."""
    path = where
    texts, labels = [], []
    for number, (text, label) in enumerate(rows, 1):
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"--probe-data {path}: example {number} has no text.")
        if isinstance(label, dict | list) or label is None or str(label) == "":
            raise BadInput(f"--probe-data {path}: example {number} has no label (a string or a number).")
        texts.append(text)
        labels.append(label_name(label))
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise BadInput(f"--probe-data {path} holds {len(rows)} example{'s' if len(rows) != 1 else ''} of "
                       f"{len(classes)} label{'s' if len(classes) != 1 else ''}; a probe needs two or more.")
    return texts, labels


def data_tasks(labels: list[str]) -> list[Task]:
    """One task per class against the rest (SAEBench's), or one task for two classes (the second as positive)."""
    classes = sorted(set(labels))
    array = np.array(labels, dtype=object)
    chosen = classes[1:] if len(classes) == 2 else classes
    return [Task(f"label {c}", "data", (array == c).astype(np.int8)) for c in chosen]
