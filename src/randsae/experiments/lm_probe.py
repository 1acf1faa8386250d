"""`randsae lm probe`: what every trained layer's SAE latents carry, measured with no judge — SAEBench's
k-sparse probing and first-letter absorption (`randsae.probing`; docs/choices.md "Probing and absorption").

The probes are fitted on a sample of the SAEs' training tokens (the cache they trained on, or the first
contexts an on-the-fly run trained on, through the model) and tested on held-out contexts, on tasks derived from
the text itself (`randsae.lm.probe_tasks`: the token's first letter, capital, punctuation; the next token's
class, brackets, quotes, repetition, position in the line) and, with --probe-data, the user's labelled texts.
Per task: the SAE's top-k latents (k = 1, 2, 5), every dimension of the block output (the ceiling) and one-hot
token ids (what the token alone answers). OUT/probing.csv has a row per (layer, task, probe, k),
OUT/absorption.csv one per (layer, letter); a layer written is not probed again."""

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from randsae import runs
from randsae.config import PROBE_TOKENS, parse_count, resolve_device
from randsae.errors import BadInput, check_seed
from randsae.lm.activations import residual_stream
from randsae.lm.probe_tasks import FAMILIES, Task, data_tasks, read_probe_data, token_tasks, token_texts
from randsae.lm.quality import model_sample, training_sample
from randsae.lm.sae_run import arm_of, read_source, read_train_settings, trained_layers
from randsae.lm.source import HELD_OUT_FILE, check_token_ids, load_variant, read_held_out
from randsae.lm.token_filter import TokenFilter
from randsae.probing import (
    MIN_PROBE_F1,
    DenseFeatures,
    SparseCodes,
    absorption,
    dense_probe,
    f1,
    fit_linear,
    main_latents,
    sparse_accuracies,
    split_of,
    token_lookup,
)
from randsae.sae import LanguageSAE, load_language_sae
from randsae.seeding import derive_seed
from randsae.settings import setting
from randsae.tables import AbsorptionRow, ProbeRow, read_table, write_table

log = logging.getLogger(__name__)

COMMAND = "lm probe"
PROBES = ("sae", "input", "tokens")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


_ints.__name__ = "comma list of whole numbers"  # what argparse calls it in its one sentence


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@dataclass
class ProbeSettings:
    """What `lm probe` (and a study's probing stage) fits and tests; the flags come from here."""
    probe_k: list[int] = setting(default_factory=lambda: [1, 2, 5], parse=_ints,
                                 help="comma list of k: the latents each k-sparse probe reads (SAEBench's 1,2,5)")
    probe_tasks: list[str] = setting(default_factory=lambda: ["token", "context"], parse=_names, help=(
        "comma list of task families derived from the text: token (first letter, capital, punctuation) and "
        "context (the next token's class, brackets, quotes, repetition, position in the line)"))
    probe_data: str | None = setting(None, help=(
        "your labelled texts, probed as the family 'data': a .jsonl or .csv file of text and label, or hf:NAME "
        "for a Hugging Face data set with those columns (one task per class; each text mean-pooled)"),
        shown="none")
    probe_train_tokens: int = setting(PROBE_TOKENS, parse=parse_count, help=(
        "training tokens (the SAEs' own training sample) the probes are fitted on"))
    probe_test_tokens: int = setting(PROBE_TOKENS, parse=parse_count,
                                     help="held-out tokens the probes are tested on")
    probe_train_examples: int = setting(4000, help="balanced training examples per task at most (SAEBench's)")
    probe_test_examples: int = setting(1000, help="balanced held-out examples per task at most (SAEBench's)")
    probe_min_examples: int = setting(20, help=(
        "a task is probed only with this many positives and negatives in each split"))
    probe_data_length: int = setting(128, help="--probe-data: tokens read of each text (SAEBench's)")
    absorption: bool = setting(True, help="leave out first-letter absorption (measured beside the probes by "
                                          "default)")
    seed: int = setting(0, help="seeds the balanced draws and --probe-data's split")

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        self.validate()

    def validate(self) -> None:
        check_seed(self.seed)
        if not self.probe_k or any(k < 1 for k in self.probe_k) or len(set(self.probe_k)) != len(self.probe_k):
            raise BadInput(f"--probe-k must name distinct positive whole numbers, not "
                           f"{','.join(map(str, self.probe_k)) or 'none'}.")
        unknown = [t for t in self.probe_tasks if t not in FAMILIES[:2]]
        if unknown or len(set(self.probe_tasks)) != len(self.probe_tasks):
            raise BadInput(f"--probe-tasks takes each of {', '.join(FAMILIES[:2])} at most once, not "
                           f"{','.join(self.probe_tasks)!r} (your own labels come with --probe-data).")
        if not self.probe_tasks and self.probe_data is None:
            raise BadInput("--probe-tasks names no family and no --probe-data is given: nothing to probe.")
        for name in ("probe_train_tokens", "probe_test_tokens", "probe_train_examples", "probe_test_examples",
                     "probe_min_examples", "probe_data_length"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be a positive integer, not "
                               f"{getattr(self, name)}.")
        for split in ("train", "test"):
            if getattr(self, f"probe_{split}_examples") < 2 * self.probe_min_examples:
                raise BadInput(f"--probe-{split}-examples {getattr(self, f'probe_{split}_examples')} cannot hold "
                               f"--probe-min-examples {self.probe_min_examples} of each class.")


@dataclass
class Rows:
    """One split's tokens (or texts) at one layer: block outputs (rows × d), token ids (or a bag of tokens per
    text), and each task's labels (1, 0 or −1: left out)."""
    x: torch.Tensor
    tokens: Any  # np.ndarray of ids (rows), or a sparse rows × vocabulary bag of tokens
    labels: dict[str, np.ndarray]


def encode_rows(sae: LanguageSAE, x: torch.Tensor, batch: int = 4096) -> SparseCodes:
    """The SAE's codes of every row of `x`."""
    device = next(sae.parameters()).device
    values, indices = [], []
    width = 1
    with torch.no_grad():
        for part in x.split(batch):
            v, i = sae.encode(part.to(device))
            values.append(v.float().cpu())
            indices.append(i.cpu())
            width = max(width, v.shape[1])
    pad = [(F.pad(v, (0, width - v.shape[1])), F.pad(i, (0, width - i.shape[1])))
           for v, i in zip(values, indices, strict=True)]
    return SparseCodes(torch.cat([v for v, _ in pad]), torch.cat([i for _, i in pad]), sae.num_latents)


def pooled_codes(codes: SparseCodes, texts: np.ndarray) -> DenseFeatures:
    """Each text's codes averaged over its tokens (`texts`: the text of each token row)."""
    count = int(texts.max()) + 1
    out = torch.zeros(count, codes.num_latents, dtype=torch.float64)
    rows = torch.as_tensor(texts, dtype=torch.long)[:, None].expand_as(codes.indices)
    out.index_put_((rows.reshape(-1), codes.indices.reshape(-1)), codes.values.double().reshape(-1),
                   accumulate=True)
    sizes = torch.bincount(torch.as_tensor(texts, dtype=torch.long), minlength=count).clamp_min(1)
    return DenseFeatures((out / sizes[:, None]).float().numpy())


def probe_layer(sae: LanguageSAE, train: Rows, test: Rows, tasks: list[Task], settings: ProbeSettings,
                pooled: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[dict], list[dict]]:
    """(probing rows, absorption rows) of one layer, each a dict of the table's fields but model, variant and
    layer. `pooled`: (train, test) text number of each token row — the rows are then texts, their features the
    mean of their tokens'."""
    train_codes, test_codes = encode_rows(sae, train.x), encode_rows(sae, test.x)
    if pooled is not None:
        train_features: Any = pooled_codes(train_codes, pooled[0])
        test_features: Any = pooled_codes(test_codes, pooled[1])
    else:
        train_features, test_features = train_codes, test_codes
    train_x, test_x = train.x.float().numpy(), test.x.float().numpy()
    if pooled is not None:
        train_x, test_x = mean_rows(train_x, pooled[0]), mean_rows(test_x, pooled[1])
    tokens = _token_matrix(train.tokens, test.tokens) if pooled is not None else None
    decoder = sae.W_dec.detach().double().cpu().numpy()
    letters = letter_probe(train, test, train_x, test_x, tasks, settings) \
        if settings.absorption and pooled is None else None
    probes, absorbed = [], []
    for task in tasks:
        split = split_of(train.labels[task.name], test.labels[task.name], settings.probe_train_examples,
                         settings.probe_test_examples, derive_seed(settings.seed, "probe", task.name))
        if min(len(split.train_pos), len(split.test_pos)) < settings.probe_min_examples:
            continue
        sizes = {"train_examples": 2 * len(split.train_pos), "test_examples": 2 * len(split.test_pos)}
        for k, accuracy in sparse_accuracies(train_features, test_features, split, settings.probe_k).items():
            probes.append({"family": task.family, "task": task.name, "probe": "sae", "k": k, "accuracy": accuracy,
                           **sizes})
        _, accuracy = dense_probe(train_x, test_x, split, standardise=True)
        probes.append({"family": task.family, "task": task.name, "probe": "input", "k": 0, "accuracy": accuracy,
                       **sizes})
        if tokens is None:  # token rows: each id's majority label
            accuracy = token_lookup(train.tokens, test.tokens, split)
        else:  # texts: a regression on their bags of tokens
            _, accuracy = dense_probe(tokens[:len(train_x)], tokens[len(train_x):], split)
        probes.append({"family": task.family, "task": task.name, "probe": "tokens", "k": 0, "accuracy": accuracy,
                       **sizes})
        if letters is not None and task.name.startswith("first letter "):
            row = letter_absorption(task, letters, train_codes, test_codes, test_x, decoder, split)
            if row is not None:
                absorbed.append(row)
    return probes, absorbed


def mean_rows(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The mean of the rows of `x` in each group (groups numbered 0, 1, …)."""
    out = np.zeros((int(groups.max()) + 1, x.shape[1]))
    np.add.at(out, groups, x)
    return out / np.bincount(groups)[:, None]


def _token_matrix(train_tokens: Any, test_tokens: Any):
    """The texts' bags of tokens, both splits stacked (the token-only probe's input for --probe-data)."""
    from scipy.sparse import vstack

    return vstack([train_tokens, test_tokens]).tocsr()


@dataclass
class LetterProbe:
    """The ground truth of absorption: one multinomial logistic regression over the first letters of the word
    tokens (SAEBench's: one probe, a direction per letter), fitted on the training rows, raw (the directions are
    the input's); `called` the held-out words' predicted letters."""
    letters: list[str]
    directions: np.ndarray  # letters × d
    truth: np.ndarray  # each held-out word row's letter index
    called: np.ndarray  # the probe's letter index for each
    rows: np.ndarray  # the held-out word rows


def letter_probe(train: Rows, test: Rows, train_x: np.ndarray, test_x: np.ndarray, tasks: list[Task],
                 settings: ProbeSettings) -> LetterProbe | None:
    """The letter probe of the first-letter tasks (None with fewer than two letters probed)."""
    letters = [t.name.removeprefix("first letter ") for t in tasks if t.name.startswith("first letter ")]
    if len(letters) < 2:
        return None

    def words(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        label = np.full(len(rows.x), -1)
        for i, letter in enumerate(letters):
            label[rows.labels[f"first letter {letter}"] == 1] = i
        found = np.flatnonzero(label >= 0)
        return found, label[found]

    (train_rows, y_train), (test_rows, y_test) = words(train), words(test)
    rng = np.random.default_rng(derive_seed(settings.seed, "letter probe"))
    cap = settings.probe_train_examples
    if len(train_rows) > cap:
        keep = np.sort(rng.choice(len(train_rows), cap, replace=False))
        train_rows, y_train = train_rows[keep], y_train[keep]
    present = np.unique(y_train)
    if len(present) < 2 or not len(test_rows):
        return None
    index = np.searchsorted(present, y_train)  # the letters present, numbered 0, 1, …
    probe = fit_linear(train_x[train_rows], index, classes=max(3, len(present)))
    directions = np.zeros((len(letters), train_x.shape[1]))
    directions[present] = probe.weight[:len(present)]
    called = present[np.minimum(probe.predict(test_x[test_rows]), len(present) - 1)]
    return LetterProbe(letters, directions, y_test, called, test_rows)


def letter_absorption(task: Task, letters: LetterProbe, train_codes: SparseCodes, test_codes: SparseCodes,
                      test_x: np.ndarray, decoder: np.ndarray, split) -> dict | None:
    """One letter's absorption on the held-out words the letter probe calls right; None where that probe is too
    poor on the letter (F1 < MIN_PROBE_F1) for its calls to be the truth."""
    letter = task.name.removeprefix("first letter ")
    index = letters.letters.index(letter)
    truth, called = letters.truth == index, letters.called == index
    probe_f1 = f1(called, truth)
    words = letters.rows[truth & called]
    if probe_f1 < MIN_PROBE_F1 or not len(words):
        return None
    main = main_latents(train_codes, test_codes, split)
    rows = torch.as_tensor(words, dtype=torch.long)
    codes = SparseCodes(test_codes.values[rows], test_codes.indices[rows], test_codes.num_latents)
    fraction, full = absorption(test_x[words], codes, decoder, letters.directions[index], main)
    return {"letter": letter, "absorption_fraction": float(fraction.mean()), "full_absorption": float(full.mean()),
            "words": len(words), "main_latents": len(main), "probe_f1": probe_f1}


# --- the command -----------------------------------------------------------------------------------------------

def check_widths(saes: dict[int, LanguageSAE], settings: ProbeSettings, acts: str | Path | None, model) -> None:
    """--probe-k within every SAE's latents, and --acts a cache of the SAEs' model: one sentence otherwise."""
    from randsae.lm.activations import read_manifest

    for layer, sae in saes.items():
        if max(settings.probe_k) > sae.num_latents:
            raise BadInput(f"--probe-k {max(settings.probe_k)} is more than the {sae.num_latents} latents of the "
                           f"SAE of layer {layer}.")
    width, cached = model.config.hidden_size, read_manifest(Path(acts))["d_model"] if acts is not None else None
    if cached is not None and cached != width:
        raise BadInput(f"--acts {acts} holds activations {cached} wide, but the SAEs' model has a residual stream "
                       f"of {width}; is it another model's cache?")


def probe(sae_dir: str | Path, out: Path, settings: ProbeSettings, acts: str | Path | None = None,
          device: str = "auto", progress: bool = True, group_layers: int | None = None) -> list[ProbeRow]:
    """Probe every layer of `sae_dir` not yet in OUT/probing.csv; returns the whole table. OUT holds one SAE
    run's probes: another run, or other settings, into the same OUT is refused in one sentence."""
    sae_dir = Path(sae_dir)
    settings.validate()
    source = read_source(sae_dir)
    record = {"sae": str(sae_dir.resolve()), "acts": str(Path(acts).resolve()) if acts else None,
              **asdict(settings)}
    runs.same_settings(out, COMMAND, record, "probes")
    if group_layers is not None and group_layers < 1:
        raise BadInput(f"--group-layers must be a positive integer, not {group_layers}.")
    data = check_probe_data(settings)
    layers = trained_layers(sae_dir)
    if not layers:
        raise BadInput(f"{sae_dir} holds no trained SAE (no layer.<i>/sae_weights.safetensors).")
    model_name, variant = source["model"], arm_of(sae_dir, source)
    table, absorbed_table = out / "probing.csv", out / "absorption.csv"
    rows = read_table(table, ProbeRow) if table.is_file() else []
    absorbed = read_table(absorbed_table, AbsorptionRow) if absorbed_table.is_file() else []
    todo = [layer for layer in layers if layer not in {r.layer for r in rows}]
    if not todo:
        log.info("every layer of %s is already in %s", sae_dir, table)
        return rows
    torch_device = resolve_device(device)
    model, tokenizer = load_variant(model_name, source.get("revision"), source["variant"], torch_device)
    held_out = read_held_out(acts or sae_dir)
    contexts = held_out[:max(1, math.ceil(settings.probe_test_tokens / held_out.shape[1]))]
    check_token_ids(contexts, model, Path(acts or sae_dir) / HELD_OUT_FILE)
    token_filter = TokenFilter.of(read_train_settings(sae_dir))
    size = group_layers or len(todo)
    for first in range(0, len(todo), size):
        group = todo[first:first + size]
        saes = {layer: load_language_sae(layers[layer]).to(torch_device).eval() for layer in group}
        check_widths(saes, settings, acts, model)
        sample, what = training_sample(sae_dir, source, acts, model, group, settings.probe_train_tokens,
                                       torch_device)
        if sample is None:
            raise BadInput(f"{sae_dir} keeps no sample of its training tokens (an older run) to fit the probes "
                           "on; "
                           "train it again with this version.")
        train = gathered(sample, group)
        test = gathered(model_sample(model, contexts, group, torch_device, settings.probe_test_tokens), group)
        log.info("probes fitted on %s training tokens (%s), tested on %s held-out tokens",
                 f"{train[0].size:,}", what, f"{test[0].size:,}")
        texts = token_texts(tokenizer, np.concatenate([train[0].reshape(-1), test[0].reshape(-1)]))
        families = tuple(settings.probe_tasks)
        tasks = token_tasks(train[0], texts, families)
        test_tasks = {t.name: t.labels for t in token_tasks(test[0], texts, families)}
        on_data = data_split(model, tokenizer, data, group, settings, torch_device) if data is not None else None
        bar = tqdm(group, unit="layer", disable=not progress, desc="probe")
        for layer in bar:
            measured = layer_rows(saes[layer], layer, train, test, tasks, test_tasks, token_filter, settings)
            if on_data is not None:
                data_train, data_test = on_data[layer]
                measured = (measured[0] + probe_layer(saes[layer], data_train, data_test, on_data["tasks"],
                                                      settings, pooled=on_data["texts"])[0], measured[1])
            if not measured[0]:
                raise BadInput(f"no task had --probe-min-examples {settings.probe_min_examples} positives and as "
                               f"many negatives in each split at layer {layer}; probe more tokens "
                               "(--probe-train-tokens, --probe-test-tokens) or lower --probe-min-examples.")
            base = {"model": model_name, "variant": variant, "layer": layer}
            rows += [ProbeRow(**base, **r) for r in measured[0]]
            absorbed += [AbsorptionRow(**base, **r) for r in measured[1]]
        if runs.previous_record(out, COMMAND) is None:
            runs.write_record(out, COMMAND, record)
        if settings.absorption:
            write_table(absorbed_table, absorbed, AbsorptionRow)
        write_table(table, rows, ProbeRow)
        log.info("wrote %s", table)
    return rows


def gathered(sample, layers: list[int]) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
    """(token ids: contexts × length, {layer: block outputs: contexts × length × d, float}) of a sample."""
    ids, hidden = [], {layer: [] for layer in layers}
    for batch_ids, outputs in sample:
        ids.append(batch_ids.cpu())
        for layer in layers:
            hidden[layer].append(outputs[layer].float().cpu())
    return torch.cat(ids).numpy(), {layer: torch.cat(parts) for layer, parts in hidden.items()}


def layer_rows(sae: LanguageSAE, layer: int, train, test, tasks: list[Task], test_labels: dict[str, np.ndarray],
               token_filter: TokenFilter, settings: ProbeSettings) -> tuple[list[dict], list[dict]]:
    """One layer's probes on the text's tasks: the tokens its SAE's training left out (--skip-positions, outliers)
    are left out of every task."""
    def rows_of(split, labels: dict[str, np.ndarray]) -> Rows:
        ids, hidden = split
        x = hidden[layer]
        keep = token_filter.mask(x).reshape(-1).numpy() if token_filter.active else np.ones(ids.size, bool)
        return Rows(x.reshape(-1, x.shape[-1]), ids.reshape(-1),
                    {name: np.where(keep, value, -1) for name, value in labels.items()})

    return probe_layer(sae, rows_of(train, {t.name: t.labels for t in tasks}), rows_of(test, test_labels), tasks,
                       settings)


def data_parts(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's texts split 80/20, seeded: (training text numbers, held-out text numbers)."""
    order = np.random.default_rng(derive_seed(seed, "probe-data")).permutation(count)
    cut = max(1, min(count - 1, round(0.8 * count)))
    return order[:cut], order[cut:]


def check_probe_data(settings: ProbeSettings, seeds: Iterable[int] = ()) -> tuple[list[str], list[str]] | None:
    """--probe-data read once and checked before any work (None when not given): its texts and labels, refused in
    one sentence when no class has --probe-min-examples texts, and as many of the others, on each side of the
    split that `settings.seed` (and each of `seeds`, a study's) draws."""
    if settings.probe_data is None:
        return None
    texts, labels = read_probe_data(settings.probe_data)
    tasks = data_tasks(labels)
    most = min(usable_texts(tasks, data_parts(len(texts), seed)) for seed in {settings.seed, *seeds})
    if most < settings.probe_min_examples:
        raise BadInput(f"--probe-data {settings.probe_data}: no label has --probe-min-examples "
                       f"{settings.probe_min_examples} texts (and as many of the others) in both the 80% fitted "
                       f"and the 20% tested; the most is {most} of its {len(texts)} texts — give more texts or a "
                       "lower --probe-min-examples.")
    return texts, labels


def usable_texts(tasks: list[Task], parts: tuple[np.ndarray, np.ndarray]) -> int:
    """The most texts of one class, with as many of the others, that every side of a split holds."""
    return max((min(min(int((side == 1).sum()), int((side == 0).sum())) for side in (t.labels[p] for p in parts))
                for t in tasks), default=0)


def data_split(model, tokenizer, data: tuple[list[str], list[str]], layers: list[int], settings: ProbeSettings,
               device: torch.device) -> dict:
    """The user's texts through the model, split 80/20 (seeded): per layer (train Rows, test Rows) of token rows,
    and under "texts" each token row's text number in its split, for `probe_layer(pooled=…)`."""
    from scipy.sparse import csr_matrix

    texts, labels = data
    tasks = data_tasks(labels)
    out: dict = {layer: [] for layer in layers}
    numbers = []
    vocabulary = len(tokenizer)
    for part in data_parts(len(texts), settings.seed):
        hidden: dict[int, list] = {layer: [] for layer in layers}
        number, bags = [], []
        for n, i in enumerate(part):
            ids = tokenizer(texts[i], return_tensors="pt", truncation=True,
                            max_length=settings.probe_data_length)["input_ids"][:, :settings.probe_data_length]
            if ids.shape[1] == 0:
                raise BadInput(f"--probe-data {settings.probe_data}: example {i + 1} has no token.")
            outputs = residual_stream(model, ids.to(device), layers)
            for layer in layers:
                hidden[layer].append(outputs[layer][0].float().cpu())
            number += [n] * ids.shape[1]
            counts = np.bincount(ids[0].numpy(), minlength=vocabulary)
            bags.append(csr_matrix(counts / counts.sum()))
        from scipy.sparse import vstack

        labels_of = {t.name: t.labels[part] for t in tasks}
        for layer in layers:
            out[layer].append(Rows(torch.cat(hidden[layer]), vstack(bags).tocsr(), labels_of))
        numbers.append(np.array(number))
    return {**{layer: tuple(v) for layer, v in out.items()}, "texts": tuple(numbers), "tasks": tasks}
