"""Residual-stream activations at the output of transformer blocks, cached to disk in shards.

One forward pass serves every requested block, and stops after the last of them. Blocks are hooked
directly: some architectures apply the final norm to the last entry of `output_hidden_states`, so that
entry is not a block's output.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from randsae.errors import BadInput
from randsae.io import atomic_write, check_safetensors, write_json
from randsae.lm.shards import ShardedCache, read_shard_manifest, shard_name
from randsae.seeding import generator

# A transformers causal LM (a PreTrainedModel): its `.config`, `.get_input_embeddings()` and blocks are not typed
# through nn.Module, whose attribute access is Tensor | Module to a type checker.
LanguageModel = Any

CACHE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SHARD_BYTES = 256 * 2**20


class _StopForward(Exception):
    pass


def check_cache_dtype(dtype: str) -> None:
    if dtype not in CACHE_DTYPES:
        raise BadInput(f"dtype must be one of {', '.join(CACHE_DTYPES)}, not {dtype!r}.")


def transformer_blocks(model: LanguageModel) -> nn.ModuleList:
    """The model's list of transformer blocks (the ModuleList as long as its layer count)."""
    blocks = getattr_path(model, blocks_module(model))
    assert isinstance(blocks, nn.ModuleList)  # blocks_module found a ModuleList
    return blocks


def blocks_module(model: LanguageModel) -> str:
    """The dotted module path of the model's transformer blocks (`model.layers` in Llama, `gpt_neox.layers`
    in Pythia): block i's output is the hook `<path>.<i>`."""
    count = model.config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name
    raise BadInput(f"cannot find the {count} transformer blocks of {type(model).__name__}.")


def getattr_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def parse_layers(text: str, num_layers: int) -> list[int]:
    """'all' or a comma list of block indices."""
    if text == "all":
        return list(range(num_layers))
    try:
        layers = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise BadInput(f"layers must be 'all' or a comma list of integers, not {text!r}.") from None
    if not layers or layers[0] < 0 or layers[-1] >= num_layers:
        raise BadInput(f"layers must lie in 0 … {num_layers - 1}, not {text!r}.")
    return layers


@contextmanager
def block_outputs(model: LanguageModel, layers: list[int],
                  on_output: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Inside the block, `on_output(layer, output)` receives each output of the blocks in `layers`
    (batch × context × d_model) as the model makes it."""
    blocks = transformer_blocks(model)

    def hook(index: int):
        def receive(module, args, output):
            on_output(index, output[0] if isinstance(output, tuple) else output)
        return receive

    handles = [blocks[i].register_forward_hook(hook(i)) for i in set(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def residual_stream(model: LanguageModel, input_ids: torch.Tensor, layers: list[int],
                    on_output: Callable[[int, torch.Tensor], None] | None = None) -> dict[int, torch.Tensor]:
    """The output of each block in `layers` (batch × context × d_model), from one forward pass that stops
    after the last of them. With `on_output(layer, output)`, each output is handed over as it is made
    and not kept (the returned dict is then empty)."""
    last = max(layers)
    captured: dict[int, torch.Tensor] = {}

    def receive(index: int, hidden: torch.Tensor) -> None:
        if on_output is None:
            captured[index] = hidden
        else:
            on_output(index, hidden)
        if index == last:
            raise _StopForward

    with block_outputs(model, layers, receive):
        try:
            model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
    return captured


def cache_activations(model: LanguageModel, contexts: torch.Tensor, layers: list[int], out: str | Path,
                      batch_size: int = 8, dtype: str = "float16", manifest: dict | None = None,
                      shard_contexts: int | None = None, progress: bool = True) -> Path:
    """Write the residual stream of `layers` on `contexts` (N × context length) into OUT as shards.

    Each shard holds its contexts' token ids and one (tokens × d_model) matrix per layer; manifest.json
    lists the finished shards and is rewritten after each, so a rerun resumes after the last one. Only
    one shard is held in memory.
    """
    check_cache_dtype(dtype)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d_model = model.config.hidden_size
    length = contexts.shape[1]
    bytes_per_context = length * d_model * len(layers) * torch.finfo(CACHE_DTYPES[dtype]).bits // 8
    shard_contexts = shard_contexts or max(batch_size, SHARD_BYTES // bytes_per_context // batch_size * batch_size)
    settings = {**(manifest or {}), "layers": layers, "d_model": d_model, "context_length": length,
                "dtype": dtype, "num_contexts": len(contexts), "shard_contexts": shard_contexts}
    path = out / "manifest.json"
    state = read_manifest(out) if path.exists() else {**settings, "shards": []}
    if "blocks_module" not in state and "shards" in state:  # caches from before it was recorded
        state["blocks_module"] = settings.get("blocks_module")
    for key, value in settings.items():
        if state.get(key) != value:
            raise BadInput(f"{out} holds a cache made with {key}={state.get(key)!r}, not {value!r}; "
                             "choose another --out.")
    if not path.exists():
        write_json(path, state)  # the cache's record goes down before its first shard
    device = next(model.parameters()).device
    starts = range(0, len(contexts), shard_contexts)
    bar = tqdm(total=len(contexts) * length, unit="tok", unit_scale=True, disable=not progress)
    bar.update(len(state["shards"]) * shard_contexts * length)
    for index, start in enumerate(starts):
        if index < len(state["shards"]):
            continue
        rows = contexts[start:start + shard_contexts]
        tensors = {f"layer.{layer}": torch.empty(rows.numel(), d_model, dtype=CACHE_DTYPES[dtype])
                   for layer in layers}
        for first, batch in zip(range(0, rows.numel(), batch_size * length), rows.split(batch_size),
                                strict=True):
            residual_stream(model, batch.to(device), layers,
                            on_output=_shard_writer(tensors, first, batch.numel(), d_model))
            bar.update(batch.numel())
        tensors["tokens"] = rows.to(torch.int64).contiguous()
        name = shard_name(index)
        atomic_write(out / name, lambda p, t=tensors: write_safetensors(p, t))
        state["shards"].append({"file": name, "contexts": len(rows)})
        write_json(path, state)
    bar.close()
    return out


def _shard_writer(tensors: dict[str, torch.Tensor], first: int, count: int, d_model: int):
    """Copies a block's output (cast to the cache dtype) into rows first … first+count of its layer."""
    def store(layer: int, hidden: torch.Tensor) -> None:
        rows = tensors[f"layer.{layer}"][first:first + count]
        rows.copy_(hidden.reshape(-1, d_model))
        if not torch.isfinite(rows).all():
            largest = hidden.abs().max().item()
            raise BadInput(f"block {layer}'s output does not fit the cache dtype {rows.dtype} (largest |x| "
                             f"{largest:.4g}) or is not finite; choose --dtype bfloat16 or float32.")
    return store


SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.int32: "I32",
                      torch.int64: "I64"}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The safetensors format, written tensor by tensor from the tensors' own memory.

    `safetensors.torch.save_file` first serialises everything into one byte string, which doubles a shard's
    memory at the moment it is written.
    """
    header, offset = {}, 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for tensor in tensors.values():
            flat = tensor.contiguous().view(-1)
            f.write(flat.view(torch.uint8).numpy().data)


class ActivationCache(ShardedCache):
    """A cache written by `cache_activations`, read a shard at a time."""

    @property
    def d_model(self) -> int:
        return self.manifest["d_model"]

    def iter_batches(self, layer: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                     token_filter=None) -> Iterator[torch.Tensor]:
        """(batch × d_model) float32 activations of `layer`, shard by shard; shuffled within and across
        shards under `seed`, or in token order with shuffle=False. The last batch may be short. A
        `TokenFilter` leaves tokens out (its norm threshold taken over each shard)."""
        if layer not in self.layers:
            raise BadInput(f"layer {layer} is not in this cache (it holds {self.layers}).")
        gen = generator(seed, "cache-batches")
        shards = self.manifest["shards"]
        order = torch.randperm(len(shards), generator=gen).tolist() if shuffle else range(len(shards))
        carry = torch.empty(0, self.d_model)
        for i in order:
            rows = self.read_shard(i, f"layer.{layer}").float()
            check_activations(rows, f"{self.directory / shards[i]['file']} (layer {layer})")
            if token_filter is not None and token_filter.active:
                rows = token_filter.apply(rows.view(-1, self.context_length, self.d_model))
            if shuffle:
                rows = rows[torch.randperm(len(rows), generator=gen)]
            rows = torch.cat([carry, rows])
            full = len(rows) // batch_size * batch_size
            yield from rows[:full].split(batch_size)
            carry = rows[full:]
        if len(carry):
            yield carry


def read_manifest(directory: Path) -> dict:
    """manifest.json of an activation cache, checked: its fields, its layers and its shard list."""
    manifest = read_shard_manifest(directory, {"d_model": int, "dtype": str}, "`randsae lm activations`")
    if manifest["dtype"] not in CACHE_DTYPES:
        raise BadInput(f"{directory / 'manifest.json'}: 'dtype' must be one of {', '.join(CACHE_DTYPES)}, not "
                         f"{manifest['dtype']!r}.")
    return manifest


def open_cache(directory: str | Path) -> ActivationCache:
    """The cache in `directory`, its manifest and every shard's header checked against each other (the
    tensor data itself is read a shard at a time, later)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    d_model, length = manifest["d_model"], manifest["context_length"]
    for shard in manifest["shards"]:
        path = directory / shard["file"]
        header = check_safetensors(path)
        tokens = shard["contexts"] * length
        expected = {"tokens": [shard["contexts"], length],
                    **{f"layer.{layer}": [tokens, d_model] for layer in manifest["layers"]}}
        for name, shape in expected.items():
            if name not in header or header[name]["shape"] != shape:
                found = header[name]["shape"] if name in header else "nothing"
                raise BadInput(f"{path} holds {found} as {name!r}, where the manifest implies {shape}.")
            kind = header[name]["dtype"]
            wanted = "I64" if name == "tokens" else SAFETENSORS_DTYPES[CACHE_DTYPES[manifest["dtype"]]]
            if kind != wanted:
                raise BadInput(f"{path} holds {name!r} as {kind}, where the manifest implies {wanted}.")
    return ActivationCache(directory, manifest)


def check_activations(rows: torch.Tensor, where: str) -> None:
    """Activations an SAE can be trained on: finite, and not all equal. One sentence naming `where`."""
    if not torch.isfinite(rows).all():
        raise BadInput(f"{where} holds activations that are not finite (inf or nan); the cache is corrupt, or the "
                       "model overflowed its float type (cache it with --dtype float32).")
    if len(rows) and not float(rows.var(dim=0).max()) > 0:
        raise BadInput(f"{where} holds activations that are all equal (variance 0): there is nothing for an SAE "
                       "to reconstruct.")
