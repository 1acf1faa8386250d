"""The schedule follows the budget, SAEs are judged against PCA-k and zero-ablation, and massive
activations can be left out of training and every metric."""

import json
import math

import pytest
import torch

from randsae.cli import main
from randsae.io import read_rows
from randsae.lm.token_filter import TokenFilter
from randsae.training.trainer import TopKTrainConfig, default_lr, plan_schedule


def test_the_paper_schedule_at_100m_tokens_and_a_shorter_one_below():
    config, latents = TopKTrainConfig(expansion=64, recipe="sparsify"), 64 * 768  # the paper's trainer
    paper = plan_schedule(config, 100_000_000, latents)
    assert (paper.batch_size, paper.lr, paper.warmup_steps) == (4096, default_lr(latents), 1000)
    assert paper.rule == "recipe" and paper.hyperparameters["auxk_alpha"] == 0  # and every value recorded
    small = plan_schedule(config, 100_000, latents)
    assert small.rule == "budget" and small.batch_size == 256 and small.steps == 391
    assert small.lr == pytest.approx(default_lr(latents) * math.sqrt(5000 / 391))
    assert small.warmup_steps == 39 and "25 steps at the paper's batch" in small.reason
    middle = plan_schedule(config, 10_000_000, latents)  # the paper's batch, a raised learning rate
    assert middle.batch_size == 4096 and middle.lr > default_lr(latents)
    # flags win; --schedule paper keeps the paper's at any budget
    given = plan_schedule(TopKTrainConfig(batch_size=1024), 100_000, latents, fixed={"batch_size"})
    assert given.batch_size == 1024 and given.steps == 98
    assert plan_schedule(TopKTrainConfig(lr=1e-3), 100_000, latents, fixed={"lr"}).lr == 1e-3
    kept = plan_schedule(config, 100_000, latents, auto=False)
    assert (kept.batch_size, kept.lr, kept.rule) == (4096, default_lr(latents), "recipe")
    # randsae's recipe: its own base rate, decay and AuxK, the same budget rule over them
    ours = plan_schedule(TopKTrainConfig(expansion=64), 100_000_000, latents)
    assert ours.lr == pytest.approx(3 * default_lr(latents)) and ours.rule == "recipe"
    assert ours.hyperparameters["decay_steps"] == round(0.2 * ours.steps)
    assert ours.hyperparameters["dead_tokens"] == 20 * 4096 and ours.hyperparameters["auxk_alpha"] == 1 / 32


def test_token_filter_leaves_out_first_positions_and_outliers():
    hidden = torch.ones(3, 8, 4)
    hidden[:, 0] *= 100  # an attention sink at every context's first position
    hidden[1, 5] *= 50
    assert TokenFilter().apply(hidden).shape == (24, 4)
    assert TokenFilter(skip_positions=1).apply(hidden).shape == (21, 4)
    keep = TokenFilter(max_norm_ratio=10).mask(hidden)
    assert not keep[:, 0].any() and not keep[1, 5] and keep.sum() == 20
    assert TokenFilter.of({"skip_positions": 2}).describe().startswith("first 2 positions")


@pytest.fixture(scope="module")
def tiny_cache(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("budget-acts")
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "8k", "--context-length", "64",
                 "--layers", "1", "--out", str(root / "acts")]) == 0
    return root / "acts"


def test_a_starved_sae_is_warned_about_marked_and_crossed_out(tiny_cache, tmp_path, caplog):
    """The paper's batch on 8k tokens (2 steps, at a learning rate that throws it off): `lm train` warns that
    the SAE is worse than PCA-k and says why; `lm eval` marks the row; `lm compare` names it in the summary.
    The budget rule on the same tokens gives an SAE that is not marked (both under the paper's trainer, the
    recipe the rule was measured with)."""
    starved, ruled = tmp_path / "starved", tmp_path / "ruled"
    assert main(["lm", "train", "--acts", str(tiny_cache), "--k", "4", "--expansion", "4", "--schedule", "paper",
                 "--lr", "1", "--device", "cpu", "--recipe", "sparsify", "--out", str(starved / "sae")]) == 0
    assert "worse than its simplest baseline. It trained for 2 steps" in caplog.text
    cfg = json.loads((starved / "sae" / "layer.1" / "cfg.json").read_text())["randsae"]
    assert cfg["below_pca"] and cfg["held_out_fvu"] > cfg["pca_fvu"] and cfg["batch_size"] == 4096
    assert json.loads((starved / "sae" / "config.json").read_text())["schedule"]["rule"] == "flags"
    caplog.clear()
    assert main(["lm", "train", "--acts", str(tiny_cache), "--k", "4", "--expansion", "4", "--device", "cpu",
                 "--recipe", "sparsify", "--out", str(ruled / "sae")]) == 0
    assert "schedule: 8,000 tokens give 2 steps" in caplog.text and "worse than" not in caplog.text
    for run in (starved, ruled):
        assert main(["-q", "lm", "eval", "--sae", str(run / "sae"), "--tokens", "1k", "--out",
                     str(run / "eval")]) == 0
    (bad,), (good,) = read_rows(starved / "eval" / "results.csv"), read_rows(ruled / "eval" / "results.csv")
    ev, pca = float(bad["explained_variance"]), float(bad["pca_explained_variance"])
    assert bad["below_baseline"].startswith(f"EV {ev:.3f} < PCA-4's {pca:.3f}") and good["below_baseline"] == ""
    assert ev < pca and int(bad["fit_tokens"]) == 8000  # fitted on the whole cache
    assert float(bad["pca_explained_variance"]) < float(bad["pca_in_sample_explained_variance"])
    out = tmp_path / "compare"
    assert main(["-q", "lm", "compare", str(starved / "eval"), "--out", str(out)]) == 0
    assert "✗ Below the simplest baselines" in (out / "summary.md").read_text()


def test_skipped_positions_are_left_out_of_training_and_every_metric(tiny_cache, tmp_path):
    sae = tmp_path / "sae"
    assert main(["-q", "lm", "train", "--acts", str(tiny_cache), "--k", "4", "--expansion", "4", "--device", "cpu",
                 "--skip-positions", "1", "--out", str(sae)]) == 0
    config = json.loads((sae / "config.json").read_text())
    assert config["train"]["skip_positions"] == 1
    cfg = json.loads((sae / "layer.1" / "cfg.json").read_text())["randsae"]
    assert cfg["tokens_trained"] == 125 * 63  # 125 contexts of 64 tokens, the first of each left out
    held_out = json.loads((tiny_cache / "manifest.json").read_text())["held_out_contexts"]
    assert 8 < held_out < 16 and cfg["held_out_tokens"] == held_out * 63  # every held-out context, less one
    assert main(["-q", "lm", "eval", "--sae", str(sae), "--tokens", "1k", "--out", str(tmp_path / "eval")]) == 0
    (row,) = read_rows(tmp_path / "eval" / "results.csv")
    assert int(row["tokens"]) == held_out * 63


def test_presets_and_the_papers_layer_rule():
    from randsae.study.settings import paper_layers, settings_for

    assert paper_layers(24, 4.05e8) == list(range(24))  # pythia-410m: every layer
    assert paper_layers(16, 1.0e9) == list(range(0, 16, 2))  # pythia-1b: every 2nd
    assert paper_layers(32, 6.9e9) == list(range(0, 32, 4))  # pythia-6.9b: every 4th
    paper = settings_for("paper", {})
    assert (paper.k, paper.expansion, paper.tokens, paper.latent_tokens, paper.layers) == (
        32, 64, 100_000_000, 10_000_000, "paper")
    from randsae.autointerp.clients import JudgeSettings

    demo = settings_for("demo", {"tokens": 1000, "judge": {"url": "http://127.0.0.1:1/v1", "model": "m"}})
    assert demo.tokens == 1000 and demo.expansion == 8
    assert demo.judge == JudgeSettings(url="http://127.0.0.1:1/v1", model="m")  # a server replaces the local judge
    assert settings_for("paper", {"latent_tokens": "cache"}).latent_tokens is None  # --latent-tokens cache
