"""Random dictionaries: the frozen part of an SAE stays bit for bit what it was drawn as, a soft-frozen
decoder stays inside its cone after every step, and the random directions are what they claim to be."""

import math

import pytest
import torch
from test_topk import sparse_data

from randsae.errors import BadInput
from randsae.sae import TopKSAE
from randsae.sae import dictionaries as D
from randsae.training.trainer import TopKTrainConfig, TopKTrainer


def trainer(dictionary: str, cone: float = 0.8, seed: int = 1) -> TopKTrainer:
    sae = TopKSAE(32, 256, k=3, seed=seed)
    return TopKTrainer(sae, TopKTrainConfig(k=3, batch_size=256, lr=3e-3, warmup_steps=5, dictionary=dictionary,
                                            dictionary_cone=cone))


def batches(steps: int = 30):
    data = sparse_data(256 * steps, seed=3)
    return data.split(256)


@pytest.mark.parametrize("dictionary,frozen", [("frozen-decoder", "W_dec"), ("frozen-encoder", "W_enc"),
                                               ("frozen-decoder-cov", "W_dec")])
def test_the_frozen_part_is_bit_identical_before_and_after_training(dictionary, frozen):
    t = trainer(dictionary)
    steps = batches()
    t.step(steps[0])  # the covariance dictionary is drawn from the first batch
    before = {name: p.detach().clone() for name, p in t.sae.named_parameters()}
    fvus = [t.step(x) for x in steps[1:]]
    after = dict(t.sae.named_parameters())
    assert torch.equal(after[frozen], before[frozen])
    trained = [name for name in before if name != frozen]
    assert all(not torch.equal(after[name], before[name]) for name in trained), trained  # the rest learned
    assert fvus[-1] < fvus[0]


def test_the_frozen_decoder_is_uniform_on_the_sphere_and_differs_from_the_trained_init():
    t = trainer("frozen-decoder")
    rows = t.sae.W_dec.detach()
    assert torch.allclose(rows.norm(dim=1), torch.ones(256), atol=1e-5)
    assert abs(rows.mean().item()) < 0.01  # centred: no preferred direction
    trained = TopKSAE(32, 256, k=3, seed=1).W_dec.detach()
    assert not torch.equal(rows, trained)
    again = trainer("frozen-decoder").sae.W_dec.detach()
    assert torch.equal(rows, again)  # seeded


def test_the_covariance_dictionary_follows_the_activations():
    """Drawn with the first batch's covariance, the directions lean where the data spreads."""
    t = trainer("frozen-decoder-cov")
    x = torch.randn(512, 32) * torch.cat([torch.full((4,), 10.0), torch.full((28,), 0.1)])
    t.step(x[:256])
    rows = t.sae.W_dec.detach()
    assert torch.allclose(rows.norm(dim=1), torch.ones(256), atol=1e-5)
    assert rows[:, :4].square().sum(1).mean() > 0.9  # nearly all their length in the 4 wide dimensions


@pytest.mark.parametrize("cone", [0.8, 0.95])
def test_a_soft_frozen_decoder_stays_in_its_cone_after_every_step(cone):
    t = trainer("soft-frozen-decoder", cone=cone)
    initial = t.sae.W_dec.detach().clone()
    moved = 0.0
    for x in batches(40):
        t.step(x)
        assert D.min_cosine(t.sae.W_dec.detach(), initial) >= cone - 1e-6
        assert torch.allclose(t.sae.W_dec.detach().norm(dim=1), torch.ones(256), atol=1e-5)
        moved = max(moved, 1 - D.min_cosine(t.sae.W_dec.detach(), initial))
    assert moved > 0.02  # it did move: the cone held something back (at 0.95 it reaches the edge)


def test_the_cone_projection_keeps_what_is_inside_and_moves_what_is_outside_to_the_edge():
    initial = torch.eye(3)
    rows = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.2]]),
                                         dim=1)
    inside = rows[0].clone()
    D.project_to_cone(rows, initial, 0.8)
    assert torch.equal(rows[0], inside)
    cosines = (rows * initial).sum(1)
    assert cosines[1] == pytest.approx(0.8, abs=1e-6) and cosines[2] == pytest.approx(0.8, abs=1e-6)
    assert torch.allclose(rows.norm(dim=1), torch.ones(3))
    assert rows[2, 2] > 0 and rows[2, 0] == 0  # moved in the plane of the row and its initial direction


def test_unknown_dictionaries_and_cones_are_refused():
    with pytest.raises(BadInput, match="unknown dictionary 'frozen'; choose from trained, frozen-decoder"):
        TopKTrainConfig(dictionary="frozen")
    with pytest.raises(BadInput, match="cone .* must lie in"):
        TopKTrainConfig(dictionary="soft-frozen-decoder", dictionary_cone=1.5)
    assert math.isclose(TopKTrainConfig().dictionary_cone, 0.8)
