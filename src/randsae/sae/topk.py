"""A TopK sparse autoencoder for residual-stream activations (docs/paper.md §2.2, the EleutherAI recipe).

z = TopK(ReLU((x − b_dec) W_encᵀ + b_enc)), x̂ = z W_dec + b_dec. Only the k kept latents of a token are
ever touched after the encoder's product: their values are recomputed from the gathered encoder rows
(so the encoder's gradient is k rows per token, not a dense matrix), and decoding sums the k decoder rows
as an embedding bag. `forward_dense` is the same function written with the full latent matrix, kept as
the reference that tests and the benchmark compare against.
"""

import math
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from randsae.errors import BadInput
from randsae.sae.files import read_sae_files, saelens_cfg, write_sae_files, write_sparsify
from randsae.sae.normalised import InputNormalization
from randsae.seeding import generator

if TYPE_CHECKING:
    from randsae.sae.thresholded import ThresholdSAE

EPS = 1e-8  # floor for a decoder row's norm


class TopKOutput(NamedTuple):
    """What one forward pass gives the trainer. `aux_reconstruction` is the dead latents' decoding of the
    residual (AuxK), None when no dead-latent mask was passed or no latent is dead."""

    reconstruction: torch.Tensor  # B × d
    values: torch.Tensor  # B × k, the kept latents' activations (≥ 0)
    indices: torch.Tensor  # B × k, which latents they are
    aux_reconstruction: torch.Tensor | None
    # what the other architectures' training forms add (randsae.training.forms): the sparsity penalty already
    # weighted (JumpReLU's straight-through L0), and the reconstructions from each nested prefix (Matryoshka)
    penalty: torch.Tensor | None = None
    prefixes: tuple[torch.Tensor, ...] = ()


def initial_weights(num_inputs: int, num_latents: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_enc, W_dec) as every trained SAE starts: the encoder uniform as nn.Linear's default, the decoder its
    transpose with unit rows."""
    bound = 1 / math.sqrt(num_inputs)
    w_enc = (torch.rand(num_latents, num_inputs, generator=generator(seed, "topk-sae-init")) * 2 - 1) * bound
    return w_enc, w_enc * torch.linalg.vector_norm(w_enc, dim=1, keepdim=True).clamp_min_(EPS).reciprocal_()


class UnitDecoder(InputNormalization, nn.Module):
    """What every SAE the trainer trains shares: W_enc and W_dec, both num_latents × num_inputs (a latent's
    encoder and decoder directions are rows), b_enc and b_dec, decoder rows kept at unit norm, the seed
    a random dictionary is drawn from (`randsae.sae.dictionaries`), and the normalisation of its inputs
    (`InputNormalization`: none, unless it is trained as a released SAE was)."""

    def __init__(self, num_inputs: int, num_latents: int, seed: int = 0):
        super().__init__()
        self.num_inputs, self.num_latents, self.seed = num_inputs, num_latents, seed
        w_enc, w_dec = initial_weights(num_inputs, num_latents, seed)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(num_latents))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(num_inputs))

    def first_batch(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Called by the trainer with this rank's share of the first batch, after b_dec is set to the global
        batch's mean; returns what it set from it (the trainer averages those across ranks)."""
        return []

    def inference(self) -> "TopKSAE | ThresholdSAE":
        """The SAE as it is saved and read back (`encode`, `decode`): itself, unless its training form differs."""
        raise NotImplementedError

    def save(self, directory: str | Path, metadata: dict | None = None, extra: dict | None = None) -> Path:
        """`cfg.json` + the weights, in the layout SAELens reads for this architecture."""
        raise NotImplementedError

    def after_step(self, out: "TopKOutput") -> None:
        """Called by the trainer after each optimiser step (running statistics, controllers)."""

    def restarted(self, latents: torch.Tensor) -> None:
        """Called by the trainer after it restarted `latents` (a mask) on new directions."""

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU((x − b_dec) W_encᵀ + b_enc) for every latent: B × num_latents, without gradient."""
        with torch.no_grad():
            return F.linear(x - self.b_dec, self.W_enc, self.b_enc).relu_()

    def selected_activations(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The activations of latents `indices` (B × j) of each token, recomputed from their encoder rows
        so that gradients reach only those rows."""
        rows = F.embedding(indices, self.W_enc)  # B × j × d
        pre = torch.bmm(rows, (x - self.b_dec).unsqueeze(-1)).squeeze(-1) + self.b_enc[indices]
        return pre.relu()

    def decode(self, values: torch.Tensor, indices: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Σ_j values[:, j] · W_dec[indices[:, j]] (+ b_dec), without the dense latent matrix."""
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values.to(self.W_dec.dtype), mode="sum")
        return out + self.b_dec if bias else out

    def auxiliary(self, x: torch.Tensor, pre: torch.Tensor, dead_mask: torch.Tensor | None,
                  k_aux: int | None = None) -> torch.Tensor | None:
        """AuxK: the residual's decoding from each token's `k_aux` largest dead latents (default d/2), for the
        trainer's auxiliary loss; None without a mask or a dead latent. Computed densely over the dead latents
        alone (tokens × dead: few while the SAE is healthy), which costs far less than gathering k_aux encoder and
        decoder rows per token. `pre` (every latent's pre-activations) is not needed for it."""
        if dead_mask is None or not bool(dead_mask.any()):
            return None
        dead = dead_mask.nonzero().squeeze(1)
        k_aux = min(k_aux or self.num_inputs // 2, len(dead))
        activations = F.linear(x - self.b_dec, self.W_enc[dead], self.b_enc[dead]).relu()  # tokens × dead
        values, kept = activations.topk(k_aux, dim=-1, sorted=False)
        return torch.zeros_like(activations).scatter(1, kept, values) @ self.W_dec[dead]

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        norms = torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True)
        self.W_dec.mul_(norms.clamp_min_(EPS).reciprocal_())

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of each decoder row's gradient along the row: with unit-norm rows it would only
        change their length, which the next normalisation undoes."""
        if self.W_dec.grad is None:
            return
        parallel = torch.linalg.vecdot(self.W_dec.grad, self.W_dec, dim=1).unsqueeze(1)
        self.W_dec.grad.addcmul_(parallel, self.W_dec, value=-1)


class TopKSAE(UnitDecoder):
    """A latent's encoder and decoder directions are rows (`UnitDecoder`); k latents are kept per token."""

    def __init__(self, num_inputs: int, num_latents: int, k: int, seed: int = 0):
        if not 0 < k <= num_latents:
            raise BadInput(f"k must lie in 1 … num_latents ({num_latents}), not {k}.")
        super().__init__(num_inputs, num_latents, seed)
        self.k = k

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), each B × k: the k largest activations of each token and their latents."""
        x = self.normalised(x)
        values, indices = self.pre_activations(x).topk(self.k, dim=-1, sorted=False)
        if torch.is_grad_enabled():
            values = self.selected_activations(x, indices)
        return values, indices

    def forward(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                k_aux: int | None = None) -> TopKOutput:
        """Encode and decode `x` (B × d). With `dead_mask` (num_latents bools), also decode the residual
        from the top dead latents (AuxK, at most d/2 of them), for the trainer's auxiliary loss."""
        pre = self.pre_activations(x)
        _, indices = pre.topk(self.k, dim=-1, sorted=False)
        values = self.selected_activations(x, indices)
        reconstruction = UnitDecoder.decode(self, values, indices)  # of the inputs as given (normalised or not)
        return TopKOutput(reconstruction, values, indices, self.auxiliary(x, pre, dead_mask, k_aux))

    def inference(self) -> "TopKSAE":
        return self

    def decode(self, values: torch.Tensor, indices: torch.Tensor, bias: bool = True) -> torch.Tensor:
        out = super().decode(values, indices, bias)
        return self.restored(out) if bias else out

    def dense_latents(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The B × num_latents latent matrix (for metrics on small batches and for the reference)."""
        return torch.zeros(len(values), self.num_latents, dtype=values.dtype,
                           device=values.device).scatter_(1, indices, values)

    def forward_dense(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                      k_aux: int | None = None) -> TopKOutput:
        """`forward` computed densely: the full latent matrix, a dense decoder product, dense gradients.
        The reference that tests and the benchmark compare against, not for training (and without AuxK)."""
        pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc).relu()
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return TopKOutput(self.dense_latents(values, indices) @ self.W_dec + self.b_dec, values, indices, None)

    def save(self, directory: str | Path, metadata: dict | None = None, extra: dict | None = None) -> Path:
        """`cfg.json` + `sae_weights.safetensors` in the SAELens layout (`SAE.load_from_disk` opens it as a
        `topk` SAE). `metadata`: SAELens metadata (model_name, hook_name, context_size, …); `extra`: what
        randsae records besides, kept under "randsae"."""
        cfg = saelens_cfg("topk", self.num_inputs, self.num_latents, apply_b_dec_to_input=True, k=self.k,
                          rescale_acts_by_decoder_norm=False, normalize_activations=self.input_normalization,
                          metadata=metadata, extra=extra)
        return write_sae_files(directory, cfg, {"W_enc": self.W_enc.T, "b_enc": self.b_enc, "W_dec": self.W_dec,
                                                "b_dec": self.b_dec})

    def save_sparsify(self, directory: str | Path) -> Path:
        """The same SAE in sparsify's layout (`SparseCoder.load_from_disk`, and delphi through it)."""
        return write_sparsify(directory, self.W_enc, self.b_enc, self.W_dec, self.b_dec, self.k)

    @classmethod
    def load(cls, directory: str | Path) -> "TopKSAE":
        return cls.from_files(*read_sae_files(directory))

    @classmethod
    def from_files(cls, cfg: dict, tensors: dict[str, torch.Tensor]) -> "TopKSAE":
        """An SAE from `read_sae_files`' canonical cfg and tensors."""
        sae = cls(cfg["d_in"], cfg["d_sae"], cfg["k"])
        sae.input_normalization = cfg.get("normalization", "none")
        with torch.no_grad():
            sae.W_enc.copy_(tensors["W_enc"].T)
            for name in ("b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(tensors[name])
        return sae
