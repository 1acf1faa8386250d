"""SAE modules: relu.py (ReLU + L1, toy experiments), topk.py (TopK, transformers), thresholded.py (JumpReLU
— and BatchTopK and Matryoshka as SAELens saves them — and Gated, read from released SAEs); files.py reads and
writes the SAELens and sparsify layouts."""

from pathlib import Path

from randsae.sae.files import read_sae_files
from randsae.sae.relu import ReluSAE
from randsae.sae.thresholded import GatedSAE, JumpReLUSAE, ThresholdSAE
from randsae.sae.topk import TopKSAE

ARCHITECTURES = {"relu": ReluSAE, "topk": TopKSAE, "jumprelu": JumpReLUSAE, "gated": GatedSAE}


def load(directory: str | Path) -> ReluSAE | TopKSAE | ThresholdSAE:
    """Read back an SAE directory, whichever its kind: randsae's own, SAELens's (topk, standard, jumprelu,
    gated, batchtopk, matryoshka_batchtopk) or sparsify's (topk)."""
    cfg, tensors = read_sae_files(directory)
    return ARCHITECTURES[cfg["architecture"]].from_files(cfg, tensors)


__all__ = ["ARCHITECTURES", "GatedSAE", "JumpReLUSAE", "ReluSAE", "ThresholdSAE", "TopKSAE", "load"]
