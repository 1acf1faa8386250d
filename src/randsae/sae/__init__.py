"""SAE modules: relu.py (ReLU + L1, toy experiments), topk.py (TopK, transformers)."""

from pathlib import Path

from randsae.sae.files import read_sae_files
from randsae.sae.relu import ReluSAE
from randsae.sae.topk import TopKSAE

ARCHITECTURES = {"relu": ReluSAE, "topk": TopKSAE}


def load(directory: str | Path) -> ReluSAE | TopKSAE:
    """Read back an SAE saved by randsae (`cfg.json` + `sae_weights.safetensors`), whichever its kind."""
    cfg, tensors = read_sae_files(directory)
    architecture = cfg.get("architecture")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{directory} holds an SAE of architecture {architecture!r}; randsae reads "
                         f"{', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[architecture].from_files(cfg, tensors)


__all__ = ["ARCHITECTURES", "ReluSAE", "TopKSAE", "load"]
