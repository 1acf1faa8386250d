"""SAE modules: relu.py (ReLU + L1, toy experiments), topk.py (TopK, transformers), thresholded.py (JumpReLU
— and BatchTopK and Matryoshka as SAELens saves them — and Gated, read from released SAEs); files.py reads and
writes the SAELens and sparsify layouts."""

from pathlib import Path

from randsae.errors import BadInput
from randsae.sae.files import read_sae_files
from randsae.sae.relu import ReluSAE
from randsae.sae.thresholded import GatedSAE, JumpReLUSAE, ThresholdSAE
from randsae.sae.topk import TopKSAE

ARCHITECTURES = {"relu": ReluSAE, "topk": TopKSAE, "jumprelu": JumpReLUSAE, "gated": GatedSAE}
# an SAE of a transformer's activations as every stage reads it: (values, indices) from `encode`, `decode`
LanguageSAE = TopKSAE | ThresholdSAE


def architecture_of(sae: LanguageSAE) -> str:
    """What the tables and the report call an SAE's architecture: topk, jumprelu, gated, batchtopk or
    matryoshka_batchtopk (SAELens's names; the last two run as JumpReLU SAEs)."""
    return sae.saved_as if isinstance(sae, ThresholdSAE) else "topk"


def load_language_sae(directory: str | Path) -> LanguageSAE:
    """An SAE of a transformer's activations (any architecture but the toy's ReLU), or one sentence."""
    sae = load(directory)
    if isinstance(sae, ReluSAE):
        raise BadInput(f"{directory} holds a ReLU + L1 SAE of the toy experiments, not one of a language model.")
    return sae


def load(directory: str | Path) -> ReluSAE | TopKSAE | ThresholdSAE:
    """Read back an SAE directory, whichever its kind: randsae's own, SAELens's (topk, standard, jumprelu,
    gated, batchtopk, matryoshka_batchtopk) or sparsify's (topk)."""
    cfg, tensors = read_sae_files(directory)
    return ARCHITECTURES[cfg["architecture"]].from_files(cfg, tensors)


__all__ = ["ARCHITECTURES", "GatedSAE", "JumpReLUSAE", "LanguageSAE", "ReluSAE", "ThresholdSAE", "TopKSAE",
           "architecture_of", "load", "load_language_sae"]
