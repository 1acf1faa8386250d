"""What the activation cache and the latent cache share: a directory of safetensors shards of whole
contexts, listed in manifest.json (each entry `file` and `contexts`), read a shard at a time."""

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from randsae.errors import BadInput
from randsae.io import check_fields, read_json


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


@dataclass
class ShardedCache:
    directory: Path
    manifest: dict

    @property
    def layers(self) -> list[int]:
        return self.manifest["layers"]

    @property
    def context_length(self) -> int:
        return self.manifest["context_length"]

    @property
    def num_contexts(self) -> int:
        return sum(s["contexts"] for s in self.manifest["shards"])

    @property
    def num_tokens(self) -> int:
        return self.num_contexts * self.context_length

    def read_shard(self, index: int, key: str) -> torch.Tensor:
        """Tensor `key` of shard `index` (shards are checked when the cache is opened)."""
        with safe_open(str(self.directory / self.manifest["shards"][index]["file"]), framework="pt") as f:
            return f.get_tensor(key)

    def tokens(self) -> torch.Tensor:
        """Token ids of every cached context (contexts × context length), in cache order."""
        return torch.cat([self.read_shard(i, "tokens") for i in range(len(self.manifest["shards"]))])


def read_shard_manifest(directory: Path, fields: dict[str, type], what: str) -> dict:
    """manifest.json of a sharded cache (`what` names the command that writes it), with `fields` and a
    list of shard entries checked; `layers` must be a non-empty list of block indices."""
    path = directory / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {directory} written by {what}?")
    manifest = read_json(path, {"layers": list, "context_length": int, "shards": list, **fields})
    if not manifest["layers"] or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                         for i in manifest["layers"]):
        raise BadInput(f"{path}: 'layers' must be a list of block indices, not {manifest['layers']!r}.")
    for shard in manifest["shards"]:
        if not isinstance(shard, dict):
            raise BadInput(f"{path}: every entry of 'shards' must be an object, not {shard!r}.")
        check_fields(shard, {"file": str, "contexts": int}, f"{path} (shard entry)")
    return manifest
