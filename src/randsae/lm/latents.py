"""Latent records: every firing latent's summary and the sampled latents' example sets, built a layer at a
time from the latent cache's index, written, and read back with `open_latents`.

OUT/config.json               the settings, the SAE run, the activation source, the latent cache
OUT/latents.csv               one row per (model, variant, layer, latent) that fires at least once
                              (`LatentSummary`; list cells are JSON)
OUT/examples/layer.<i>.jsonl  one line per sampled latent (`ExampleSets`): explainer, test and
                              non-activating windows, each with token ids and per-token activations
OUT/cache/                    the latent cache and its per-latent index (`randsae.lm.latent_cache`)
"""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from randsae import io
from randsae.errors import BadInput
from randsae.lm.examples import (
    NEIGHBOURS,
    ExampleSets,
    ExampleSettings,
    LatentExamples,
    LatentSummary,
    Windows,
    read_examples,
    summarise,
)
from randsae.lm.latent_cache import LatentCache
from randsae.seeding import derive_seed

COLUMNS = [f.name for f in fields(LatentSummary)]
LIST_COLUMNS = ("top_token_ids", "top_token_shares", "top_tokens")


def examples_path(out: Path, layer: int) -> Path:
    return out / "examples" / f"layer.{layer}.jsonl"


def layer_records(cache: LatentCache, layer: int, tokens: np.ndarray, settings: ExampleSettings,
                  identity: dict, decode: Callable[[list[int]], list[str]],
                  progress: Callable[[int], object] | None = None,
                  decoder: np.ndarray | None = None) -> tuple[list[LatentSummary], list[ExampleSets]]:
    """Summaries of every latent of `layer` that fires, and the example sets of `settings.sample` eligible
    latents drawn under the seed, with their hard negatives (`decoder`, latents × inputs, finds each one's
    nearest neighbours; without it none are drawn). `tokens` is the cache's token ids, flat; `identity` gives
    model and variant. Fewer eligible latents than asked for is refused, naming how many there are."""
    index = cache.index(layer)
    windows = Windows(cache.context_length, settings.window, cache.num_contexts)
    def latent_examples(latent: int) -> LatentExamples:  # the same seeded draws every time it is made
        return LatentExamples(*index.latent(latent), windows, settings, layer, latent)

    summaries = []
    for latent in np.flatnonzero(index.counts()).tolist():
        numbers = summarise(latent_examples(latent), tokens, len(tokens), settings.top_tokens)
        summaries.append(LatentSummary(**identity, layer=layer, latent=latent, sampled=False, **numbers,
                                       top_tokens=decode(numbers["top_token_ids"])))
        if progress:
            progress(1)
    eligible = [s.latent for s in summaries if s.eligible]
    if len(eligible) < settings.sample:
        raise BadInput(
            f"layer {layer} has {len(eligible)} eligible latents (at least {settings.min_examples} activating "
            f"windows of {settings.window} tokens in {cache.num_tokens:,} tokens), fewer than --sample "
            f"{settings.sample}; lower --sample or --min-examples, or give more tokens (the latent cache is kept "
            "for the rerun).")
    rng = np.random.default_rng(derive_seed(settings.seed, "sample-latents", layer))
    sampled = set(rng.choice(eligible, size=settings.sample, replace=False).tolist())
    sets = []
    for summary in summaries:
        if summary.latent in sampled:
            summary.sampled = True
            neighbours = None if decoder is None else [
                index.latent(j)[0] for j in nearest_latents(decoder, summary.latent, NEIGHBOURS)]
            sets.append(latent_examples(summary.latent).example_sets(
                tokens, layer, summary.latent, summary.top_token_ids, neighbours))
    return summaries, sets


def nearest_latents(decoder: np.ndarray, latent: int, count: int) -> list[int]:
    """The `count` other latents whose decoder directions have the largest cosine with `latent`'s."""
    unit = decoder / np.maximum(np.linalg.norm(decoder, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit[latent]
    cosine[latent] = -np.inf
    return np.argsort(-cosine, kind="stable")[:count].tolist()


def summary_row(summary: LatentSummary) -> dict:
    row = asdict(summary)
    for name in LIST_COLUMNS:
        row[name] = json.dumps(row[name], ensure_ascii=False)
    return row


def parse_summary(row: dict, path: Path, number: int) -> LatentSummary:
    try:
        values = {f.name: row[f.name] for f in fields(LatentSummary)}
        for name in LIST_COLUMNS:
            values[name] = json.loads(values[name])
        for name in ("layer", "latent", "activations", "activating_windows"):
            values[name] = int(values[name])
        for name in ("firing_rate", "max_activation", "entropy_explainer", "entropy_all"):
            values[name] = float(values[name])
        for name in ("eligible", "sampled"):
            if values[name] not in ("True", "False"):
                raise BadInput(f"{name} is {values[name]!r}")
            values[name] = values[name] == "True"
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise BadInput(f"{path} row {number} is not a latent summary ({e}).") from None
    return LatentSummary(**values)


def read_summaries(path: Path) -> list[LatentSummary]:
    return [parse_summary(row, path, n) for n, row in enumerate(io.read_rows(path), start=2)]


@dataclass
class LatentRecords:
    """What `randsae lm latents` wrote in one directory."""

    directory: Path
    config: dict
    rows: list[LatentSummary]
    _examples: dict[int, dict[int, ExampleSets]] = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[int]:
        return sorted({row.layer for row in self.rows})

    def summary(self, layer: int) -> list[LatentSummary]:
        """Every firing latent of `layer`: firing rate, windows, max, both entropies, top tokens."""
        if layer not in self.layers:
            raise BadInput(f"{self.directory} holds no latents of layer {layer} (it holds {self.layers}).")
        return [row for row in self.rows if row.layer == layer]

    def sampled(self, layer: int) -> list[LatentSummary]:
        return [row for row in self.summary(layer) if row.sampled]

    def examples(self, layer: int, latent: int) -> ExampleSets:
        """The explainer, test and non-activating windows of a sampled latent."""
        if layer not in self._examples:  # each layer's file is read once
            self._examples[layer] = read_examples(examples_path(self.directory, layer))
        sets = self._examples[layer]
        if latent not in sets:
            raise BadInput(f"latent {latent} of layer {layer} was not sampled; sampled are "
                             f"{sorted(sets)[:10]}{' …' if len(sets) > 10 else ''}.")
        return sets[latent]


def open_latents(directory: str | Path) -> LatentRecords:
    directory = Path(directory)
    path = directory / "latents.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a directory written by `randsae lm latents`.")
    return LatentRecords(directory, io.read_json(directory / "config.json"), read_summaries(path))


def entropy_by_layer(rows: list[LatentSummary]) -> dict[tuple[str, str, int], dict]:
    """Per (model, variant, layer): how many latents were sampled, the mean and standard deviation of their
    explainer-set entropy (the paper's row), and the mean whole-cache entropy of every firing latent."""
    groups: dict[tuple[str, str, int], list[LatentSummary]] = {}
    for row in rows:
        groups.setdefault((row.model, row.variant, row.layer), []).append(row)
    out = {}
    for key, group in groups.items():
        sampled = np.array([r.entropy_explainer for r in group if r.sampled])
        out[key] = {"sampled_latents": len(sampled),
                    "entropy_mean": float(sampled.mean()) if len(sampled) else None,
                    "entropy_std": float(sampled.std(ddof=1)) if len(sampled) > 1 else None,
                    "entropy_all_mean": float(np.nanmean([r.entropy_all for r in group]))}
    return out
