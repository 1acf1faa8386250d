import math

import pytest
import torch

from randsae import metrics


def test_reconstruction_metrics():
    x = torch.randn(500, 10)
    assert metrics.mse(x, x) == 0 and metrics.fvu(x, x) == 0 and metrics.explained_variance(x, x) == 1
    mean_only = x.mean().expand_as(x)
    assert metrics.fvu(x, mean_only) == pytest.approx((500 * 10 - 1) / (500 * 10), rel=1e-4)
    assert metrics.mse(x, x + 2) == pytest.approx(4)


def test_sparsity_of_known_vectors():
    n = 16
    one_hot = torch.zeros(4, n)
    one_hot[:, 3] = 2.0
    flat = torch.ones(4, n)
    assert metrics.l0(one_hot) == 1 and metrics.l0(flat) == n
    assert metrics.hoyer(one_hot) == pytest.approx(1) and metrics.hoyer(flat) == pytest.approx(0, abs=1e-6)
    assert metrics.l1(flat) == n and metrics.l2(flat) == pytest.approx(4)
    assert metrics.l1_over_sqrt_l2(flat) == pytest.approx(n / 2)
    assert metrics.dead_fraction(one_hot) == pytest.approx((n - 1) / n)


def test_all_zero_latents_count_as_sparsest():
    z = torch.zeros(5, 8)
    assert metrics.hoyer(z) == 1 and metrics.l1_over_sqrt_l2(z) == 0 and metrics.dead_fraction(z) == 1
    assert all(math.isfinite(v) for v in (metrics.hoyer(z), metrics.l1_over_sqrt_l2(z)))


def test_per_sample_then_averaged():
    z = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, 1]])
    assert metrics.hoyer(z) == pytest.approx((1 + 0) / 2, abs=1e-6)
    assert metrics.l0(z) == 2.5


def test_mmcs():
    features = torch.nn.functional.normalize(torch.randn(8, 5), dim=0)
    assert metrics.mmcs(features, features.T * 3) == pytest.approx(1)
    extra = torch.cat([features.T, torch.randn(7, 8)])
    assert metrics.mmcs(features, extra) == pytest.approx(1)
    assert metrics.mmcs(features, -features.T) < 0.9
    with pytest.raises(ValueError):
        metrics.mmcs(features, torch.randn(4, 7))


def test_sae_metrics_leaves_mmcs_empty_without_ground_truth():
    x, z = torch.randn(20, 4), torch.relu(torch.randn(20, 6))
    out = metrics.sae_metrics(x, x, z)
    assert out["mmcs"] is None and set(out) == set(metrics.METRIC_NAMES)
