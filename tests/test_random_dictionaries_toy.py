"""Random dictionaries on toy data: the independent-features source, the recovery metric, and the toy grid
over dictionaries with ReLU stacks and TopK SAEs."""

import pytest
import torch

from randsae.data import independent
from randsae.errors import BadInput
from randsae.experiments.sweep import read_results
from randsae.experiments.toy import ToyConfig, run_toy
from randsae.metrics import recovery
from randsae.sae.relu import ReluSAE
from randsae.training.toy import train_relu_saes


@pytest.mark.parametrize("spread", [1.0, 100.0])
def test_the_independent_source_has_unit_features_and_the_asked_mean_activity(spread):
    data = independent.generate(20_000, 100, 3200, 20.0, spread=spread, seed=4)
    assert data.features.shape == (100, 3200) and data.samples.shape == (20_000, 100)
    assert torch.allclose(data.features.norm(dim=0), torch.ones(3200), atol=1e-5)
    active = (data.coefficients > 0).sum(1).float().mean().item()
    assert active == pytest.approx(20.0, rel=0.03)  # F · p
    assert torch.allclose(data.samples, data.coefficients @ data.features.T, atol=1e-4)  # no noise
    p = independent.probabilities(3200, 20.0, spread, seed=4)
    assert p.mean().item() == pytest.approx(20 / 3200, rel=1e-5)
    assert (p.max() / p.min()).item() == pytest.approx(spread, rel=0.05 if spread > 1 else 1e-6)
    cosines = (data.features.T @ data.features).fill_diagonal_(0)
    assert cosines.abs().max() < 0.6  # spread over the sphere: no two features near each other


def test_the_independent_source_refuses_what_cannot_be():
    with pytest.raises(BadInput, match="puts a probability above 1"):
        independent.generate(10, 4, 10, 5.0, spread=1e6)
    with pytest.raises(BadInput, match="probability spread must be at least 1"):
        independent.generate(10, 4, 10, 2.0, spread=0.5)


def test_recovery_counts_the_features_a_hand_built_dictionary_matches():
    features = torch.eye(4)  # d × n_s: four features, one per axis
    directions = torch.tensor([[1.0, 0.0, 0.0, 0.0],  # feature 0 exactly
                               [0.0, 0.9, 0.1, 0.0],  # feature 1 at cosine 0.994
                               [0.0, 0.0, 0.6, 0.8],  # features 2 and 3 at 0.6 and 0.8: not above 0.8
                               [-1.0, 0.0, 0.0, 0.0]])
    assert recovery(features, directions, 0.8) == (2, 0.5)
    assert recovery(features, directions, 0.5) == (4, 1.0)
    assert recovery(features, directions, 0.999) == (1, 0.25)


def test_a_relu_stack_with_a_frozen_decoder_keeps_it_bit_for_bit():
    data = independent.generate(2000, 16, 64, 3.0, seed=1).samples
    sae = ReluSAE(16, 64, num_saes=2, seed=2)
    train_relu_saes(sae, data, [0.01, 0.1], epochs=1, batch_size=256, dictionary="frozen-decoder")
    frozen = sae.W_dec.detach().clone()
    encoder = sae.W_enc.detach().clone()
    train_relu_saes(sae, data, [0.01, 0.1], epochs=2, batch_size=256, dictionary="frozen-decoder")
    assert torch.equal(sae.W_dec, frozen) and not torch.equal(sae.W_enc, encoder)


def test_the_toy_grid_over_dictionaries_with_topk_saes(tmp_path):
    """Every dictionary an arm of the same grid, TopK SAEs with k given, recovery measured on raw data."""
    dictionaries = ["trained", "frozen-decoder", "soft-frozen-decoder", "frozen-encoder", "frozen-decoder-cov"]
    config = ToyConfig(data=["independent"], transform=["none"], latents=[128], seeds=1, epochs=20,
                       num_samples=3000, num_inputs=16, num_features=64, avg_active_features=3.0, k=3,
                       dictionaries=dictionaries, lr=1e-2)
    rows = {r.dictionary: r for r in run_toy(config, tmp_path, progress=False)}
    assert set(rows) == set(dictionaries) and all(r.k == 3 and r.l1_coef == 0 for r in rows.values())
    assert all(r.recovered is not None and 0 <= r.recovered_fraction <= 1 for r in rows.values())
    # the sanity check's point: a frozen random decoder explains much of the variance and recovers no feature
    assert rows["trained"].recovered_fraction > 0.8 and rows["frozen-decoder"].recovered_fraction < 0.1
    assert rows["frozen-decoder"].explained_variance > 0.4
    assert rows["soft-frozen-decoder"].recovered_fraction > rows["frozen-decoder"].recovered_fraction
    assert all(r.l0 == pytest.approx(3.0, abs=0.01) for r in rows.values())
    assert {r.dictionary: r for r in read_results(tmp_path / "results.csv")} == rows  # read back as written
    assert run_toy(config, tmp_path, progress=False) and \
        (tmp_path / "results.csv").read_text().count("\n") == len(dictionaries) + 1  # resumed: nothing retrained
