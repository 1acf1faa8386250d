"""The training forms of the SAEs people release besides TopK, for the twins of a user's SAE: each
is trained by the same trainer as the TopK SAE (`randsae.training.trainer.TopKTrainer`: FVU, unit decoder rows, the
budget's schedule) and saved in the form SAELens reads.

- JumpReLU (Rajamanoharan et al. 2024, "Jumping ahead"): z = ReLU(pre) · H(pre − θ), pre = (x − b_dec) W_encᵀ
  + b_enc, θ per latent. The loss adds λ · L0 / target, where the Heaviside step's derivative with respect to θ
  is the straight-through estimate with a rectangle kernel of width ε: ∂H(pre − θ)/∂θ ≈ −K((pre − θ)/ε)/ε and
  ∂[pre · H(pre − θ)]/∂θ ≈ −(θ/ε) K((pre − θ)/ε), K(u) = 1 for |u| < ½, with λ = 1 and θ = exp(log θ) learnt
  per latent (as SAELens trains it). Two choices of ours, so that an SAE of a short run ends at the L0 it was
  asked for rather than at whatever a fixed λ gives (docs/choices.md "Twins trained like your SAE"): θ starts
  where the first batch's L0 is the target (one threshold for every latent, the batch's quantile), and after
  every step all log θ move together by L0_STEP · ln(batch L0 / target) — feedback on the measured L0, beside
  the gradient that shapes each latent's own threshold. ε is `bandwidth` × the first batch's RMS per
  dimension (Gemma Scope's 0.001 on activations normalised to RMS 1).
- BatchTopK (Bussmann et al. 2024): the batch's B·k largest activations are kept, across tokens; at inference
  a threshold θ replaces the batch (SAELens's `topk_threshold`: a running mean of the smallest kept activation,
  started at the first batch's). Saved as SAELens's `batchtopk` checkpoint, read back as the JumpReLU SAE
  SAELens runs for inference.
- Matryoshka BatchTopK (Bussmann et al. 2025): the same, with the reconstruction from each nested prefix of
  latents (`widths`, ascending, the last the whole dictionary) added to the loss; `matryoshka_batchtopk`.

Each trains from the entries that matter alone — the kept (or active) ones, recomputed from their encoder rows and
decoded as an embedding bag, and JumpReLU's entries near their threshold — as the TopK SAE does: the same function
and gradients as the dense `forward_dense` (tests/test_recovery.py), without a B × latents matrix kept for the
backward pass (docs/speed.md: 1.1–1.4× faster on the toy's shape).
"""

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from randsae.errors import BadInput
from randsae.sae.files import saelens_cfg, write_sae_files
from randsae.sae.thresholded import JumpReLUSAE, sparse_view
from randsae.sae.topk import TopKOutput, UnitDecoder

# after each optimiser step every log θ moves by L0_STEP · ln(L0 / target), the batch's L0 against the target
# (measured, docs/choices.md "Twins trained like your SAE": 0.5 holds L0 as well and costs reconstruction)
L0_STEP = 0.25
THRESHOLD_LR = 0.01  # BatchTopK's running threshold (SAELens's topk_threshold_lr)


def _kernel(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _Step(torch.autograd.Function):
    """H(pre − θ), with the straight-through derivative with respect to θ only (as in the JumpReLU paper)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # pyright: ignore[reportIncompatibleMethodOverride]
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = (-_kernel((pre - threshold) / eps) / eps * grad).sum(0)
        return torch.zeros_like(pre), grad_threshold, None


class _JumpReLU(torch.autograd.Function):
    """pre · H(pre − θ): the true derivative with respect to pre, the straight-through one with respect to θ."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # pyright: ignore[reportIncompatibleMethodOverride]
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold).to(pre.dtype)
        grad_threshold = (-(threshold / eps) * _kernel((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_threshold, None


@torch.no_grad()
def batch_top(pre: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, latents) of the `count` largest positive entries of `pre` (B × L) over the whole batch, in row
    order. Each row offers its 4·count/B largest as candidates, and the batch's cut among the candidates is
    found; a row whose every candidate is above that cut may hold more, and offers its whole row. The cut among
    what was offered is then exact (ties at it are all kept)."""
    rows, latents = pre.shape
    count = min(count, pre.numel())
    width = min(latents, 4 * -(-count // max(1, rows)))
    values, indices = pre.topk(width, dim=-1, sorted=False)
    cut = values.flatten().kthvalue(values.numel() - count + 1).values
    offered = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, indices, values >= cut)
    overflow = values.min(-1).values > cut
    if width < latents and bool(overflow.any()):
        offered[overflow] = pre[overflow] >= cut
    chosen = pre[offered]
    cut = chosen.kthvalue(len(chosen) - count + 1).values if len(chosen) > count else cut
    rows_kept, latents_kept = ((pre >= cut) & offered & (pre > 0)).nonzero(as_tuple=True)
    return rows_kept, latents_kept


class JumpReLUTraining(UnitDecoder):
    """A JumpReLU SAE in training toward `target_l0` active latents per token (the module docstring)."""

    architecture = "jumprelu"
    offset: torch.Tensor
    bandwidth: torch.Tensor

    def __init__(self, num_inputs: int, num_latents: int, target_l0: float, seed: int = 0,
                 bandwidth: float = 0.001):
        super().__init__(num_inputs, num_latents, seed)
        if not 0 < target_l0 <= num_latents:
            raise BadInput(f"the target L0 must lie in (0, {num_latents}], not {target_l0}.")
        if not bandwidth > 0:
            raise BadInput(f"the JumpReLU bandwidth must be positive, not {bandwidth}.")
        self.target_l0, self.relative_bandwidth = float(target_l0), bandwidth
        self.log_threshold = torch.nn.Parameter(torch.zeros(num_latents))  # θ = exp(·), as SAELens trains it
        self.register_buffer("offset", torch.zeros(()))  # log θ's shift that holds the batch L0 at the target
        self.register_buffer("bandwidth", torch.ones(()))  # ε, in the activations' units (set at the first batch)

    @property
    def threshold(self) -> torch.Tensor:
        return (self.log_threshold + self.offset).exp()

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    @torch.no_grad()
    def first_batch(self, x: torch.Tensor) -> list[torch.Tensor]:
        pre = self.pre(x).relu_().flatten()
        count = min(len(pre) - 1, max(0, round(self.target_l0 * len(x))))
        start = float(pre.topk(count + 1).values[-1]) if len(pre) else 0.0
        scale = float((x - x.mean(0)).square().mean().sqrt()) or 1.0
        self.log_threshold.fill_(math.log(max(start, 1e-6 * scale)))
        self.bandwidth.fill_(self.relative_bandwidth * scale)
        return [self.log_threshold.data, self.bandwidth]

    def forward(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                k_aux: int | None = None) -> TopKOutput:
        """`forward_dense`'s function and gradients from the active entries and those within ε/2 of their
        threshold alone (few of B × latents): the active ones recomputed from their encoder rows and decoded as
        an embedding bag; the threshold's straight-through gradients carried by terms whose value is 0 — for the
        reconstruction, Σ over the near entries of −(θ/ε)(θ − sg θ) · sg W_dec row; for the L0, −(1/ε)(θ − sg θ)
        per near entry, over B. Its `values` and `indices` are the active entries, flat."""
        eps, threshold = float(self.bandwidth), self.threshold
        with torch.no_grad():
            pre = self.pre(x)
            fixed = threshold.detach()
            rows, latents = (pre > fixed).nonzero(as_tuple=True)
            near_rows, near = ((pre - fixed).abs() < eps / 2).nonzero(as_tuple=True)
        values = torch.linalg.vecdot(self.W_enc[latents], (x - self.b_dec)[rows]) + self.b_enc[latents]
        moved = threshold - fixed  # 0, with the threshold's gradient
        jump = -(fixed[near] / eps) * moved[near]
        reconstruction = (self.bag(latents, rows, len(x), self.W_dec, values)
                          + self.bag(near, near_rows, len(x), self.W_dec.detach(), jump) + self.b_dec)
        l0 = (len(latents) - moved[near].sum() / eps) / len(x)
        return TopKOutput(reconstruction, values.detach(), latents, None, penalty=l0 / self.target_l0)  # λ = 1

    @staticmethod
    def bag(latents: torch.Tensor, rows: torch.Tensor, count: int, weight: torch.Tensor,
            values: torch.Tensor) -> torch.Tensor:
        """Σ values · weight[latent] per row (`rows` ascending), count × d."""
        sizes = torch.bincount(rows, minlength=count)
        return F.embedding_bag(latents, weight, torch.cumsum(sizes, 0) - sizes, mode="sum",
                               per_sample_weights=values)

    def forward_dense(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                      k_aux: int | None = None) -> TopKOutput:
        """The function written with the full latent matrix and the straight-through autograd functions: the
        reference the tests compare `forward` against."""
        pre = self.pre(x)
        eps = float(self.bandwidth)
        z = _JumpReLU.apply(pre, self.threshold, eps)
        l0 = _Step.apply(pre, self.threshold, eps).sum(-1).mean()
        values, indices = sparse_view(z.detach())
        assert isinstance(z, torch.Tensor) and isinstance(l0, torch.Tensor)
        return TopKOutput(z @ self.W_dec + self.b_dec, values, indices, None,
                          penalty=l0 / self.target_l0)  # λ = 1

    @torch.no_grad()
    def after_step(self, out: TopKOutput) -> None:
        l0 = float((out.values > 0).sum()) / max(1, len(out.reconstruction))
        self.offset.add_(L0_STEP * math.log(max(l0, 1e-3) / self.target_l0))

    @torch.no_grad()
    def restarted(self, latents: torch.Tensor) -> None:
        """A restarted latent's threshold starts at the living latents' median."""
        if bool((~latents).any()):
            self.log_threshold[latents] = self.log_threshold[~latents].median()

    def inference(self) -> JumpReLUSAE:
        sae = JumpReLUSAE(self.num_inputs, self.num_latents)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
                getattr(sae, name).copy_(getattr(self, name))
        sae.input_normalization = self.input_normalization
        return sae

    def save(self, directory: str | Path, metadata: dict | None = None, extra: dict | None = None) -> Path:
        extra = {**(extra or {}), "target_l0": self.target_l0, "threshold_offset": float(self.offset)}
        return self.inference().to("cpu").save(directory, metadata, extra)


class BatchTopKTraining(UnitDecoder):
    """A BatchTopK SAE in training (with `widths`, Matryoshka BatchTopK): the module docstring."""

    threshold: torch.Tensor

    def __init__(self, num_inputs: int, num_latents: int, k: int, seed: int = 0,
                 widths: list[int] | None = None):
        super().__init__(num_inputs, num_latents, seed)
        if not 0 < k <= num_latents:
            raise BadInput(f"k must lie in 1 … num_latents ({num_latents}), not {k}.")
        if widths is not None and (sorted(set(widths)) != list(widths) or widths[-1] != num_latents
                                   or widths[0] < 1):
            raise BadInput(f"the Matryoshka widths must rise from 1 or more to the {num_latents} latents, not "
                           f"{widths}.")
        self.k, self.widths = k, list(widths) if widths is not None else None
        self.architecture = "matryoshka_batchtopk" if widths is not None else "batchtopk"
        self.register_buffer("threshold", torch.full((), -1.0))  # below 0: not yet measured

    def forward(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                k_aux: int | None = None) -> TopKOutput:
        """The batch's B·k largest activations, found without gradient and recomputed from their encoder rows
        (as the TopK SAE's), decoded as an embedding bag: the same function and gradients as `forward_dense`,
        without a dense B × latents matrix in the graph. Its `values` and `indices` are the kept entries, flat.
        With `dead_mask`, AuxK's decoding of the residual from each sample's largest dead latents, as TopK's."""
        pre = self.pre_activations(x)
        rows, latents = batch_top(pre, self.k * len(x))
        values = (torch.linalg.vecdot(self.W_enc[latents], (x - self.b_dec)[rows]) + self.b_enc[latents]).relu()
        counts = torch.bincount(rows, minlength=len(x))
        offsets = torch.cumsum(counts, 0) - counts

        def decode(weights: torch.Tensor) -> torch.Tensor:
            bag = F.embedding_bag(latents, self.W_dec, offsets, mode="sum", per_sample_weights=weights)
            return bag + self.b_dec

        prefixes = tuple(decode(values * (latents < w)) for w in (self.widths or [])[:-1])
        return TopKOutput(decode(values), values.detach(), latents, self.auxiliary(x, pre, dead_mask, k_aux),
                          prefixes=prefixes)

    def forward_dense(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None,
                      k_aux: int | None = None) -> TopKOutput:
        """`forward` written with the full latent matrix: the reference the tests compare against."""
        pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc).relu()
        flat = pre.flatten()
        kept = flat.detach().topk(min(len(flat), self.k * len(x))).indices
        mask = torch.zeros_like(flat, dtype=torch.bool).index_fill_(0, kept, True).view_as(pre)
        z = pre * mask.to(pre.dtype)
        values, indices = sparse_view(z.detach())
        prefixes = tuple(z[:, :w] @ self.W_dec[:w] + self.b_dec for w in (self.widths or [])[:-1])
        return TopKOutput(z @ self.W_dec + self.b_dec, values, indices, None, prefixes=prefixes)

    @torch.no_grad()
    def after_step(self, out: TopKOutput) -> None:
        positive = out.values[out.values > 0]
        if not len(positive):
            return
        smallest = positive.min()
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, THRESHOLD_LR)

    def inference(self) -> JumpReLUSAE:
        sae = JumpReLUSAE(self.num_inputs, self.num_latents)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(getattr(self, name))
            sae.threshold.fill_(max(0.0, float(self.threshold)))
        sae.saved_as = self.architecture
        sae.input_normalization = self.input_normalization
        return sae

    def save(self, directory: str | Path, metadata: dict | None = None, extra: dict | None = None) -> Path:
        """SAELens's training checkpoint of this architecture (`topk_threshold` beside the weights), which
        `randsae.sae.load` reads as the JumpReLU SAE SAELens runs for inference."""
        fields: dict = {"k": self.k, "rescale_acts_by_decoder_norm": False, "topk_threshold_lr": THRESHOLD_LR}
        if self.widths is not None:
            fields["matryoshka_widths"] = self.widths
        cfg = saelens_cfg(self.architecture, self.num_inputs, self.num_latents, apply_b_dec_to_input=True,
                          normalize_activations=self.input_normalization, metadata=metadata, extra=extra, **fields)
        tensors = {"W_enc": self.W_enc.T, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                   "topk_threshold": self.threshold.clamp(min=0).reshape(())}
        return write_sae_files(directory, cfg, tensors)
