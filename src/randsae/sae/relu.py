"""A stack of ReLU + L1 sparse autoencoders trained side by side (docs/paper.md §1.3).

Stacking S SAEs of one shape into (S, ...) parameters lets one matrix product serve a whole sweep of
sparsity coefficients. Every SAE in the stack starts from the same initialisation, so a sweep compares
coefficients and nothing else, and an SAE's result does not depend on which others share its stack.
"""

import math
from pathlib import Path

import torch
from torch import nn

from randsae.sae.files import read_sae_files, saelens_cfg, write_sae_files
from randsae.seeding import generator

EPS = 1e-8  # floor for a sample's std and a decoder row's norm


class ReluSAE(nn.Module):
    """z = ReLU(x W_enc + b_enc), x̂ = z W_dec (no decoder bias); W_dec rows are latent directions."""

    def __init__(self, num_inputs: int, num_latents: int, num_saes: int = 1, standardize: bool = True,
                 seed: int = 0):
        super().__init__()
        self.num_inputs, self.num_latents, self.num_saes = num_inputs, num_latents, num_saes
        self.standardize = standardize
        gen = generator(seed, "relu-sae-init")
        bound = 1 / math.sqrt(num_inputs)  # nn.Linear's default initialisation
        w_enc = (torch.rand(num_inputs, num_latents, generator=gen) * 2 - 1) * bound
        b_enc = (torch.rand(num_latents, generator=gen) * 2 - 1) * bound
        w_dec = torch.empty(num_inputs, num_latents)
        nn.init.orthogonal_(w_dec, generator=gen)
        self.W_enc = nn.Parameter(_stacked(w_enc, num_saes))
        self.b_enc = nn.Parameter(_stacked(b_enc, num_saes))
        self.W_dec = nn.Parameter(_stacked(w_dec.T, num_saes))
        self.normalize_decoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every latent's decoder direction to unit norm."""
        norms = torch.linalg.vector_norm(self.W_dec, dim=-1, keepdim=True)
        self.W_dec.mul_(norms.clamp_min_(EPS).reciprocal_())

    def standardization(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample mean and std (over the input dimensions); identity when standardisation is off."""
        if not self.standardize:
            return torch.zeros_like(x[..., :1]), torch.ones_like(x[..., :1])
        return x.mean(dim=-1, keepdim=True), x.std(dim=-1, keepdim=True).clamp_min(EPS)

    def _stack(self, index: int | None) -> slice:
        return slice(None) if index is None else slice(index, index + 1)

    def encode(self, x: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Latents (S × B × n) of inputs `x` (B × d, shared by all SAEs); only SAE `index` if given."""
        mean, std = self.standardization(x)
        s = self._stack(index)
        return torch.relu(torch.matmul((x - mean) / std, self.W_enc[s]) + self.b_enc[s, None, :])

    def decode(self, z: torch.Tensor, x: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Reconstructions (S × B × d) of inputs `x` from their latents `z`."""
        mean, std = self.standardization(x)
        return torch.bmm(z, self.W_dec[self._stack(index)]) * std + mean

    def forward(self, x: torch.Tensor, index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x, index)
        return self.decode(z, x, index), z

    def save(self, directory: str | Path, index: int, metadata: dict | None = None,
             extra: dict | None = None) -> Path:
        """Write SAE `index` of the stack as `sae_weights.safetensors` + `cfg.json` in the SAELens layout:
        a `standard` SAE with no decoder bias, and per-sample standardisation as SAELens's
        `normalize_activations: "layer_norm"`. `extra` (what randsae records) is kept under "randsae"."""
        cfg = saelens_cfg("standard", self.num_inputs, self.num_latents, apply_b_dec_to_input=False,
                          normalize_activations="layer_norm" if self.standardize else "none", metadata=metadata,
                          extra=extra)
        return write_sae_files(directory, cfg, {"W_enc": self.W_enc[index], "b_enc": self.b_enc[index],
                                                "W_dec": self.W_dec[index], "b_dec": torch.zeros(self.num_inputs)})

    @classmethod
    def load(cls, directory: str | Path) -> "ReluSAE":
        """Read one SAE written by `save` (a stack of one)."""
        return cls.from_files(*read_sae_files(directory))

    @classmethod
    def from_files(cls, cfg: dict, tensors: dict[str, torch.Tensor]) -> "ReluSAE":
        sae = cls(cfg["d_in"], cfg["d_sae"], standardize=cfg["standardize"])
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec"):
                getattr(sae, name).copy_(tensors[name][None])
        return sae


def _stacked(t: torch.Tensor, copies: int) -> torch.Tensor:
    """`copies` contiguous copies of `t` along a new first dimension."""
    return t.expand(copies, *t.shape).contiguous()
