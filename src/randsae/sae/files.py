"""Reading an SAE directory in the SAELens layout: `cfg.json` + `sae_weights.safetensors`."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_sae_files(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    directory = Path(directory)
    for name in ("cfg.json", "sae_weights.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} does not exist; is {directory} an SAE directory?")
    try:
        cfg = json.loads((directory / "cfg.json").read_text())
    except json.JSONDecodeError:
        raise ValueError(f"{directory / 'cfg.json'} is not valid JSON.") from None
    return cfg, load_file(str(directory / "sae_weights.safetensors"))
