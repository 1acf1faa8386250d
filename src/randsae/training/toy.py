"""Training loops. A stack of SAEs shares every minibatch, sliced from one in-memory tensor.

The ReLU SAE step computes its gradients by hand (they are short, and `test_sae.py` checks them against
autograd): it saves autograd's bookkeeping, and it lets SAEs whose latents are nearly all zero skip the
dense decoder products. On the CPU such SAEs (every coefficient past the collapse, about half of the
paper's sweep) do their decoder and encoder-gradient work on the non-zero latents only.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from torch.nn import functional as F

from randsae import cpu
from randsae.errors import BadInput, check_terminated
from randsae.sae import dictionaries as D
from randsae.sae.relu import ReluSAE
from randsae.seeding import generator

L1Reduction = Literal["mean", "sum"]


def l1_scale(l1_reduction: L1Reduction, num_latents: int, batch_size: int) -> float:
    """The factor that turns the sum of |z| over a batch into the L1 penalty.

    "mean": mean of |z| over all entries of the batch × latents matrix (the authors' code, default);
    "sum": the per-sample L1 norm, averaged over the batch.
    """
    if l1_reduction == "mean":
        return 1.0 / (batch_size * num_latents)
    if l1_reduction == "sum":
        return 1.0 / batch_size
    raise BadInput(f"l1_reduction must be 'mean' or 'sum', not {l1_reduction!r}.")


def relu_sae_losses(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor,
                    l1_reduction: L1Reduction = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-SAE MSE and L1 penalty (each of shape S) for a stack's outputs (S × B × ·) on one batch."""
    mse = (x_hat - x).square().mean(dim=(1, 2))
    l1 = z.abs().sum(dim=(1, 2)) * l1_scale(l1_reduction, z.shape[2], z.shape[1])
    return mse, l1


@torch.no_grad()
def relu_sae_step_gradients(sae: ReluSAE, x: torch.Tensor, coefs: torch.Tensor, scale: float,
                            sparse_l0: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Set .grad of the stack's parameters to the gradient of Σ_s (MSE_s + coefs_s · L1_s) on batch `x`.

    The SAEs after the last one whose mean L0 exceeds `sparse_l0` take the sparse path (coefficients
    ascend along the stack, so L0 descends). Returns the per-SAE MSE and L1 penalty.
    """
    S, B, d = sae.num_saes, x.shape[0], sae.num_inputs
    mean, std = sae.standardization(x)
    xs = (x - mean) / std
    z = torch.baddbmm(sae.b_enc.unsqueeze(1), xs.expand(S, B, d), sae.W_enc).relu_()
    k = S
    if sparse_l0 > 0:
        dense_enough = torch.count_nonzero(z, dim=(1, 2)) > sparse_l0 * B
        k = int(dense_enough.nonzero().max()) + 1 if dense_enough.any() else 0
    sparse = _SparseLatents(z[k:]) if k < S else None

    y = torch.empty(S, B, d, dtype=x.dtype, device=x.device)
    torch.bmm(z[:k], sae.W_dec[:k], out=y[:k])
    if sparse is not None:
        y[k:] = sparse.decode(sae.W_dec[k:])
    r = torch.addcmul(mean - x, y, std)  # x̂ − x
    mse = torch.linalg.vector_norm(r, dim=(1, 2)).square_() / (B * d)
    l1 = z.sum(dim=(1, 2)) * scale
    grad_y = r.mul_(std * (2.0 / (B * d)))
    grad_l1 = (coefs * scale).view(S, 1, 1)

    W_enc_grad, W_dec_grad, b_enc_grad = (torch.empty(p.shape, dtype=p.dtype, device=p.device)
                                          for p in (sae.W_enc, sae.W_dec, sae.b_enc))
    if k:
        torch.bmm(z[:k].transpose(1, 2), grad_y[:k], out=W_dec_grad[:k])
        grad_pre = torch.bmm(grad_y[:k], sae.W_dec[:k].transpose(1, 2)).add_(grad_l1[:k])
        grad_pre = torch.ops.aten.threshold_backward(grad_pre, z[:k], 0)
        torch.matmul(xs.T, grad_pre, out=W_enc_grad[:k])
        torch.sum(grad_pre, dim=1, out=b_enc_grad[:k])
    if sparse is not None:
        sparse.gradients(xs, grad_y[k:], sae.W_dec[k:], grad_l1[k:].flatten(),
                         W_enc_grad[k:], W_dec_grad[k:], b_enc_grad[k:])
    sae.W_enc.grad, sae.W_dec.grad, sae.b_enc.grad = W_enc_grad, W_dec_grad, b_enc_grad
    return mse, l1


class _SparseLatents:
    """The non-zero entries of a stack's latents (S' × B × n), and the products that need only them.

    Each product is an embedding bag over the non-zero entries: decoding sums the decoder rows of a
    sample's active latents; the weight gradients sum, for each latent, the rows of the samples it fired on.
    """

    def __init__(self, z: torch.Tensor):
        self.S, self.B, self.n = z.shape
        sae, self.sample, latent = z.nonzero(as_tuple=True)
        self.sae, self.latent = sae, latent
        self.values = z[sae, self.sample, latent]
        self.row = sae * self.n + latent  # row of the flattened (S'·n) × d weights
        self.bag = sae * self.B + self.sample  # row of the flattened (S'·B) × d batch
        self.by_sample = _offsets(self.bag, self.S * self.B)  # nonzero() lists entries bag by bag
        self.order = torch.argsort(self.row, stable=True)
        self.by_latent = _offsets(self.row, self.S * self.n)

    def decode(self, W_dec: torch.Tensor) -> torch.Tensor:
        flat = W_dec.reshape(self.S * self.n, -1)
        out = F.embedding_bag(self.row, flat, self.by_sample, mode="sum", per_sample_weights=self.values)
        return out.view(self.S, self.B, -1)

    def _per_latent(self, rows: torch.Tensor, row_index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ over the non-zero entries of latent l of weights · rows[row_index], as an (S'·n) × d matrix."""
        return F.embedding_bag(row_index[self.order], rows, self.by_latent, mode="sum",
                               per_sample_weights=weights[self.order])

    def gradients(self, xs, grad_y, W_dec, grad_l1, W_enc_grad, W_dec_grad, b_enc_grad) -> None:
        d = grad_y.shape[-1]
        W_dec_grad.copy_(self._per_latent(grad_y.reshape(-1, d), self.bag, self.values).view_as(W_dec_grad))
        if len(self.row) * 256 < self.S * self.B * self.n:  # so few that gathering beats a product
            grad_z = (grad_y.reshape(-1, d)[self.bag] * W_dec.reshape(-1, d)[self.row]).sum(dim=1)
        else:
            grad_z = torch.bmm(grad_y, W_dec.transpose(1, 2))[self.sae, self.sample, self.latent]
        grad_pre = grad_z + grad_l1[self.sae]
        W_enc_t = self._per_latent(xs, self.sample, grad_pre).view(self.S, self.n, d)
        W_enc_grad.copy_(W_enc_t.transpose(1, 2))
        b_enc_grad.zero_().view(-1).index_add_(0, self.row, grad_pre)


def _offsets(sorted_index: torch.Tensor, num_bags: int) -> torch.Tensor:
    """Start of each bag in an index sorted by bag (empty bags included)."""
    counts = torch.bincount(sorted_index, minlength=num_bags)
    return counts.cumsum(0) - counts


@torch.no_grad()
def zero_vanishing_moments(optimizer: torch.optim.Adam, below: float = 1e-30) -> None:
    """Set Adam moments smaller than `below` to exactly zero.

    A latent that stops firing gets zero gradients, and its first moment decays by 0.9 a step into
    denormal floats within ~30 epochs; denormals make the CPU's Adam several times slower (flushing them
    with torch.set_flush_denormal does not reach PyTorch's worker threads). A moment under 1e-30 moves a
    weight by less than 1e-22 · lr, so zeroing it once an epoch changes nothing measurable.
    """
    for state in optimizer.state.values():
        for name in ("exp_avg", "exp_avg_sq"):
            if name in state:
                state[name].masked_fill_(state[name].abs() < below, 0.0)


def train_relu_saes(
    sae: ReluSAE,
    data: torch.Tensor,
    l1_coefs: Sequence[float],
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    l1_reduction: L1Reduction = "mean",
    progress=None,
    sparse_l0: float | None = None,
    rows: torch.Tensor | None = None,
    dictionary: str = "trained",
    cone: float = D.DEFAULT_CONE,
) -> torch.Tensor:
    """Train SAE i of the stack with sparsity coefficient `l1_coefs[i]` on the rows of `data`
    (only those indexed by `rows`, if given: minibatches are gathered from `data` without a copy of it).

    Adam's update is elementwise, so one Adam over the stacked parameters is exactly one Adam per SAE.
    `sparse_l0`: mean L0 at or below which an SAE takes the sparse path; by default num_latents / 64 on
    the CPU and 0 (never) on a GPU, where the dense products are cheap. Returns each SAE's loss averaged
    over the last epoch. `progress` (a tqdm bar) advances by one per SAE-epoch. `dictionary`: trained, or a
    random dictionary kept frozen (or within a cone of `cone`) while the rest trains (`randsae.sae.dictionaries`;
    drawn from `seed`, the same for every SAE of the stack).
    """
    if len(l1_coefs) != sae.num_saes:
        raise ValueError(f"got {len(l1_coefs)} L1 coefficients for a stack of {sae.num_saes} SAEs.")
    if list(l1_coefs) != sorted(l1_coefs):
        raise ValueError("L1 coefficients of a stack must be in ascending order.")
    if data.ndim != 2 or data.shape[1] != sae.num_inputs:
        raise BadInput(f"data must have shape (N, {sae.num_inputs}), not {tuple(data.shape)}.")
    if not torch.isfinite(data).all():
        raise BadInput("data contains NaN or infinite values.")
    device = sae.W_enc.device
    if device.type == "cpu":
        cpu.keep_freed_memory()
    rows = torch.arange(len(data), device=device) if rows is None else rows.to(device)
    if sparse_l0 is None:
        sparse_l0 = sae.num_latents / 64 if device.type == "cpu" else 0.0
    data = data.to(device)
    D.check_dictionary(dictionary, cone)
    initial = relu_dictionary(sae, dictionary, seed, data[rows]) if dictionary != "trained" else None
    unit = D.unit_decoder(dictionary)
    coefs = torch.tensor(list(l1_coefs), dtype=data.dtype, device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    order_gen = generator(seed, "minibatch-order", device=device)
    epoch_loss = torch.zeros(sae.num_saes, device=device)
    for _ in range(epochs):
        check_terminated()
        epoch_loss.zero_()
        order = rows[torch.randperm(len(rows), generator=order_gen, device=device)]
        for start in range(0, len(order), batch_size):
            x = data[order[start:start + batch_size]]
            if unit:
                sae.normalize_decoder()
            scale = l1_scale(l1_reduction, sae.num_latents, len(x))
            mse, l1 = relu_sae_step_gradients(sae, x, coefs, scale, sparse_l0)
            if D.decoder_frozen(dictionary):
                sae.W_dec.grad = None  # Adam leaves a parameter without a gradient as it is
            if D.encoder_frozen(dictionary):
                sae.W_enc.grad = None
            optimizer.step()
            if initial is not None:
                sae.normalize_decoder()
                D.project_to_cone(sae.W_dec.data, initial, cone)
            epoch_loss += (mse + coefs * l1) * len(x)
        epoch_loss /= len(rows)
        zero_vanishing_moments(optimizer)
        if progress is not None:
            progress.update(sae.num_saes)
    if unit:
        sae.normalize_decoder()
    return epoch_loss.cpu()


@torch.no_grad()
def relu_dictionary(sae: ReluSAE, dictionary: str, seed: int, data: torch.Tensor) -> torch.Tensor | None:
    """Draw the random directions of a stack's frozen (or cone-held) part, the same for each SAE: decoder rows,
    or encoder columns (unit, uniform on the sphere; the decoder's with the covariance of the SAE's inputs, as
    it sees them after standardisation, for `frozen-decoder-cov`). Returns a soft-frozen decoder's initial
    directions (S × n × d), else None."""
    covariance = None
    if D.needs_data(dictionary):
        mean, std = sae.standardization(data)
        xs = ((data - mean) / std).double()
        covariance = D.covariance(xs.sum(0), xs.T @ xs, len(xs))
    directions = D.draw(dictionary, sae.num_latents, sae.num_inputs, seed, covariance).to(sae.W_dec.device)
    if D.encoder_frozen(dictionary):
        sae.W_enc.copy_(directions.T.expand_as(sae.W_enc))
        return None
    sae.W_dec.copy_(directions.expand_as(sae.W_dec))
    return sae.W_dec.detach().clone() if dictionary == "soft-frozen-decoder" else None
