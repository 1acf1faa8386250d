"""The SAEs people release that are not TopK: JumpReLU (Gemma Scope; and BatchTopK and Matryoshka BatchTopK,
which SAELens saves for inference as JumpReLU SAEs with their batch threshold per latent) and Gated SAEs —
read from SAELens's layout, giving the same latents and reconstruction as SAELens's own classes, and written
back in it.

- JumpReLU: pre = (x − a·b_dec) W_enc + b_enc, z = ReLU(pre) · [pre > θ] (θ per latent), x̂ = z W_dec + b_dec.
- Gated: the gate [(x − a·b_dec) W_enc + b_gate > 0] times the magnitude ReLU((x − a·b_dec)(W_enc ·
  exp(r_mag)) + b_mag), x̂ = z W_dec + b_dec.

a is `apply_b_dec_to_input` (1 or 0), honoured as stored. Both give their latents densely (`encode_dense`) and,
like the TopK SAE, as (values, indices) — the batch's active latents, padded with zeros to its largest L0 —
so that every consumer of `TopKSAE.encode` reads them too (a latent is active where its value is non-zero).
"""

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from randsae.sae.files import saelens_cfg, write_sae_files
from randsae.sae.normalised import InputNormalization


def sparse_view(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of a dense latent matrix: B × (the batch's largest L0, at least 1), zeros padding."""
    width = max(1, int((z != 0).sum(dim=-1).max())) if len(z) else 1
    return z.topk(width, dim=-1, sorted=False)


class ThresholdSAE(InputNormalization, nn.Module):
    """What JumpReLU and Gated SAEs share: the decoder, the sparse view of their dense latents, saving, the
    normalisation of inputs some released SAEs were trained on (`InputNormalization`)."""

    architecture = ""
    encoder_tensors: tuple[str, ...] = ()

    def __init__(self, num_inputs: int, num_latents: int, apply_b_dec_to_input: bool = True):
        super().__init__()
        self.num_inputs, self.num_latents = num_inputs, num_latents
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.saved_as = self.architecture  # how it was trained: batchtopk and matryoshka_batchtopk run as jumprelu
        self.W_enc = nn.Parameter(torch.zeros(num_latents, num_inputs))  # rows, as in TopKSAE
        self.W_dec = nn.Parameter(torch.zeros(num_latents, num_inputs))
        self.b_dec = nn.Parameter(torch.zeros(num_inputs))

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.apply_b_dec_to_input else x

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), each B × (the batch's largest L0, at least 1): every active latent of each token
        and zeros after them."""
        return sparse_view(self.encode_dense(self.normalised(x)))

    @property
    def k(self) -> None:
        """No fixed number of latents per token (what a TopK SAE's k is): its measured L0 stands in."""
        return None

    def decode(self, values: torch.Tensor, indices: torch.Tensor, bias: bool = True) -> torch.Tensor:
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values.to(self.W_dec.dtype), mode="sum")
        return self.restored(out + self.b_dec) if bias else out

    def decode_dense(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restored(self.decode_dense(self.encode_dense(self.normalised(x))))

    def dense_latents(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(values), self.num_latents, dtype=values.dtype,
                           device=values.device).scatter_(1, indices, values)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights in SAELens's orientation and names."""
        out = {"W_enc": self.W_enc.T, "W_dec": self.W_dec, "b_dec": self.b_dec}
        return out | {name: getattr(self, name) for name in self.encoder_tensors}

    def save(self, directory: str | Path, metadata: dict | None = None, extra: dict | None = None) -> Path:
        """`cfg.json` + `sae_weights.safetensors` as SAELens writes this architecture (`SAE.load_from_disk`
        opens it)."""
        if self.saved_as != self.architecture:  # SAELens's inference form of a BatchTopK SAE: say what it was
            extra = {**(extra or {}), "saved_as": self.saved_as}
        cfg = saelens_cfg(self.architecture, self.num_inputs, self.num_latents,
                          apply_b_dec_to_input=self.apply_b_dec_to_input,
                          normalize_activations=self.input_normalization, metadata=metadata, extra=extra)
        return write_sae_files(directory, cfg, self.tensors())

    @classmethod
    def from_files(cls, cfg: dict, tensors: dict[str, torch.Tensor]) -> "ThresholdSAE":
        sae = cls(cfg["d_in"], cfg["d_sae"], cfg.get("apply_b_dec_to_input", True))
        sae.saved_as = cfg.get("saved_as", cls.architecture)
        sae.input_normalization = cfg.get("normalization", "none")
        with torch.no_grad():
            sae.W_enc.copy_(tensors["W_enc"].T)
            for name in ("W_dec", "b_dec", *cls.encoder_tensors):
                getattr(sae, name).copy_(tensors[name])
        return sae


class JumpReLUSAE(ThresholdSAE):
    architecture = "jumprelu"
    encoder_tensors = ("b_enc", "threshold")

    def __init__(self, num_inputs: int, num_latents: int, apply_b_dec_to_input: bool = True):
        super().__init__(num_inputs, num_latents, apply_b_dec_to_input)
        self.b_enc = nn.Parameter(torch.zeros(num_latents))
        self.threshold = nn.Parameter(torch.zeros(num_latents))

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.linear(self.centred(x), self.W_enc, self.b_enc)
        return pre.relu() * (pre > self.threshold).to(pre.dtype)


class GatedSAE(ThresholdSAE):
    architecture = "gated"
    encoder_tensors = ("b_gate", "b_mag", "r_mag")

    def __init__(self, num_inputs: int, num_latents: int, apply_b_dec_to_input: bool = True):
        super().__init__(num_inputs, num_latents, apply_b_dec_to_input)
        self.b_gate = nn.Parameter(torch.zeros(num_latents))
        self.b_mag = nn.Parameter(torch.zeros(num_latents))
        self.r_mag = nn.Parameter(torch.zeros(num_latents))

    def encode_dense(self, x: torch.Tensor) -> torch.Tensor:
        x = self.centred(x)
        gate = F.linear(x, self.W_enc, self.b_gate) > 0
        magnitude = F.linear(x, self.W_enc * self.r_mag.exp().unsqueeze(1), self.b_mag).relu()
        return magnitude * gate.to(magnitude.dtype)
