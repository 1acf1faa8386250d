"""The TopK SAE and its trainer: the sparse computation against the dense reference, the decoder
constraints, AuxK, checkpoints, and learning on data with a known sparse structure."""

import math

import pytest
import torch

from randsae.sae import TopKSAE, load
from randsae.training.trainer import TopKTrainConfig, TopKTrainer, default_lr


def sparse_data(num: int, d: int = 32, features: int = 128, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Each row: `active` random unit features with magnitudes in [1, 2), plus an offset."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(features, d, generator=gen), dim=1)
    chosen = torch.rand(num, features, generator=gen).argsort(dim=1)[:, :active]
    magnitudes = 1 + torch.rand(num, active, generator=gen)
    codes = torch.zeros(num, features).scatter_(1, chosen, magnitudes)
    return codes @ directions + 0.5


def test_sparse_forward_and_gradients_equal_the_dense_reference():
    sae = TopKSAE(24, 96, k=5, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(40, 24)
    out = sae(x)
    dense = sae.forward_dense(x)
    assert out.values.shape == out.indices.shape == (40, 5)
    assert torch.allclose(out.reconstruction, dense.reconstruction, atol=1e-5)
    latents = sae.dense_latents(out.values, out.indices)
    assert torch.allclose(latents, sae.dense_latents(dense.values, dense.indices))
    target = torch.randn(40, 24)

    def gradients(reconstruction):
        sae.zero_grad(set_to_none=True)
        (reconstruction - target).square().sum().backward()
        return [p.grad.clone() for p in sae.parameters()]

    sparse_grads = gradients(sae(x).reconstruction)
    for sparse_grad, dense_grad in zip(sparse_grads, gradients(dense.reconstruction), strict=True):
        assert torch.allclose(sparse_grad, dense_grad, atol=1e-4, rtol=1e-4)
    values, indices = sae.encode(x)  # the inference path (no recomputation) agrees too
    assert torch.allclose(sae.decode(values, indices), dense.reconstruction, atol=1e-5)


def test_decoder_rows_stay_unit_norm_and_lose_their_parallel_gradient():
    sae = TopKSAE(16, 64, k=4)
    x = sparse_data(256, d=16)
    trainer = TopKTrainer(sae, TopKTrainConfig(k=4, expansion=4, batch_size=256, warmup_steps=1))
    trainer.step(x)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    sae.zero_grad()
    (sae(x).reconstruction - x).square().sum().backward()
    sae.remove_parallel_gradient()
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() < 1e-4 * sae.W_dec.grad.norm()


def test_trainer_defaults_follow_the_paper():
    assert default_lr(2**14) == pytest.approx(2e-4)
    assert default_lr(36_864) == pytest.approx(2e-4 / math.sqrt(36_864 / 2**14))
    x = sparse_data(512)
    sae = TopKSAE(32, 128, k=3)
    trainer = TopKTrainer(sae, TopKTrainConfig(k=3, batch_size=512, warmup_steps=100, recipe="sparsify"),
                          total_steps=10_000)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(default_lr(128) / 100)  # warm-up
    trainer.step(x)
    assert torch.allclose(sae.b_dec, x.mean(0), atol=1e-3)  # the decoder bias starts at the data mean
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(default_lr(128) * 2 / 100)
    short = TopKTrainer(TopKSAE(32, 128, k=3), TopKTrainConfig(warmup_steps=1000), total_steps=50)
    assert short.hyper.warmup_steps == 5  # a run shorter than ten warm-ups warms up over its first tenth


def test_topk_sae_beats_pca_with_as_many_components_on_sparse_data():
    torch.manual_seed(0)
    data = sparse_data(12_000)
    train, held_out = data[:10_000], data[10_000:]
    sae = TopKSAE(32, 512, k=3, seed=1)
    trainer = TopKTrainer(sae, TopKTrainConfig(k=3, batch_size=256, lr=3e-3, warmup_steps=10))
    fvus = [trainer.step(batch) for _ in range(10) for batch in train[torch.randperm(len(train))].split(256)]
    assert fvus[-1] < fvus[0] / 5
    with torch.no_grad():
        values, indices = sae.encode(held_out)
        error = (sae.decode(values, indices) - held_out).square().sum()
    centred = held_out - held_out.mean(0)
    sae_ev = 1 - (error / centred.square().sum()).item()
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    pca_ev = (eigenvalues[:3].sum() / eigenvalues.sum()).item()
    assert sae_ev > 0.85 and sae_ev > pca_ev + 0.5, (sae_ev, pca_ev)  # about 0.95 against 0.19


def test_auxk_reaches_dead_latents_only_when_asked():
    x = sparse_data(256)
    sae = TopKSAE(32, 128, k=3)
    dead = torch.zeros(128, dtype=torch.bool)
    dead[64:] = True
    out = sae(x, dead)
    assert out.aux_reconstruction is not None and out.aux_reconstruction.shape == x.shape
    assert sae(x).aux_reconstruction is None and sae(x, torch.zeros_like(dead)).aux_reconstruction is None
    sae.zero_grad()
    out.aux_reconstruction.square().sum().backward()
    touched = sae.W_enc.grad.abs().sum(dim=1) > 0
    assert touched[64:].any() and not touched[:64].any()
    config = TopKTrainConfig(k=3, batch_size=256, auxk_alpha=1 / 32, dead_tokens=256, warmup_steps=1)
    trainer = TopKTrainer(TopKSAE(32, 128, k=3), config)
    for _ in range(3):
        assert math.isfinite(trainer.step(x))
    assert (trainer.tokens_since_fired <= 3 * 256).all()


def test_bf16_autocast_step_runs():
    trainer = TopKTrainer(TopKSAE(32, 128, k=3), TopKTrainConfig(k=3, autocast="bf16", warmup_steps=1))
    assert math.isfinite(trainer.step(sparse_data(256)))


def test_checkpoint_round_trip_in_the_saelens_layout(tmp_path):
    sae = TopKSAE(16, 64, k=4, seed=5)
    with torch.no_grad():
        sae.b_dec.normal_()
    sae.save(tmp_path / "layer.3", {"layer": 3})
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "layer.3" / "sae_weights.safetensors"))
    assert tensors["W_enc"].shape == (16, 64) and tensors["W_dec"].shape == (64, 16)
    again = load(tmp_path / "layer.3")
    assert isinstance(again, TopKSAE) and again.k == 4
    x = torch.randn(8, 16)
    assert torch.equal(again(x).reconstruction, sae(x).reconstruction)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="k must"):
        TopKSAE(16, 8, k=9)
    with pytest.raises(ValueError, match="autocast"):
        TopKTrainConfig(autocast="fp8").validate()
    with pytest.raises(ValueError, match="batch_size"):
        TopKTrainConfig(batch_size=0).validate()
    x = sparse_data(64)
    x[3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        TopKTrainer(TopKSAE(32, 128, k=3), TopKTrainConfig(k=3)).step(x)
