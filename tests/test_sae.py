import pytest
import torch

from randsae.sae.relu import ReluSAE
from randsae.training.toy import l1_scale, relu_sae_losses, relu_sae_step_gradients, train_relu_saes


def test_init_orthogonal_unit_decoder_same_for_every_sae_in_stack():
    sae = ReluSAE(16, 32, num_saes=3, seed=1)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(3, 32))
    square = ReluSAE(16, 16, seed=1).W_dec[0]  # orthogonal init: an orthonormal basis when square
    torch.testing.assert_close(square @ square.T, torch.eye(16), atol=1e-5, rtol=0)
    assert torch.equal(sae.W_enc[0], sae.W_enc[2]) and torch.equal(sae.W_dec[1], sae.W_dec[2])
    assert not torch.equal(sae.W_enc[0], ReluSAE(16, 32, seed=2).W_enc[0])


def test_standardisation_makes_latents_scale_free():
    sae = ReluSAE(16, 32, seed=0)
    x = torch.randn(10, 16)
    torch.testing.assert_close(sae.encode(x), sae.encode(5 * x + 3))
    x_hat, _ = sae(5 * x + 3)
    torch.testing.assert_close(x_hat, 5 * sae(x)[0] + 3, rtol=1e-4, atol=1e-4)
    raw = ReluSAE(16, 32, seed=0, standardize=False)
    assert not torch.allclose(raw.encode(x), raw.encode(5 * x + 3))


def test_stacked_training_equals_training_each_sae_alone():
    data = torch.randn(300, 12)
    coefs = [0.01, 0.3, 3.0]
    stack = ReluSAE(12, 24, num_saes=3, seed=4)
    train_relu_saes(stack, data, coefs, epochs=3, batch_size=64, seed=9)
    for i, c in enumerate(coefs):
        alone = ReluSAE(12, 24, num_saes=1, seed=4)
        train_relu_saes(alone, data, [c], epochs=3, batch_size=64, seed=9)
        torch.testing.assert_close(alone.W_enc[0], stack.W_enc[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(alone.W_dec[0], stack.W_dec[i], rtol=1e-4, atol=1e-5)


def test_training_reduces_loss_and_sparsity_coefficient_bites():
    torch.manual_seed(0)
    data = torch.relu(torch.randn(1000, 8)) @ torch.randn(8, 16)
    sae = ReluSAE(16, 32, num_saes=2, seed=0)
    x = data[:256]
    with torch.no_grad():
        before = relu_sae_losses(x, *sae(x))[0]
    train_relu_saes(sae, data, [1e-3, 10.0], epochs=20, batch_size=128, seed=0)
    with torch.no_grad():
        x_hat, z = sae(x)
        after = relu_sae_losses(x, x_hat, z)[0]
    assert after[0] < 0.5 * before[0]
    assert (z[1] != 0).float().sum(1).mean() < (z[0] != 0).float().sum(1).mean()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(2, 32))


def test_l1_reductions():
    x = torch.zeros(4, 3)
    z = torch.ones(1, 4, 10)
    x_hat = torch.zeros(1, 4, 3)
    assert relu_sae_losses(x, x_hat, z, "mean")[1].item() == 1.0
    assert relu_sae_losses(x, x_hat, z, "sum")[1].item() == 10.0


def test_save_and_load_round_trip(tmp_path):
    sae = ReluSAE(8, 16, num_saes=2, seed=0)
    with torch.no_grad():
        sae.W_enc[1] += 1
    sae.save(tmp_path / "one", 1, metadata={"l1_coef": 0.1})
    loaded = ReluSAE.load(tmp_path / "one")
    assert torch.equal(loaded.W_enc[0], sae.W_enc[1]) and torch.equal(loaded.W_dec[0], sae.W_dec[1])
    x = torch.randn(5, 8)
    torch.testing.assert_close(loaded(x)[0][0], sae(x, index=1)[0][0])


def test_bad_training_input_is_refused():
    sae = ReluSAE(4, 8)
    with pytest.raises(ValueError, match="shape"):
        train_relu_saes(sae, torch.randn(10, 5), [0.1], epochs=1)
    with pytest.raises(ValueError, match="NaN"):
        train_relu_saes(sae, torch.full((10, 4), float("nan")), [0.1], epochs=1)
    with pytest.raises(ValueError, match="coefficients"):
        train_relu_saes(sae, torch.randn(10, 4), [0.1, 0.2], epochs=1)
    with pytest.raises(ValueError, match="ascending"):
        train_relu_saes(ReluSAE(4, 8, num_saes=2), torch.randn(10, 4), [0.2, 0.1], epochs=1)


@pytest.mark.parametrize("sparse_l0", [0.0, 3.0, float("inf")])
@pytest.mark.parametrize("standardize, l1_reduction", [(True, "mean"), (False, "sum")])
def test_hand_written_gradients_equal_autograd(sparse_l0, standardize, l1_reduction):
    torch.manual_seed(0)
    sae = ReluSAE(12, 40, num_saes=4, standardize=standardize, seed=3)
    with torch.no_grad():  # spread the stack from dense to sparse latents, as a coefficient sweep does
        sae.b_enc -= torch.tensor([0.0, 0.3, 0.8, 2.0])[:, None]
    x = torch.randn(64, 12) * 2 + 0.5
    coefs = torch.tensor([0.001, 0.1, 1.0, 10.0])
    x_hat, z = sae(x)
    mse, l1 = relu_sae_losses(x, x_hat, z, l1_reduction)
    (mse + coefs * l1).sum().backward()
    expected = {name: p.grad.clone() for name, p in sae.named_parameters()}
    scale = l1_scale(l1_reduction, 40, 64)
    mse2, l12 = relu_sae_step_gradients(sae, x, coefs, scale, sparse_l0)
    torch.testing.assert_close(mse2, mse.detach())
    torch.testing.assert_close(l12, l1.detach())
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sparse_path_trains_like_the_dense_one():
    data = torch.randn(400, 16)
    runs = []
    for sparse_l0 in (0.0, float("inf")):
        sae = ReluSAE(16, 48, num_saes=2, seed=1)
        train_relu_saes(sae, data, [0.5, 5.0], epochs=3, batch_size=100, sparse_l0=sparse_l0)
        runs.append(sae)
    torch.testing.assert_close(runs[0].W_enc, runs[1].W_enc, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(runs[0].W_dec, runs[1].W_dec, rtol=1e-3, atol=1e-5)


def test_hand_written_gradients_with_a_handful_of_active_latents():
    # so few non-zero latents that the sparse path gathers instead of multiplying
    torch.manual_seed(1)
    sae = ReluSAE(12, 64, num_saes=2, seed=5)
    x = torch.randn(128, 12)
    with torch.no_grad():
        sae.b_enc[1] -= 1.9
        active = (sae.encode(x)[1] > 0).sum().item()
    assert 0 < active * 256 < 128 * 64
    coefs = torch.tensor([0.1, 1.0])
    x_hat, z = sae(x)
    mse, l1 = relu_sae_losses(x, x_hat, z)
    (mse + coefs * l1).sum().backward()
    expected = {name: p.grad.clone() for name, p in sae.named_parameters()}
    relu_sae_step_gradients(sae, x, coefs, l1_scale("mean", 64, 128), sparse_l0=1.0)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_vanishing_adam_moments_are_zeroed_and_the_rest_kept():
    from randsae.training.toy import zero_vanishing_moments
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([p])
    p.grad = torch.tensor([1.0, 1e-20, 0.0, -2.0])
    opt.step()
    state = opt.state[p]
    state["exp_avg"][2] = 1e-39  # a denormal
    zero_vanishing_moments(opt)
    assert state["exp_avg"][2] == 0 and state["exp_avg_sq"][1] == 0  # (1e-20)² · 0.001 < 1e-30
    assert state["exp_avg"][0] != 0 and state["exp_avg"][3] != 0 and state["exp_avg"][1] != 0
