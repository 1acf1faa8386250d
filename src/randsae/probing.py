"""Judge-free measures of what an SAE's latents carry, as SAEBench defines them (docs/choices.md "Probing and
absorption"): k-sparse probing (Gurnee et al. 2023; Karvonen et al. 2025) and first-letter absorption (Chanin et
al. 2024).

k-sparse probing, per binary task: a balanced training set (as many negatives drawn as there are positives), the
k latents with the largest |mean difference| between its positives and negatives, a logistic regression on
those k (scikit-learn's, L2, C = 1), its accuracy on a balanced held-out set. The same regression on every
dimension of the input (the ceiling; standardised), and what the token alone answers (each token id's majority
label: the limit of a regression on one-hot ids).

Absorption, per first letter: the ground-truth probe is one multinomial regression over the words' first letters
on every raw input dimension (`randsae.experiments.lm_probe.letter_probe`); the letter's
main latents are the first k of the latents ranked by mean difference while each added latent raises the
held-out F1 by 0.03 or more; on each held-out word the probe calls right, the share of the probe's projection
that the main latents miss and up to 3 other latents aligned with the probe (cosine ≥ 0.1) make up (the
absorption fraction), and whether the main latents are silent and one other latent carries ≥ 40% of it (full
absorption)."""

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

# SAEBench's thresholds (evals/absorption/feature_absorption.py)
F1_JUMP = 0.03
FULL_ABSORPTION_COSINE = 0.025
FRACTION_COSINE = 0.1
PROJECTION_SHARE = 0.4
MAX_ABSORBING = 3
MAX_MAIN = 10
MIN_PROBE_F1 = 0.6
EPS = 1e-8


class Features(Protocol):
    """What a probe reads: rows of latents (sparse codes or dense vectors)."""

    num_latents: int

    def mean_difference(self, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray: ...

    def columns(self, rows: np.ndarray, latents: np.ndarray) -> np.ndarray: ...


@dataclass
class SparseCodes:
    """An SAE's codes of many tokens as `encode` gives them: values and latent indices (rows × j, zeros after a
    row's active latents)."""
    values: torch.Tensor
    indices: torch.Tensor
    num_latents: int

    def sums(self, rows: np.ndarray) -> np.ndarray:
        # numpy, not torch: torch's threads stall for milliseconds a call after scikit-learn's OpenMP has run
        out = np.zeros(self.num_latents)
        np.add.at(out, self.indices.numpy()[rows].reshape(-1), self.values.numpy()[rows].reshape(-1))
        return out

    def mean_difference(self, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        return self.sums(positives) / len(positives) - self.sums(negatives) / len(negatives)

    def columns(self, rows: np.ndarray, latents: np.ndarray) -> np.ndarray:
        column = np.full(self.num_latents, -1)
        column[latents] = np.arange(len(latents))
        where = column[self.indices.numpy()[rows]]  # each active latent's column, −1 for the others
        kept = where >= 0
        out = np.zeros((len(rows), len(latents)), dtype=np.float32)
        np.add.at(out, (np.nonzero(kept)[0], where[kept]), self.values.numpy()[rows][kept])
        return out


@dataclass
class DenseFeatures:
    """Rows of dense features (mean-pooled codes of whole texts, or an input's dimensions)."""
    matrix: np.ndarray

    @property
    def num_latents(self) -> int:
        return self.matrix.shape[1]

    def mean_difference(self, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        return self.matrix[positives].mean(0) - self.matrix[negatives].mean(0)

    def columns(self, rows: np.ndarray, latents: np.ndarray) -> np.ndarray:
        return self.matrix[np.ix_(rows, latents)]


def balanced(labels: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(positive rows, negative rows) of `labels` (1 positive, 0 negative, −1 left out): at most cap/2 positives,
    and as many negatives drawn without replacement (SAEBench's balanced sets)."""
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    count = min(len(positives), len(negatives), cap // 2)
    return (np.sort(rng.choice(positives, count, replace=False)),
            np.sort(rng.choice(negatives, count, replace=False)))


def logistic(x: np.ndarray, y: np.ndarray, balanced_weights: bool = False):
    """scikit-learn's logistic regression as SAEBench fits it (L2, C = 1, up to 1,000 iterations)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=1.0, max_iter=1000,
                                  class_weight="balanced" if balanced_weights else None).fit(x, y)


@dataclass
class Split:
    """One task's balanced rows: training (positives, negatives) and held-out (positives, negatives)."""
    train_pos: np.ndarray
    train_neg: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([self.train_pos, self.train_neg]), _labels(self.train_pos, self.train_neg)

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([self.test_pos, self.test_neg]), _labels(self.test_pos, self.test_neg)


def _labels(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones(len(positives), dtype=np.int64), np.zeros(len(negatives), dtype=np.int64)])


def split_of(train_labels: np.ndarray, test_labels: np.ndarray, train_cap: int, test_cap: int,
             seed: int) -> Split:
    rng = np.random.default_rng(seed)
    return Split(*balanced(train_labels, train_cap, rng), *balanced(test_labels, test_cap, rng))


def ranked_latents(train: Features, split: Split, signed: bool = False) -> np.ndarray:
    """The latents by decreasing |mean difference| between the task's training positives and negatives (by the
    signed difference: those that fire for the positives)."""
    difference = train.mean_difference(split.train_pos, split.train_neg)
    return np.argsort(-(difference if signed else np.abs(difference)), kind="stable")


def sparse_accuracies(train: Features, test: Features, split: Split, ks: list[int]) -> dict[int, float]:
    """Held-out accuracy of the probe on each task's top-k latents, for each k."""
    order = ranked_latents(train, split)
    (train_rows, y_train), (test_rows, y_test) = split.train, split.test
    out = {}
    for k in ks:
        chosen = order[:min(k, train.num_latents)]
        probe = logistic(train.columns(train_rows, chosen), y_train)
        out[k] = float((probe.predict(test.columns(test_rows, chosen)) == y_test).mean())
    return out


@dataclass
class LinearProbe:
    """A logistic regression's weights (a row per class; one row for two classes) and biases, on the raw input."""
    weight: np.ndarray
    bias: np.ndarray

    def decision(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision(x)
        return (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(1)


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int = 2, standardise: bool = False,
               max_iter: int = 500) -> LinearProbe:
    """The logistic regression scikit-learn fits (the summed log loss + ½‖w‖², C = 1; multinomial for more than
    two classes), solved by full-batch L-BFGS in torch: on hundreds of dimensions a tenth of scikit-learn's time.
    `standardise`: fitted on each dimension's z-score (the probe returned reads the raw input)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small problems; and torch's threads stall beside scikit-learn's OpenMP
    try:
        data = torch.from_numpy(np.asarray(x, dtype=np.float32))
        mean = data.mean(0) if standardise else torch.zeros(data.shape[1])
        scale = data.std(0) + 1e-8 if standardise else torch.ones(data.shape[1])
        data = (data - mean) / scale
        target = torch.from_numpy(np.asarray(y, dtype=np.int64))
        rows = 1 if classes == 2 else classes
        weight = torch.zeros(rows, data.shape[1], requires_grad=True)
        bias = torch.zeros(rows, requires_grad=True)
        solver = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                   tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            solver.zero_grad()
            logits = data @ weight.T + bias
            if rows == 1:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.float(),
                                                                            reduction="sum")
            else:
                loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
            loss = loss + 0.5 * (weight * weight).sum()
            loss.backward()
            return loss

        solver.step(closure)
        w = (weight.detach() / scale).double().numpy()
        b = (bias.detach().double() - torch.from_numpy(w) @ mean.double()).numpy()
        return LinearProbe(w, b)
    finally:
        torch.set_num_threads(previous)


def dense_probe(train_x, test_x, split: Split, standardise: bool = False):
    """(the probe on every dimension, its held-out accuracy): the ceiling (on the input, `fit_linear`; each
    dimension standardised on the training rows with `standardise`) or, for texts, the token-only reference (on
    their bags of tokens, sparse)."""
    (train_rows, y_train), (test_rows, y_test) = split.train, split.test
    if isinstance(train_x, np.ndarray):
        probe = fit_linear(train_x[train_rows], y_train, standardise=standardise)
    else:  # sparse rows (bags of tokens): scikit-learn's own
        probe = logistic(train_x[train_rows], y_train)
    return probe, float((probe.predict(test_x[test_rows]) == y_test).mean())


def token_lookup(train_ids: np.ndarray, test_ids: np.ndarray, split: Split) -> float:
    """Held-out accuracy of the token-only probe: each token id's majority label among the training rows (ties and
    ids never seen: the training majority, negative when balanced) — the decision rule of a logistic regression on
    one-hot token ids as its regularisation vanishes, without its minutes of fitting."""
    (train_rows, y_train), (test_rows, y_test) = split.train, split.test
    ids = train_ids[train_rows]
    vocabulary, column = np.unique(ids, return_inverse=True)
    positives = np.bincount(column, weights=y_train, minlength=len(vocabulary))
    totals = np.bincount(column, minlength=len(vocabulary))
    default = int(2 * y_train.sum() > len(y_train))
    called = np.where(2 * positives > totals, 1, np.where(2 * positives < totals, 0, default))
    where = np.searchsorted(vocabulary, test_ids[test_rows])
    seen = (where < len(vocabulary)) & (vocabulary[np.minimum(where, len(vocabulary) - 1)] == test_ids[test_rows])
    predicted = np.where(seen, called[np.minimum(where, len(vocabulary) - 1)], default)
    return float((predicted == y_test).mean())


def f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = float((predicted & truth).sum())
    return 2 * tp / max(float(predicted.sum() + truth.sum()), 1.0)


def main_latents(train: Features, test: Features, split: Split, max_k: int = MAX_MAIN) -> list[int]:
    """The latents that carry a letter (SAEBench's feature split): the first k of those ranked by (signed) mean
    difference, k grown while each step raises the held-out F1 by F1_JUMP or more."""
    order = ranked_latents(train, split, signed=True)
    (train_rows, y_train), (test_rows, y_test) = split.train, split.test
    best, chosen = -math.inf, order[:1]
    for k in range(1, min(max_k, train.num_latents) + 1):
        probe = logistic(train.columns(train_rows, order[:k]), y_train, balanced_weights=True)
        score = f1(probe.predict(test.columns(test_rows, order[:k])) == 1, y_test == 1)
        if score <= best + F1_JUMP:
            break
        best, chosen = score, order[:k]
    return [int(i) for i in chosen]


@dataclass
class Absorption:
    """One letter's absorption on the held-out words the probe calls right."""
    fraction: float  # mean absorption fraction
    full: float  # share of those words fully absorbed
    words: int  # how many
    main: list[int]  # the letter's main latents


def absorption(x: np.ndarray, codes: SparseCodes, decoder: np.ndarray, direction: np.ndarray,
               main: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(absorption fraction, full absorption) of each row of `x` (words × d, the input) whose codes are `codes`
    (every row), for the probe `direction` and the letter's `main` latents (SAEBench's
    FeatureAbsorptionCalculator, vectorised)."""
    unit = direction / max(float(np.linalg.norm(direction)), EPS)
    cosines = decoder @ unit / np.maximum(np.linalg.norm(decoder, axis=1), EPS)  # each latent's against the probe
    indices, values = codes.indices.numpy(), codes.values.double().numpy()
    values = np.where(values > EPS, values, 0.0)  # a row's padding after its active latents
    projections = values * cosines[indices]  # each active latent's part of the probe's projection
    total = x @ unit  # the probe's projection of the input
    is_main = np.isin(indices, np.asarray(main, dtype=np.int64)) & (values > 0)
    main_part = np.where(is_main, projections, 0.0).sum(1)
    candidates = np.where(~is_main & (cosines[indices] >= FRACTION_COSINE) & (projections > 0), projections, 0.0)
    top = -np.sort(-candidates, axis=1)[:, :MAX_ABSORBING].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total != 0, top / total, 0.0)
        absorbed = np.minimum(top, total - main_part)
        partial = np.clip(absorbed / (absorbed + main_part), 0.0, 1.0)
        fraction = np.where((main_part >= total) | ~(share >= PROJECTION_SHARE), 0.0,
                            np.where(main_part <= 0, 1.0, partial))
        rows = np.arange(len(x))
        strongest = np.argmax(np.where(values > 0, projections, 0.0), axis=1)  # an inactive latent projects 0
        top_cosine = np.where(values[rows, strongest] > 0, cosines[indices[rows, strongest]], 0.0)
        top_share = np.where(total > 0, np.maximum(projections[rows, strongest], 0.0) / total, 0.0)
    full = (~is_main.any(1) & (top_cosine >= FULL_ABSORPTION_COSINE) & (total >= 0)
            & (top_share >= PROJECTION_SHARE))
    return fraction, full
