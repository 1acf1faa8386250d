import numpy as np
import torch

from randsae.data import gaussian, lomax
from randsae.transforms import apply, random_mlp


def test_gaussian_control_matches_mean_and_std_and_is_seeded():
    data = torch.rand(4000, 64) * 3 + 1
    control = gaussian.matched(data, seed=2)
    assert control.shape == data.shape
    assert abs(control.mean() - data.mean()) < 0.02
    assert abs(control.std() / data.std() - 1) < 0.02
    assert torch.equal(control, gaussian.matched(data, seed=2))
    assert not torch.equal(control, gaussian.matched(data, seed=3))


def test_random_mlp_shape_defaults_and_seeding():
    mlp = random_mlp(16, seed=0)
    assert [tuple(p.shape) for p in mlp.parameters()] == [(64, 16), (64,), (16, 64), (16,)]
    assert all(not p.requires_grad for p in mlp.parameters())
    # PyTorch default init: uniform within ±1/sqrt(fan_in)
    assert mlp[0].weight.abs().max() <= 1 / 16**0.5 and mlp[2].weight.abs().max() <= 1 / 64**0.5
    assert torch.equal(mlp[0].weight, random_mlp(16, seed=0)[0].weight)
    assert not torch.equal(mlp[0].weight, random_mlp(16, seed=1)[0].weight)


def test_random_mlp_leaves_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    random_mlp(8, seed=4)
    assert torch.equal(torch.rand(3), expected)


def test_apply_in_chunks_equals_one_pass():
    mlp = random_mlp(8, seed=0)
    x = torch.randn(1000, 8)
    torch.testing.assert_close(apply(mlp, x, chunk=64), mlp(x))


def test_lomax_demo_one_active_feature_lies_on_three_lines():
    demo = lomax.generate(3000, seed=0)
    assert demo.inputs.shape == demo.outputs.shape == (3000, 2)
    # each input is a multiple of one of the three projected feature directions
    directions = torch.nn.functional.normalize(demo.directions, dim=0)
    cosines = (torch.nn.functional.normalize(demo.inputs, dim=1) @ directions).abs().max(dim=1).values
    assert (cosines > 1 - 1e-4).all()
    # heavy tails: Lomax(1, 1) has median 1 and no finite mean
    norms = demo.inputs.norm(dim=1).numpy()
    assert np.quantile(norms, 0.99) > 20 * np.median(norms)
    assert not torch.allclose(demo.outputs, demo.inputs)
