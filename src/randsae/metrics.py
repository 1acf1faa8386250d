"""Every metric, as a plain function of tensors (docs/paper.md §1.4).

Inputs `x` and reconstructions `x_hat` are N × d; latents `z` are N × n. Per-sample quantities are
averaged over samples.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over all entries."""
    return (x_hat - x).square().mean().item()


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: MSE over the variance of all entries of `x` (the authors' choice)."""
    variance = x.var().item() if x.numel() > 1 else 0.0
    return mse(x, x_hat) / variance if variance > 0 else float("nan")  # nothing varies: nothing to explain


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return 1.0 - fvu(x, x_hat)


def l0(z: torch.Tensor) -> float:
    """Mean number of non-zero latents per sample."""
    return (z != 0).sum(dim=1).float().mean().item()


def _l1(z: torch.Tensor) -> torch.Tensor:
    return z.abs().sum(dim=1)


def _l2(z: torch.Tensor) -> torch.Tensor:
    return z.norm(dim=1)


def l1(z: torch.Tensor) -> float:
    return _l1(z).mean().item()


def l2(z: torch.Tensor) -> float:
    return _l2(z).mean().item()


def l1_over_sqrt_l2(z: torch.Tensor) -> float:
    """Mean of L1 / √L2 per sample; an all-zero latent vector counts as 0."""
    l2_norm = _l2(z)
    ratio = _l1(z) / l2_norm.sqrt().clamp_min(torch.finfo(z.dtype).tiny)
    return ratio.mean().item()


def hoyer(z: torch.Tensor) -> float:
    """Mean Hoyer sparseness (√n − L1/L2)/(√n − 1): 0 for a flat vector, 1 for one non-zero.

    An all-zero latent vector counts as 1 (as sparse as it gets, like its L0 of 0).
    """
    n = z.shape[1]
    if n < 2:
        raise ValueError("Hoyer sparseness needs at least two latents.")
    l1_norm, l2_norm = _l1(z), _l2(z)
    ratio = torch.where(l2_norm > 0, l1_norm / l2_norm.clamp_min(torch.finfo(z.dtype).tiny), 1.0)
    return ((math.sqrt(n) - ratio) / (math.sqrt(n) - 1)).mean().item()


def dead_fraction(z: torch.Tensor) -> float:
    """Fraction of latents that are zero on every sample."""
    return (~(z != 0).any(dim=0)).float().mean().item()


def mmcs(features: torch.Tensor, directions: torch.Tensor) -> float:
    """Mean max cosine similarity: each ground-truth feature's best match among the SAE's directions.

    `features` is d × n_s (a feature per column, as the generator returns them); `directions` is
    n × d (a latent's decoder direction per row).
    """
    return best_cosines(features, directions).mean().item()


def best_cosines(features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Each ground-truth feature's largest cosine with a decoder direction (`mmcs`'s shapes)."""
    if features.shape[0] != directions.shape[1]:
        raise ValueError(
            f"features ({tuple(features.shape)}) and decoder directions ({tuple(directions.shape)}) "
            "live in different dimensions.")
    f = torch.nn.functional.normalize(features, dim=0)
    d = torch.nn.functional.normalize(directions, dim=1)
    return (d @ f).max(dim=0).values


def recovery(features: torch.Tensor, directions: torch.Tensor, threshold: float = 0.8) -> tuple[int, float]:
    """How many ground-truth features some decoder direction recovers (best cosine above `threshold`), and
    their share of all features."""
    recovered = int((best_cosines(features, directions) > threshold).sum())
    return recovered, recovered / features.shape[1]


def l1_over_sqrt_l2_batch_mean(z: torch.Tensor) -> float:
    """The authors' way: mean L1 over √(mean L2), both means over the batch (collapsed samples dilute it)."""
    return (_l1(z).mean() / _l2(z).mean().sqrt().clamp_min(torch.finfo(z.dtype).tiny)).item()


def hoyer_batch_mean(z: torch.Tensor) -> float:
    """The authors' way: (√n − mean L1 / mean L2)/(√n − 1), the norms averaged over the batch first. With
    no active latent anywhere it is 1, like `hoyer`."""
    n = z.shape[1]
    if n < 2:
        raise ValueError("Hoyer sparseness needs at least two latents.")
    mean_l2 = _l2(z).mean()
    if not mean_l2 > 0:
        return 1.0
    return ((math.sqrt(n) - _l1(z).mean() / mean_l2) / (math.sqrt(n) - 1)).item()


# how Hoyer sparseness and L1/√L2 are taken over a batch: per sample then averaged (randsae's default), or
# from the batch-mean norms (the authors' code)
SPARSITY_STATS = {"per-sample": {"hoyer": hoyer, "l1_over_sqrt_l2": l1_over_sqrt_l2},
                  "batch-mean": {"hoyer": hoyer_batch_mean, "l1_over_sqrt_l2": l1_over_sqrt_l2_batch_mean}}
SPARSITY_METRICS = {"l0": l0, "l1": l1, "l2": l2, "l1_over_sqrt_l2": l1_over_sqrt_l2,
                    "hoyer": hoyer, "dead_fraction": dead_fraction}
RECONSTRUCTION_METRICS = {"mse": mse, "fvu": fvu, "explained_variance": explained_variance}
METRIC_NAMES = [*RECONSTRUCTION_METRICS, *SPARSITY_METRICS, "mmcs", "recovered", "recovered_fraction"]


def sae_metrics(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, features: torch.Tensor | None = None,
                directions: torch.Tensor | None = None,
                sparsity_stats: str = "per-sample", recovery_threshold: float = 0.8) -> dict[str, float | None]:
    """All metrics of one SAE on one split; mmcs and recovery are None where there are no ground-truth
    features. `sparsity_stats` picks how Hoyer and L1/√L2 are taken over the split (`SPARSITY_STATS`)."""
    out: dict[str, float | None] = {name: f(x, x_hat) for name, f in RECONSTRUCTION_METRICS.items()}
    out.update({name: f(z) for name, f in {**SPARSITY_METRICS, **SPARSITY_STATS[sparsity_stats]}.items()})
    out["mmcs"] = out["recovered"] = out["recovered_fraction"] = None
    if features is not None and directions is not None:
        out["mmcs"] = mmcs(features, directions)
        out["recovered"], out["recovered_fraction"] = recovery(features, directions, recovery_threshold)
    return out


class TrainingFit:
    """Running sums over a sample of the tokens an SAE was trained on, from which its fair baselines are fitted
    (docs/choices.md "Baselines fitted where the SAE was fitted"): their mean and second moments (PCA-k) and
    each token id's summed activation (the token-lookup baseline)."""

    def __init__(self, num_inputs: int):
        self.tokens = 0
        self.total = torch.zeros(num_inputs, dtype=torch.float64)
        self.gram = torch.zeros(num_inputs, num_inputs, dtype=torch.float64)
        self.ids = torch.zeros(0, dtype=torch.int64)  # sorted token ids seen
        self.id_sums = torch.zeros(0, num_inputs, dtype=torch.float64)
        self.id_counts = torch.zeros(0, dtype=torch.float64)

    def add(self, x: torch.Tensor, token_ids: torch.Tensor) -> None:
        """A batch of training tokens (tokens × d) and their ids (tokens)."""
        x64 = x.detach().double()
        self.tokens += len(x64)
        self.total += x64.sum(0).cpu()
        self.gram += (x64.T @ x64).cpu()  # on the tokens' device (a GPU's), then kept on the CPU
        x64 = x64.cpu()
        ids, inverse = torch.unique(torch.cat([self.ids, token_ids.detach().cpu().long()]), return_inverse=True)
        sums = torch.zeros(len(ids), x64.shape[1], dtype=torch.float64)
        sums.index_add_(0, inverse, torch.cat([self.id_sums, x64]))
        counts = torch.zeros(len(ids), dtype=torch.float64)
        counts.index_add_(0, inverse, torch.cat([self.id_counts, torch.ones(len(x64), dtype=torch.float64)]))
        self.ids, self.id_sums, self.id_counts = ids, sums, counts

    def fitted(self, components: int) -> "FittedBaselines":
        """PCA with `components` components and the token-lookup table, fitted on the sums so far."""
        if not self.tokens:
            raise ValueError("no training tokens were added to fit the baselines on.")
        mean = self.total / self.tokens
        covariance = self.gram / self.tokens - torch.outer(mean, mean)
        _, vectors = torch.linalg.eigh(covariance)
        basis = vectors.flip(1)[:, :max(1, min(components, len(mean)))].contiguous()
        return FittedBaselines(mean, basis, self.ids, self.id_sums / self.id_counts[:, None], self.tokens)


@dataclass
class FittedBaselines:
    """Baselines fitted on a sample of the training tokens, applied to other tokens: PCA-k (the affine rank-k
    projection x̂ = μ + B Bᵀ (x − μ), B the top-k eigenvectors of the training covariance) and the token lookup
    (x̂ = the mean training activation of x's token id; μ for an id never seen in the sample)."""
    mean: torch.Tensor  # d, float64
    basis: torch.Tensor  # d × k, float64
    ids: torch.Tensor  # sorted token ids seen in the sample
    token_means: torch.Tensor  # their mean activations (len(ids) × d), float64
    tokens: int  # the sample's size

    @property
    def components(self) -> int:
        return self.basis.shape[1]

    def pca(self, x: torch.Tensor) -> torch.Tensor:
        mean, basis = self.mean.to(x.device), self.basis.to(x.device)
        return mean + ((x.double() - mean) @ basis) @ basis.T

    def lookup(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the reconstruction of each token from its id alone, whether its id was seen in the sample)."""
        ids = token_ids.detach().cpu().long()
        if not len(self.ids):
            return self.mean.expand(len(ids), -1).clone(), torch.zeros(len(ids), dtype=torch.bool)
        where = torch.searchsorted(self.ids, ids).clamp(max=len(self.ids) - 1)
        seen = self.ids[where] == ids
        return torch.where(seen[:, None], self.token_means[where], self.mean), seen


class TokenQuality:
    """Quality metrics of one SAE over a stream of token batches (docs/paper.md §2.2), from running sums.

    FVU here is the language-model convention (the EleutherAI trainer's loss): squared error over the total
    variance Σ ‖x − mean(x)‖², the mean taken per dimension over all evaluated tokens. Beside the SAE, its
    baselines on the same tokens (docs/choices.md "Baselines fitted where the SAE was fitted"):
    - with `fitted` (fitted on a sample of the training tokens): PCA-k and the token lookup, and the share of
      tokens whose id the sample never held;
    - the bound: the best rank-k affine reconstruction of the evaluated tokens themselves (PCA fitted on them:
      the share of the top eigenvalues of their covariance), which no code fitted elsewhere can be held to;
    - the context share: the variance that each context's own mean explains (one offset per context).
    k is `pca_components`, the fitted baselines' own, or for an SAE with no fixed k (JumpReLU, Gated) its
    measured L0, rounded (at least 1) (`components`).

    The sums a bootstrap needs are kept per unit of at most CHUNK consecutive tokens of one context, each with its
    context's number, so that whole contexts can be resampled (`context_sums`)."""

    CHUNK = 16  # tokens per unit of the chunk bootstrap (neighbouring tokens are not independent)

    def __init__(self, num_inputs: int, num_latents: int, pca_components: int | None,
                 fitted: FittedBaselines | None = None):
        self.pca_components = pca_components
        self.fitted = fitted
        self.tokens = self.contexts = self.unseen = 0
        self.squared_error = self.cosine = self.l1 = self.l0 = 0.0
        self.total = torch.zeros(num_inputs, dtype=torch.float64)
        self.gram = torch.zeros(num_inputs, num_inputs, dtype=torch.float64)
        self.fired = torch.zeros(num_latents, dtype=torch.bool)
        self.chunks: list[dict[str, torch.Tensor]] = []  # per unit: the sums a bootstrap needs

    def add(self, x: torch.Tensor, x_hat: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
            token_ids: torch.Tensor | None = None, contexts: torch.Tensor | None = None) -> None:
        """A batch: inputs and reconstructions (tokens × d), kept latents' values and indices (tokens × k), and
        per token its id (for the token lookup) and its context's number within the batch (non-decreasing;
        None: each CHUNK tokens a context of their own)."""
        x64 = x.double()
        error = (x_hat.double() - x64).square().sum(-1)
        cosine = torch.nn.functional.cosine_similarity(x_hat.double(), x64, dim=-1)
        l1 = values.double().abs().sum(-1)
        self.tokens += len(x)
        self.squared_error += error.sum().item()
        self.cosine += cosine.sum().item()
        self.l1 += l1.sum().item()
        self.l0 += (values != 0).sum().item()
        self.total += x64.sum(0).cpu()
        self.gram += (x64.T @ x64).cpu()
        self.fired[indices[values != 0].cpu()] = True
        if not len(x):
            return
        position = torch.arange(len(x), device=x.device)
        if contexts is None:
            contexts = position // self.CHUNK
        contexts = contexts.to(x.device).long()
        sizes = torch.bincount(contexts)
        starts = torch.cumsum(sizes, 0) - sizes
        unit = contexts * (int(sizes.max()) // self.CHUNK + 1) + (position - starts[contexts]) // self.CHUNK
        keys, unit = torch.unique_consecutive(unit, return_inverse=True)

        def sums(per_token: torch.Tensor) -> torch.Tensor:
            shape = (len(keys), *per_token.shape[1:])
            return torch.zeros(shape, dtype=torch.float64, device=x.device).index_add_(0, unit, per_token).cpu()

        count = sums(torch.ones(len(x), dtype=torch.float64, device=x.device))
        part = {"tokens": count, "context": sums((contexts + self.contexts).double()) / count,
                "squared_error": sums(error), "cosine": sums(cosine), "l1": sums(l1),
                "squared_norm": sums(x64.square().sum(-1)), "total": sums(x64)}
        if self.fitted is not None:
            part["pca_error"] = sums((self.fitted.pca(x64) - x64).square().sum(-1))
            looked_up, seen = self.fitted.lookup(token_ids if token_ids is not None else
                                                 torch.full((len(x),), -1, dtype=torch.int64))
            part["lookup_error"] = sums((looked_up.to(x.device) - x64).square().sum(-1))
            self.unseen += int((~seen).sum())
        self.contexts += int(contexts.max()) + 1
        self.chunks.append(part)

    def chunk_sums(self) -> dict[str, torch.Tensor]:
        """Per unit of at most CHUNK consecutive evaluated tokens of one context: their count, context number,
        squared error, cosine, L1, squared norm and sum (and the fitted baselines' squared errors) — what
        `chunk_bootstrap` resamples."""
        if not self.chunks:
            raise ValueError("no tokens were evaluated.")
        return {name: torch.cat([c[name] for c in self.chunks]) for name in self.chunks[0]}

    @property
    def components(self) -> int:
        """PCA's number of components: k, the fitted baselines', or the measured L0 rounded."""
        if self.pca_components is not None:
            return self.pca_components
        if self.fitted is not None:
            return self.fitted.components
        return max(1, round(self.l0 / self.tokens)) if self.tokens else 1

    def result(self) -> dict[str, Any]:
        if not self.tokens:
            raise ValueError("no tokens were evaluated.")
        mean = self.total / self.tokens
        covariance = self.gram / self.tokens - torch.outer(mean, mean)
        eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)
        variance = covariance.diagonal().sum().item()
        fvu_value = self.squared_error / (variance * self.tokens)
        sums = self.chunk_sums()
        per_context = context_sums({k: v.numpy() for k, v in sums.items()})
        within = (per_context["squared_norm"] - (per_context["total"] ** 2).sum(-1) / per_context["tokens"]).sum()
        out = {"explained_variance": 1 - fvu_value, "fvu": fvu_value, "cosine_sim": self.cosine / self.tokens,
               "l1": self.l1 / self.tokens, "l0": self.l0 / self.tokens,
               "dead_fraction": 1 - self.fired.float().mean().item(),
               "pca_in_sample_explained_variance": eigenvalues[:self.components].sum().item() / variance,
               "context_share": 1 - float(within) / (variance * self.tokens),
               "held_out_contexts": len(per_context["tokens"])}
        if self.fitted is not None:
            total = variance * self.tokens
            out.update({"pca_explained_variance": 1 - sums["pca_error"].sum().item() / total,
                        "token_lookup_explained_variance": 1 - sums["lookup_error"].sum().item() / total,
                        "unseen_token_share": self.unseen / self.tokens, "fit_tokens": self.fitted.tokens})
        return out


def context_sums(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`TokenQuality.chunk_sums` added up per context (its "context" column), one row a context, in order —
    the units a context bootstrap resamples. Sums written before contexts were numbered stay per chunk."""
    if "context" not in sums:
        return sums
    contexts, inverse = np.unique(np.rint(sums["context"]).astype(np.int64), return_inverse=True)
    out = {}
    for name, values in sums.items():
        total = np.zeros((len(contexts), *values.shape[1:]))
        np.add.at(total, inverse, values)
        out[name] = total
    out["context"] = contexts.astype(np.float64)
    return out


def token_mass(token_ids: np.ndarray, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, summed activation of each) over positions: A_t = Σ over positions holding t
    (docs/paper.md §2.4)."""
    ids, inverse = np.unique(np.asarray(token_ids), return_inverse=True)
    return ids, np.bincount(inverse.ravel(), weights=np.asarray(activations, dtype=np.float64), minlength=len(ids))


def token_entropy(token_ids: np.ndarray, activations: np.ndarray) -> float:
    """Token-distribution entropy H = −Σ_t p_t ln p_t, p_t = A_t / Σ A, in nats (natural log, docs/paper.md §2.4).
    0 for a latent that fires on one token id, ln n when its mass is spread evenly over n; NaN with no mass."""
    _, mass = token_mass(token_ids, activations)
    total = mass.sum()
    if not total > 0:
        return float("nan")
    p = mass[mass > 0] / total
    return float(-(p * np.log(p)).sum())


# --- auto-interpretability (docs/paper.md §2.3) ---

def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, ties given their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` against 0/1 `labels` (the Mann–Whitney statistic, ties counted
    half): the chance that a random positive scores above a random negative. NaN unless both classes occur."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of the true-positive and true-negative rates when P(1) > `threshold` is read as 1."""
    predicted, labels = np.asarray(scores) > threshold, np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float((predicted[labels].mean() + (~predicted[~labels]).mean()) / 2)


def pooled_auroc(groups: Sequence[tuple[ArrayLike, ArrayLike]], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """AUROC of every (scores, labels) group pooled together, with a percentile bootstrap interval that
    resamples whole groups (the latents, the units that were sampled) with replacement. NaN with no groups."""
    point, draws = pooled_auroc_draws(groups, resamples, seed)
    return (point, *percentile_interval(draws, level))


def pooled_auroc_draws(groups: Sequence[tuple[ArrayLike, ArrayLike]], resamples: int = 1000,
                       seed: int = 0) -> tuple[float, np.ndarray]:
    """The pooled AUROC of `groups` and its bootstrap draws (whole groups resampled with replacement; draws
    where one class is missing are left out). NaN and no draws with no groups."""
    arrays = [(np.asarray(s, dtype=np.float64), np.asarray(y).astype(bool)) for s, y in groups]
    groups = [(s, y) for s, y in arrays if len(s)]
    if not groups:
        return float("nan"), np.empty(0)
    point = auroc(np.concatenate([s for s, _ in groups]), np.concatenate([y for _, y in groups]))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(groups), size=len(groups))
        values.append(auroc(np.concatenate([groups[i][0] for i in pick]),
                            np.concatenate([groups[i][1] for i in pick])))
    values = np.array(values)
    return point, values[np.isfinite(values)]


def pooled_mean_draws(groups: Sequence[ArrayLike], resamples: int = 1000,
                      seed: int = 0) -> tuple[float, np.ndarray]:
    """The mean of every value of `groups` pooled (an intruder accuracy: 1 per trial named right, 0 wrong) and
    its bootstrap draws, whole groups (latents) resampled with replacement. NaN and no draws with none."""
    groups = [a for a in (np.asarray(g, dtype=np.float64) for g in groups) if len(a)]
    if not groups:
        return float("nan"), np.empty(0)
    sums, counts = np.array([g.sum() for g in groups]), np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    return float(sums.sum() / counts.sum()), sums[picks].sum(1) / counts[picks].sum(1)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap draws; NaN with none."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def mean_draws(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap draws of the mean of `values` (finite ones, resampled with replacement); none when empty."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return np.empty(0)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)


def chunk_weights(chunks: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """How often each of `chunks` units is drawn in each of `resamples` bootstrap samples (resamples × chunks).
    The same (chunks, seed) gives the same weights: two arms measured on the same tokens are resampled
    together (a paired bootstrap)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(chunks, np.full(chunks, 1 / chunks), size=resamples).astype(np.float64)


def chunk_bootstrap(sums: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Explained variance, cosine similarity and L1 per bootstrap sample (`weights`: resamples × chunks) from
    `TokenQuality.chunk_sums`. The total variance is taken about each sample's own mean, as TokenQuality does."""
    n = weights @ sums["tokens"]
    total = weights @ sums["total"]
    variance = weights @ sums["squared_norm"] - (total ** 2).sum(-1) / n
    return {"explained_variance": 1 - (weights @ sums["squared_error"]) / variance,
            "cosine_sim": (weights @ sums["cosine"]) / n, "l1": (weights @ sums["l1"]) / n}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on mean ranks) over the pairs where both are finite."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    rx, ry = _ranks(x[keep]), _ranks(y[keep])
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(x: np.ndarray, y: np.ndarray, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """Spearman's ρ with a percentile bootstrap interval that resamples the (x, y) pairs — the latents, the
    units that were sampled — with replacement. NaN where ρ is (fewer than 3 pairs, or no spread)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = spearman(x, y)
    if not np.isfinite(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [spearman(x[pick], y[pick]) for pick in (rng.integers(0, len(x), size=len(x))
                                                      for _ in range(resamples))]
    return (point, *percentile_interval(np.array(values), level))


# --- intervals over seeds (the study's verdict) ---

def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` degrees of freedom (non-integer allowed, as Welch's
    gives), by bisection on its distribution function (Simpson's rule on the density)."""
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, not p={p}, df={df}.")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(q: float) -> float:
        x = np.linspace(0.0, q, 2001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
        h = q / 2000
        return 0.5 + h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


def welch_interval(a: np.ndarray, b: np.ndarray, level: float) -> tuple[float, float]:
    """Welch's `level` interval of mean(a) − mean(b) over independent draws (seeds). An arm with one value
    adds no spread of its own (its variance is unknown, taken as 0); with no spread at all the interval is the
    difference itself."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    parts = [x.var(ddof=1) / len(x) if len(x) > 1 else 0.0 for x in (a, b)]
    difference = float(a.mean() - b.mean())
    se2 = sum(parts)
    if se2 == 0:
        return difference, difference
    df = se2 ** 2 / sum(v ** 2 / (len(x) - 1) for v, x in zip(parts, (a, b), strict=True) if len(x) > 1)
    half = t_quantile((1 + level) / 2, df) * math.sqrt(se2)
    return difference - half, difference + half
