"""Where a run's activations come from: a model, one of its variants, and text cut into contexts.

`lm activations` and on-the-fly `lm train` build their contexts here, record the settings in their
manifest, and keep the held-out contexts (a disjoint tenth) beside their output, so that `lm eval` can
rebuild the same model variant and score it on text the SAEs never saw.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from randsae.config import FIT_TOKENS
from randsae.errors import BadInput
from randsae.io import atomic_write, load_safetensors

log = logging.getLogger(__name__)

HELD_OUT_FILE = "held_out.safetensors"
# the first training contexts of an on-the-fly run, kept so that its baselines can be fitted where it was fitted
TRAIN_SAMPLE_FILE = "train_sample.safetensors"
# what must agree between an SAE run's recorded source and an activation cache given for it
SOURCE_KEYS = ("model", "revision", "variant", "seed", "dataset", "dataset_config", "split", "context_length",
               "prepend_bos")
# what a source recorded before a key existed had: no BOS token
RECORDED_BEFORE = {"prepend_bos": False}
EVAL_FRACTION = 0.1


@dataclass
class Source:
    model: str = "smollm2"
    revision: str | None = None
    variant: str = "trained"
    seed: int = 0
    dataset: str = "shakespeare"
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    context_length: int = 256
    tokens: int = 1_000_000  # asked for; the text may hold fewer
    prepend_bos: bool = False  # every context begins with the BOS token (as SAELens's prepend_bos)


def load_variant(model: str, revision: str | None, variant: dict, device: torch.device):
    """(model, tokenizer) of a variant as `make_variant` recorded it (its `randsae_variant` dict)."""
    from randsae.lm import load_model, make_variant
    from randsae.lm.models import current_loading

    how = current_loading()  # a model split across devices is made whole on the CPU, then dispatched
    where = torch.device("cpu") if how.device_map is not None else device
    trained, tokenizer = load_model(model, revision=revision, device=str(where), dtype=how.dtype)
    options = {key: variant[key] for key in ("rerandomize_norms", "control_std") if key in variant}
    made: Any = make_variant(trained, variant["variant"], seed=variant["seed"], revision=revision, **options)
    if how.device_map is not None:
        from randsae.lm.models import split_model

        made = split_model(made, how.device_map, torch.device(device))
    return made, tokenizer


def open_source(source: Source, device: torch.device):
    """(model variant, tokenizer, train contexts, held-out contexts) for `source`."""
    from randsae.lm.text import contexts, documents, split_contexts

    model, tokenizer = load_variant(source.model, source.revision,
                                    {"variant": source.variant, "seed": source.seed}, device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and source.context_length > limit:
        raise BadInput(f"--context-length {source.context_length} is beyond {source.model}'s maximum of {limit} "
                         "positions.")
    wanted = -(-source.tokens // source.context_length)
    docs = documents(source.dataset, source.text_column, source.dataset_config, source.split)
    rows = contexts(tokenizer, docs, source.context_length, max_contexts=contexts_drawn(wanted),
                    prepend_bos=source.prepend_bos)
    train, held_out = split_contexts(rows, eval_fraction=EVAL_FRACTION, seed=source.seed)
    train = train[:wanted]
    if not len(held_out) or not len(train):
        raise BadInput(f"the text gives {len(rows)} context{'s' if len(rows) != 1 else ''} of "
                       f"{source.context_length} tokens: too few to train on some and hold others out; give more "
                       "--tokens or a shorter --context-length.")
    if len(train) < wanted:
        log.warning("the text gives %d contexts: %d tokens, not %d", len(train),
                    len(train) * source.context_length, source.tokens)
    return model, tokenizer, train, held_out


def contexts_drawn(wanted: int) -> int:
    """How many contexts `open_source` takes from the text for `wanted` training contexts: a ninth more, so
    that the held-out tenth leaves the asked-for number to train on."""
    return wanted + wanted // 9 + 1


def later_contexts(source: Source, recorded: dict, device: torch.device):
    """(model variant, tokenizer, contexts) for `source.tokens` tokens of the recorded run's text taken
    after every context that run drew (its training and held-out contexts), so they are disjoint from
    both. `recorded` is the run's source record (its `tokens` are the training tokens it got)."""
    from randsae.lm.text import contexts, documents

    model, tokenizer = load_variant(source.model, source.revision, recorded["variant"], device)
    skip = contexts_drawn(recorded["tokens"] // source.context_length)
    wanted = -(-source.tokens // source.context_length)
    docs = documents(source.dataset, source.text_column, source.dataset_config, source.split)
    rows = contexts(tokenizer, docs, source.context_length, max_contexts=skip + wanted,
                    prepend_bos=source.prepend_bos)[skip:]
    if not len(rows):
        raise BadInput(f"the text {source.dataset!r} holds no contexts beyond the {skip} the SAEs' run drew; "
                         "give --acts, or a larger text.")
    if len(rows) < wanted:
        log.warning("the text gives %d contexts beyond the SAEs' run: %d tokens, not %d", len(rows),
                    rows.numel(), source.tokens)
    return model, tokenizer, rows


def record(source: Source, model, train: torch.Tensor, held_out: torch.Tensor) -> dict:
    """The manifest entries that say what the activations are."""
    from randsae.lm.activations import blocks_module

    return {**asdict(source), "variant": model.randsae_variant, "tokens": train.numel(),
            "held_out_contexts": len(held_out), "blocks_module": blocks_module(model)}


def write_held_out(directory: str | Path, held_out: torch.Tensor) -> Path:
    path = Path(directory) / HELD_OUT_FILE
    return atomic_write(path, lambda p: save_file({"tokens": held_out.to(torch.int64).contiguous()}, str(p)))


def write_train_sample(directory: str | Path, train: torch.Tensor, tokens: int = FIT_TOKENS) -> Path:
    """The first training contexts holding at least `tokens` tokens, beside an on-the-fly run's SAEs."""
    rows = train[:max(1, -(-tokens // train.shape[1]))]
    path = Path(directory) / TRAIN_SAMPLE_FILE
    return atomic_write(path, lambda p: save_file({"tokens": rows.to(torch.int64).contiguous()}, str(p)))


def read_held_out(directory: str | Path) -> torch.Tensor:
    path = Path(directory) / HELD_OUT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the held-out contexts are written by "
                                "`randsae lm activations` and `randsae lm train --model`.")
    return read_contexts(path, "held-out context to check or evaluate on")


def read_train_sample(directory: str | Path) -> torch.Tensor | None:
    """The training contexts an on-the-fly run kept (`write_train_sample`), or None where it kept none."""
    path = Path(directory) / TRAIN_SAMPLE_FILE
    return read_contexts(path, "training context to fit the baselines on") if path.is_file() else None


def read_contexts(path: Path, what: str) -> torch.Tensor:
    """The contexts × length int64 token ids stored as 'tokens' in `path`, checked."""
    tokens = load_safetensors(path, ["tokens"])["tokens"]
    if tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise BadInput(f"{path} holds {tuple(tokens.shape)} {tokens.dtype} as 'tokens', not contexts × length "
                         "int64 token ids.")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise BadInput(f"{path} holds no {what}; make the cache again with more --tokens.")
    return tokens


def check_token_ids(tokens: torch.Tensor, model, where: str | Path) -> None:
    """Every token id in `tokens` indexes `model`'s embedding: one sentence naming `where` otherwise."""
    vocabulary = getattr(model.config, "vocab_size", None)
    if tokens.numel() == 0 or not isinstance(vocabulary, int):
        return
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocabulary:
        bad = low if low < 0 else high
        raise BadInput(f"{where} holds token id {bad}, outside the model's vocabulary of {vocabulary:,}; it is "
                       "corrupt or was made with another model.")


def check_same_source(source: dict, manifest: dict, sae_dir: str | Path, acts: str | Path) -> None:
    """Refuse an activation cache whose model, variant or text differ from what the SAEs were trained on."""
    for key in SOURCE_KEYS:
        unset = RECORDED_BEFORE.get(key)  # what a record written before the key existed meant
        if manifest.get(key, unset) != source.get(key, unset):
            raise BadInput(f"the SAEs in {sae_dir} were trained on activations with {key}={source.get(key)!r}, "
                             f"but {acts} has {manifest.get(key)!r}.")
