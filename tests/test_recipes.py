"""Training recipes (randsae.training.recipes): what each sets, that a given setting wins, that the run records
every value, that the randsae recipe trains a TopK SAE to recover a small toy's features with its latents alive,
and that its remedies (decay, AuxK's window, resampling) do what they say."""

import json

import pytest
import torch

from randsae.errors import BadInput
from randsae.experiments.recovery import RecoveryConfig, run_recovery
from randsae.sae.topk import TopKSAE
from randsae.training import recipes
from randsae.training.trainer import TopKTrainConfig, TopKTrainer


def test_each_recipe_sets_what_its_source_says():
    bussmann = recipes.resolve("bussmann", {}, num_inputs=100, num_latents=3200, batch_size=4096, total_steps=1000)
    assert (bussmann.lr, bussmann.adam_beta1, bussmann.adam_beta2) == (3e-4, 0.9, 0.99)
    assert (bussmann.auxk_alpha, bussmann.k_aux, bussmann.dead_tokens) == (1 / 32, 512, 20 * 4096)
    assert (bussmann.warmup_steps, bussmann.decay_steps) == (0, 0)
    sparsify = recipes.resolve("sparsify", {}, 576, 36_864, 4096, 10_000)
    assert sparsify.lr == pytest.approx(2e-4 / (36_864 / 2**14) ** 0.5) and sparsify.auxk_alpha == 0
    assert (sparsify.warmup_steps, sparsify.decay_steps, sparsify.dead_tokens) == (1000, 0, 10_000_000)
    ours = recipes.resolve("randsae", {}, 100, 3200, 1024, 8192)
    assert ours.lr == pytest.approx(3 * recipes.width_lr(3200)) and ours.k_aux == 50  # d / 2
    assert (ours.decay_steps, ours.dead_tokens, ours.auxk_alpha) == (round(0.2 * 8192), 20 * 1024, 1 / 32)
    given = recipes.resolve("randsae", {"lr": 1e-3, "auxk_alpha": 0.0, "k_aux": 7}, 100, 3200, 1024, 8192)
    assert (given.lr, given.auxk_alpha, given.k_aux) == (1e-3, 0.0, 7)  # a given setting wins


def test_the_learning_rate_warms_up_holds_and_decays_to_zero_at_the_last_step():
    hyper = recipes.resolve("randsae", {"warmup_steps": 10}, 8, 64, 256, 100)
    factors = [hyper.lr_factor(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[50] == 1.0
    assert factors[80] == 1.0 and factors[90] == pytest.approx(0.5) and factors[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))  # never rises after warm-up
    sae = TopKSAE(8, 64, 2)
    trainer = TopKTrainer(sae, TopKTrainConfig(k=2, batch_size=256, warmup_steps=10), total_steps=100)
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    for _ in range(100):
        trainer.step(x)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # the run ends at a learning rate of 0


def test_resampling_restarts_the_dead_latents_alone_on_the_worst_reconstructed_inputs():
    sae = TopKSAE(8, 32, 2, seed=1)
    config = TopKTrainConfig(k=2, batch_size=128, dead_tokens=256, resample_every=4, auxk_alpha=0.0)
    trainer = TopKTrainer(sae, config, total_steps=1000)
    x = torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        trainer.step(x)
    with torch.no_grad():
        sae.b_enc[:5] = -1e3  # five latents made dead: they fire on nothing
    trainer.tokens_since_fired[:5] = 10_000
    trainer.tokens_since_fired[5:] = 0
    before = sae.W_dec.detach().clone()
    trainer.step(x)  # step 4: a resampling step
    moved = (sae.W_dec.detach() - before).norm(dim=1)
    assert int((trainer.tokens_since_fired[:5] == 0).sum()) == 5  # their clocks start again
    exp_avg = trainer.optimizer.state[sae.W_dec]["exp_avg"]
    assert float(exp_avg[:5].abs().max()) == 0.0  # fresh moments for the restarted latents
    assert float(exp_avg[5:].abs().max()) > 0  # and theirs only
    assert float(moved[:5].min()) > 10 * float(moved[5:].max())  # they jumped; the living took one small step
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)
    assert float(sae.b_enc.detach()[:5].abs().max()) == 0.0  # and fire again
    assert recipes.resolve("randsae", {"resample_every": 4}, 8, 32, 128, 100).resamples_at(76, 100) is True
    assert not recipes.resolve("randsae", {"resample_every": 4}, 8, 32, 128, 100).resamples_at(84, 100)  # decay


def test_a_bad_recipe_or_value_is_one_sentence():
    with pytest.raises(BadInput, match="unknown recipe 'fast'; choose from randsae, bussmann, sparsify"):
        TopKTrainConfig(recipe="fast")
    with pytest.raises(BadInput, match="decay_fraction must be in"):
        TopKTrainConfig(decay_fraction=1.5)
    with pytest.raises(BadInput, match="adam_beta2 must be in"):
        RecoveryConfig(adam_beta2=1.0)


def randsae(capsys, *args) -> tuple[int, str]:
    from randsae.cli import main

    capsys.readouterr()
    code = main(["-q", *args])
    return code, capsys.readouterr().err


TINY = ["--num-inputs", "8", "--num-features", "32", "--avg-active", "2", "--latents", "32", "--k", "2",
        "--samples", "2048", "--points", "1", "--batch-size", "256", "--held-out", "256",
        "--architectures", "topk", "--dictionaries", "trained", "--probabilities", "constant", "--no-plots"]


def test_the_recipe_and_every_value_it_set_land_in_config_json(tmp_path, capsys):
    out = tmp_path / "bussmann"
    code, err = randsae(capsys, "recovery", *TINY, "--recipe", "bussmann", "--out", str(out))
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())
    assert record["recipe"] == "bussmann"
    values = record["recipe_values"]
    assert (values["lr"], values["adam_beta2"], values["k_aux"], values["batch_size"]) == (3e-4, 0.99, 32, 256)
    assert "recipe bussmann: batch 256, lr 0.0003, Adam β2 0.99" in (out / "table.md").read_text()
    code, err = randsae(capsys, "recovery", *TINY, "--recipe", "fast", "--out", str(tmp_path / "bad"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown recipe 'fast'" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # 4M samples of training
def test_the_randsae_recipe_recovers_a_small_toy_with_its_latents_alive(tmp_path):
    """The issue's small toy: 16 inputs, 64 features, 2 active per sample, 64 latents at L0 2 (TopK)."""
    config = RecoveryConfig(num_inputs=16, num_features=64, avg_active=2.0, latents=64, k=2, held_out=4096,
                            samples=4_000_000, points=1, probabilities=["constant"], architectures=["topk"],
                            dictionaries=["trained"])
    (row,) = run_recovery(config, tmp_path, progress=False)
    assert row.recovered_fraction >= 0.9 and row.dead_fraction < 0.05, row


@pytest.mark.parametrize("line, words", [
    ('lr = "fast"', "setting lr must be a float, not 'fast'"),
    ('batch_size = "big"', "setting batch_size must be an int, not 'big'"),
    ("recipe = 5", "setting recipe must be a str, not 5"),
    ('adam_beta2 = "x"', "setting adam_beta2 must be a float"),
    ('dead_samples = "lots"', "cannot read"),
    ("decay_fraction = 2.0", "decay_fraction must be in [0, 1]"),
])
def test_a_config_files_optional_settings_are_checked_by_their_type(line, words, tmp_path, capsys):
    config = tmp_path / "recipe.toml"
    config.write_text(line + "\n")
    code, err = randsae(capsys, "recovery", *TINY, "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_a_config_files_counts_read_as_the_flag_reads_them(tmp_path, capsys):
    config = tmp_path / "recipe.toml"
    config.write_text('dead_samples = "4k"\nrecipe = "sparsify"\n')
    code, err = randsae(capsys, "recovery", *TINY, "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "config.json").read_text())
    assert record["dead_samples"] == 4000 and record["recipe_values"]["dead_tokens"] == 4000


def test_auxk_over_the_dead_latents_is_the_gathered_form_with_its_gradients():
    """AuxK computed densely over the dead latents alone gives the reconstruction and gradients of the form that
    gathers each token's k_aux largest dead latents' rows (the reference written out here)."""
    sae = TopKSAE(12, 64, 3, seed=1)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
    x = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    dead = torch.zeros(64, dtype=torch.bool)
    dead[5:40] = True

    def gathered(x: torch.Tensor) -> torch.Tensor:
        _, indices = sae.pre_activations(x).masked_fill_(~dead, -1.0).topk(6, dim=-1, sorted=False)
        return sae.decode(sae.selected_activations(x, indices), indices, bias=False)

    results = []
    for form in (gathered, lambda x: sae.auxiliary(x, sae.pre_activations(x), dead)):
        sae.zero_grad()
        out = form(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]))
    (reference, expected), (dense, found) = results
    assert torch.allclose(dense, reference, atol=1e-5)
    for a, b in zip(expected, found, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert float(expected[0][~dead].abs().max()) == 0  # only the dead latents' encoder rows learn from it
