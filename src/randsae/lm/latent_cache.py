"""The latent cache (docs/paper.md §2.3): what each layer's TopK SAE gives on a token set, stored once, and a
per-latent index over it, so that every latent's activations can be read without scanning the cache.

OUT/manifest.json            what was encoded: the SAE run, the activations' source, layers, shards
OUT/shard-NNNNN.safetensors  per shard: `tokens` (contexts × context length, int64) and, per layer,
                             `layer.<i>.values` (tokens × k, float32) and `layer.<i>.indices` (int32)
OUT/index/layer.<i>/         the same entries sorted by latent (NumPy .npy files, memory-mapped):
                             `offsets.npy` (latents + 1, int64): latent j's entries are offsets[j]:offsets[j+1]
                             `positions.npy` (int64): token positions in cache order (ascending per latent)
                             `values.npy` (float32): the activations there (> 0)

Shards are written one at a time and listed in the manifest after each, so a rerun resumes after the last
finished shard. A layer's index is built from the shards by a counting sort into memory-mapped files:
two passes over the shards, one shard in memory at a time, never the layer's whole cache twice.
"""

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from randsae.errors import BadInput
from randsae.io import atomic_write, check_safetensors, out_of_space, write_json
from randsae.lm.activations import ActivationCache, check_activations, write_safetensors
from randsae.lm.shards import ShardedCache, read_shard_manifest, shard_name
from randsae.sae import LanguageSAE

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


# A chunk of the token set: its contexts' token ids, and a function that gives every layer's activations
# (contexts · context length × d) when called — not called for chunks a resumed run already encoded.
Chunk = tuple[torch.Tensor, Callable[[], dict[int, torch.Tensor]]]


def cache_chunks(cache: ActivationCache, layers: list[int], max_tokens: int | None = None) -> Iterator[Chunk]:
    """The activation cache a shard at a time (at most `max_tokens`, in whole contexts)."""
    contexts_left = max(1, min(max_tokens or cache.num_tokens, cache.num_tokens) // cache.context_length)
    for index, shard in enumerate(cache.manifest["shards"]):
        contexts = min(shard["contexts"], contexts_left)
        if contexts <= 0:
            return
        contexts_left -= contexts
        tokens = contexts * cache.context_length
        yield (cache.read_shard(index, "tokens")[:contexts],
               lambda i=index, n=tokens: {layer: checked(cache, i, layer, n) for layer in layers})


def checked(cache: ActivationCache, index: int, layer: int, tokens: int) -> torch.Tensor:
    """The first `tokens` rows of a shard's layer, refused in one sentence where they are not finite or all
    equal (an all-zero cache: nothing for an SAE to encode)."""
    rows = cache.read_shard(index, f"layer.{layer}")[:tokens]
    check_activations(rows.float(), f"{cache.directory / cache.manifest['shards'][index]['file']} (layer {layer})")
    return rows


def model_chunks(model, contexts: torch.Tensor, layers: list[int], chunk_contexts: int,
                 batch_size: int) -> Iterator[Chunk]:
    """The model's block outputs on `contexts`, `chunk_contexts` at a time (forward passes of `batch_size`
    contexts that stop after the last layer needed)."""
    from randsae.lm.activations import residual_stream

    device = next(model.parameters()).device

    def run(rows: torch.Tensor) -> dict[int, torch.Tensor]:
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        for batch in rows.split(batch_size):
            for layer, hidden in residual_stream(model, batch.to(device), layers).items():
                parts[layer].append(hidden.reshape(-1, hidden.shape[-1]).float().cpu())
        return {layer: torch.cat(chunks) for layer, chunks in parts.items()}

    for start in range(0, len(contexts), chunk_contexts):
        rows = contexts[start:start + chunk_contexts]
        yield rows, lambda r=rows: run(r)


@torch.no_grad()
def encode_cache(chunks: Iterable[Chunk], saes: dict[int, LanguageSAE], out: Path, settings: dict,
                 context_length: int, total_tokens: int, batch_size: int = 4096,
                 device: torch.device | str = "cpu", progress: bool = False) -> dict:
    """Encode every chunk with each layer's SAE into a latent shard in OUT; resumes after the last
    finished shard (chunks before it are skipped without computing their activations). `settings` (what
    the caller wants recorded and matched on a rerun) goes into the manifest, which is returned."""
    out.mkdir(parents=True, exist_ok=True)
    layers = sorted(saes)
    wanted = {**settings, "layers": layers, "context_length": context_length,
              "k": {str(layer): sae.k for layer, sae in saes.items()},
              "num_latents": {str(layer): sae.num_latents for layer, sae in saes.items()}}
    path = out / MANIFEST
    manifest = open_latent_cache(out).manifest if path.exists() else {**wanted, "shards": []}
    for key, value in wanted.items():
        if manifest.get(key) != value:
            raise BadInput(f"{out} holds latents made with other {key} settings; choose another --out.")
    bar = tqdm(total=total_tokens * len(layers), unit="tok", unit_scale=True, disable=not progress, desc="encode")
    for index, (tokens, activations) in enumerate(chunks):
        count = tokens.numel()
        if index < len(manifest["shards"]):
            bar.update(count * len(layers))
            continue
        tensors = {"tokens": tokens.to(torch.int64).contiguous()}
        for layer, x in activations().items():
            tensors |= {f"layer.{layer}.{part}": t for part, t in
                        encode_all(saes[layer], x, batch_size, device, bar.update).items()}
        name = shard_name(index)
        atomic_write(out / name, lambda p, t=tensors: write_safetensors(p, t))
        manifest["shards"].append({"file": name, "contexts": len(tokens)})
        write_json(path, manifest)
    bar.close()
    if not manifest["shards"]:
        raise BadInput("the token set holds no tokens to encode.")
    return manifest


def encode_all(sae: LanguageSAE, x: torch.Tensor, batch_size: int, device: torch.device | str,
               done: Callable[[int], object]) -> dict[str, torch.Tensor]:
    """A shard's tensors of one layer. A TopK SAE: `values` (float32) and `indices` (int32), tokens × k. An SAE
    without a fixed k (JumpReLU, Gated, …), whose L0 varies from token to token (the first position's can be
    hundreds): its firing entries only, `positions` (int32, the token within the shard), `values`, `indices`."""
    parts: dict[str, list[torch.Tensor]] = {"positions": [], "values": [], "indices": []}
    for start in range(0, len(x), batch_size):
        v, i = sae.encode(x[start:start + batch_size].to(device, torch.float32))
        v, i = v.float().cpu(), i.cpu().to(torch.int32)
        done(len(v))
        if sae.k is not None:
            parts["values"].append(v)
            parts["indices"].append(i)
            continue
        row, column = (v > 0).nonzero(as_tuple=True)
        parts["positions"].append((row + start).to(torch.int32))
        parts["values"].append(v[row, column])
        parts["indices"].append(i[row, column])
    return {name: torch.cat(chunks).contiguous() for name, chunks in parts.items() if chunks}


class LatentCache(ShardedCache):
    """A latent cache written by `encode_cache` (checked on opening), read a shard or a latent at a time."""

    def num_latents(self, layer: int) -> int:
        return self.manifest["num_latents"][str(layer)]

    def entries(self, layer: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(token positions int64, values, latents) of each shard's firing entries of `layer`, in cache order,
        positions ascending within a shard."""
        first, sparse = 0, self.manifest["k"][str(layer)] is None
        for i, shard in enumerate(self.manifest["shards"]):
            values = self.read_shard(i, f"layer.{layer}.values").numpy()
            indices = self.read_shard(i, f"layer.{layer}.indices").numpy()
            if sparse:
                positions = self.read_shard(i, f"layer.{layer}.positions").numpy().astype(np.int64)
            else:
                positions = np.arange(len(values), dtype=np.int64).repeat(values.shape[1])
                values, indices = values.ravel(), indices.ravel()
            fired = values > 0  # TopK kept a latent that did not fire: left out
            yield positions[fired] + first, values[fired], indices[fired]
            first += shard["contexts"] * self.context_length

    def index(self, layer: int) -> "LatentIndex":
        """The per-latent index of `layer`, built on first use (and kept under OUT/index/)."""
        directory = self.directory / "index" / f"layer.{layer}"
        if not (directory / "values.npy").is_file():
            build_index(self, layer, directory)
        return LatentIndex.open(directory, self.num_latents(layer))


def open_latent_cache(directory: str | Path) -> LatentCache:
    directory = Path(directory)
    manifest = read_shard_manifest(directory, {"k": dict, "num_latents": dict}, "`randsae lm latents`")
    for layer in manifest["layers"]:
        for part in ("k", "num_latents"):
            value = manifest[part].get(str(layer))
            if not isinstance(value, int) and not (part == "k" and value is None and str(layer) in manifest[part]):
                raise BadInput(f"{directory / 'manifest.json'}: '{part}' gives no integer for layer {layer}.")
    for shard in manifest["shards"]:
        header = check_safetensors(directory / shard["file"])
        for layer in manifest["layers"]:
            k = manifest["k"][str(layer)]
            if k is None:  # firing entries only: three vectors of one length
                names = [f"layer.{layer}.{part}" for part in ("positions", "values", "indices")]
                shapes = [tuple(header[name]["shape"]) for name in names if name in header]
                if len(shapes) < len(names) or len(set(shapes)) != 1 or len(shapes[0]) != 1:
                    raise BadInput(f"{directory / shard['file']} lacks {', '.join(names)} of one length.")
                continue
            expected = [shard["contexts"] * manifest["context_length"], k]
            for part in ("values", "indices"):
                name = f"layer.{layer}.{part}"
                if name not in header or header[name]["shape"] != expected:
                    raise BadInput(f"{directory / shard['file']} lacks {name} of shape {expected}.")
    return LatentCache(directory, manifest)


@dataclass
class LatentIndex:
    """One layer's cache entries grouped by latent (memory-mapped, read a latent at a time)."""

    offsets: np.ndarray  # num_latents + 1
    positions: np.ndarray  # entries, ascending within each latent
    values: np.ndarray

    @classmethod
    def open(cls, directory: Path, num_latents: int) -> "LatentIndex":
        arrays = {}
        for name in ("offsets", "positions", "values"):
            try:
                arrays[name] = np.load(directory / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                raise BadInput(f"{directory / (name + '.npy')} cannot be read ({e}); delete {directory} "
                                 "to rebuild it.") from None
        if len(arrays["offsets"]) != num_latents + 1 or arrays["offsets"][-1] != len(arrays["values"]) \
                or len(arrays["positions"]) != len(arrays["values"]):
            raise BadInput(f"the index in {directory} does not match its cache; delete it to rebuild it.")
        return cls(**arrays)

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def latent(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values) of latent j: every token where it fires, in cache order."""
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return np.asarray(self.positions[lo:hi]), np.asarray(self.values[lo:hi])


def build_index(cache: LatentCache, layer: int, directory: Path) -> None:
    """Counting sort of the layer's (position, latent, value) entries by latent, into .npy memory maps.
    Pass 1 counts each latent's firing entries; pass 2 writes every shard's entries at each latent's
    cursor. Entries with value 0 (TopK kept a latent that did not fire) are left out."""
    num_latents = cache.num_latents(layer)
    counts = np.zeros(num_latents, dtype=np.int64)
    for _, _, indices in cache.entries(layer):
        counts += np.bincount(indices, minlength=num_latents)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _fill_index(cache, layer, staging, offsets, num_latents)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-built is left behind
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(staging / "index")) from None
        raise
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def reserved_memmap(path: Path, dtype, total: int) -> np.memmap:
    """A new .npy memory map whose blocks are reserved on disk first: a full disk is an OSError here, not a
    SIGBUS when a page is first written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(total,))
    reserve = getattr(os, "posix_fallocate", None)  # Linux; elsewhere the pages are written as they come
    if reserve is not None:
        with path.open("r+b") as f:
            try:
                reserve(f.fileno(), 0, path.stat().st_size)
            except OSError as e:
                if out_of_space(e):
                    raise
    return array


def _fill_index(cache: LatentCache, layer: int, staging: Path, offsets: np.ndarray, num_latents: int) -> None:
    np.save(staging / "offsets.npy", offsets)
    total = int(offsets[-1])
    positions = reserved_memmap(staging / "positions.npy", np.int64, total)
    values_out = reserved_memmap(staging / "values.npy", np.float32, total)
    cursor = offsets[:-1].copy()
    for position, value, latent in cache.entries(layer):
        order = np.argsort(latent, kind="stable")  # grouped by latent, positions still ascending
        latent, position, value = latent[order], position[order], value[order]
        starts = np.searchsorted(latent, np.arange(num_latents))
        shard_counts = np.diff(np.append(starts, len(latent)))
        rank = np.arange(len(latent)) - np.repeat(starts, shard_counts)
        target = cursor[latent] + rank
        positions[target] = position
        values_out[target] = value
        cursor += shard_counts
    positions.flush()
    values_out.flush()
    del positions, values_out
