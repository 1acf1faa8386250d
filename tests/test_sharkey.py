import pytest
import torch

from randsae.data import sharkey


def active(data: sharkey.SharkeyData) -> torch.Tensor:
    return (data.coefficients != 0).float()


def test_shapes_units_and_samples_are_coefficients_times_features():
    d = sharkey.generate(500, num_inputs=32, num_features=64, seed=3)
    assert d.samples.shape == (500, 32)
    assert d.features.shape == (32, 64)
    assert d.coefficients.shape == (500, 64)
    torch.testing.assert_close(d.features.norm(dim=0), torch.ones(64))
    torch.testing.assert_close(d.samples, d.coefficients @ d.features.T)
    assert d.coefficients.min() >= 0 and d.coefficients.max() < 1


def test_same_seed_same_numbers_other_seed_other_numbers():
    a, b, c = (sharkey.generate(300, 16, 32, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.samples, b.samples) and torch.equal(a.features, b.features)
    assert not torch.equal(a.samples, c.samples)


def test_paper_statistics():
    d = sharkey.generate(20_000, seed=0)
    counts = active(d).sum(dim=1)
    assert abs(counts.mean().item() - 4.97) < 0.1
    rates = active(d).mean(dim=0)
    ratio = rates[0] / rates[1:].mean()
    assert 1.9 < ratio < 2.6, ratio  # p_0 = 1 under the power decay
    magnitudes = d.coefficients[d.coefficients != 0]
    assert abs(magnitudes.mean().item() - 0.5) < 0.02  # U[0, 1) magnitudes


def test_same_distribution_as_figure_21_loop():
    # Same seed: same features and Σ; compare what the draws produce.
    n = 4000
    fast = sharkey.generate(n, seed=11)
    loop = sharkey.generate_reference(n, seed=11)
    assert torch.equal(fast.features, loop.features)
    fast_counts, loop_counts = active(fast).sum(1), active(loop).sum(1)
    assert abs(fast_counts.mean() - loop_counts.mean()) < 0.15
    # count distributions: total variation distance between the histograms
    bins = torch.arange(0, 16)
    h_fast = torch.stack([(fast_counts.clamp(max=15) == b).float().mean() for b in bins])
    h_loop = torch.stack([(loop_counts.clamp(max=15) == b).float().mean() for b in bins])
    assert 0.5 * (h_fast - h_loop).abs().sum() < 0.05
    # per-feature firing rates, pooled into index bands of 64 features
    band_fast = active(fast).mean(0).view(8, 64).mean(1)
    band_loop = active(loop).mean(0).view(8, 64).mean(1)
    torch.testing.assert_close(band_fast, band_loop, rtol=0.15, atol=5e-4)
    assert abs(active(fast)[:, 0].mean() - active(loop)[:, 0].mean()) < 0.01


def test_product_decay_is_a_different_distribution():
    power = active(sharkey.generate(5000, seed=1)).mean(0)
    product = active(sharkey.generate(5000, seed=1, decay="product")).mean(0)
    assert abs(product.sum() - 5) < 0.3
    assert product[:16].mean() > product[-16:].mean()  # still decays with the index
    assert not torch.allclose(power, product)


@pytest.mark.parametrize("kwargs", [
    {"num_samples": 0}, {"num_samples": 10, "num_features": -1}, {"num_samples": 10, "lambda_decay": 0},
    {"num_samples": 10, "avg_active_features": 0}, {"num_samples": 10, "decay": "linear"},
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        sharkey.generate(**kwargs)
