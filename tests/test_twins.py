"""Twins trained like the user's SAE: randsae trains JumpReLU SAEs to a target L0 and BatchTopK and
Matryoshka SAEs with their k; a study given a JumpReLU SAE that SAELens's own class saved trains JumpReLU twins
to its measured L0 (or TopK twins with --twin-sae topk) and its report names each arm's architecture; lm eval
and lm latents take every architecture."""

import json

import numpy as np
import pytest
import torch
from test_baseline import tiny_args

from randsae.cli import main
from randsae.io import read_rows
from randsae.sae import load

TARGET_L0 = 6.0


@pytest.fixture(scope="module")
def jumprelu_run(tiny_dir, tmp_path_factory):
    """JumpReLU SAEs of the tiny model's blocks 0 and 2, trained by randsae to L0 = 6 on 32k tokens (125 steps
    of the budget's schedule), and their eval."""
    root = tmp_path_factory.mktemp("jumprelu")
    acts = root / "acts"
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "32k", "--context-length", "64",
                 "--layers", "0,2", "--out", str(acts)]) == 0
    assert main(["-q", "lm", "train", "--acts", str(acts), "--architecture", "jumprelu", "--target-l0",
                 str(TARGET_L0), "--expansion", "4", "--device", "cpu", "--out", str(root / "sae")]) == 0
    assert main(["-q", "lm", "eval", "--sae", str(root / "sae"), "--tokens", "2k", "--device", "cpu",
                 "--out", str(root / "eval")]) == 0
    return root


def test_jumprelu_reaches_its_target_l0_within_ten_percent(jumprelu_run):
    rows = read_rows(jumprelu_run / "eval" / "results.csv")
    assert [int(r["layer"]) for r in rows] == [0, 2]
    for row in rows:
        assert row["architecture"] == "jumprelu" and row["k"] == ""
        assert abs(float(row["l0"]) / TARGET_L0 - 1) <= 0.10, row["l0"]
        assert int(row["pca_components"]) == round(float(row["l0"]))  # PCA's baseline at the measured L0
        assert float(row["explained_variance"]) > float(row["pca_explained_variance"])
    cfg = json.loads((jumprelu_run / "sae" / "layer.0" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["randsae"]["target_l0"] == TARGET_L0


def test_lm_latents_reads_a_jumprelu_sae_entry_by_entry(jumprelu_run):
    out = jumprelu_run / "latents"
    assert main(["-q", "lm", "latents", "--sae", str(jumprelu_run / "sae"), "--min-examples", "5", "--sample", "4",
                 "--max-examples", "50", "--explainer-examples", "6", "--test-examples", "10", "--quantiles", "5",
                 "--non-activating", "10", "--device", "cpu", "--out", str(out)]) == 0
    manifest = json.loads((out / "cache" / "manifest.json").read_text())
    assert manifest["k"] == {"0": None, "2": None}  # no fixed k: the firing entries only
    from randsae.lm.activations import open_cache
    from randsae.lm.latent_cache import open_latent_cache

    cache = open_latent_cache(out / "cache")
    positions, values, latents = next(cache.entries(2))
    # the entries are the SAE's firing latents of the activations they were read from, token by token
    x = open_cache(jumprelu_run / "acts").read_shard(0, "layer.2").float()[:len(cache.tokens().view(-1))]
    dense = load(jumprelu_run / "sae" / "layer.2").encode_dense(x[:positions.max() + 1])
    fired = dense.nonzero().numpy()  # by token, then by latent
    order = np.lexsort((latents, positions))  # the cache's entries in the same order
    assert len(positions) == len(fired) > len(x) // 100
    assert (positions[order] == fired[:, 0]).all() and (latents[order] == fired[:, 1]).all()
    assert torch.allclose(torch.from_numpy(values[order]), dense[dense != 0], atol=1e-6)
    counts = cache.index(2).counts()
    assert int(counts.sum()) == sum(len(v) for _, v, _ in cache.entries(2))
    rows = read_rows(out / "latents.csv")
    assert {r["layer"] for r in rows} == {"0", "2"}
    assert sum(r["eligible"] == "True" for r in rows) > 0


def saelens_copy(sae_dir, out):
    """The randsae-trained JumpReLU SAEs rebuilt by SAELens's own JumpReLU class and saved by SAELens, in a
    folder of hookpoints as a user would bring them."""
    from sae_lens import SAE, JumpReLUSAEConfig

    for layer in (0, 2):
        ours = load(sae_dir / f"layer.{layer}")
        theirs = SAE.from_dict(JumpReLUSAEConfig(d_in=ours.num_inputs, d_sae=ours.num_latents).to_dict())
        with torch.no_grad():
            theirs.W_enc.copy_(ours.W_enc.T)
            for name in ("b_enc", "W_dec", "b_dec", "threshold"):
                getattr(theirs, name).copy_(getattr(ours, name))
        theirs.save_model(out / f"model.layers.{layer}")
    return out


@pytest.fixture(scope="module")
def their_saes(jumprelu_run):
    return saelens_copy(jumprelu_run / "sae", jumprelu_run / "theirs")


@pytest.mark.slow
@pytest.mark.parametrize("twin_sae", ["same", "topk"])
def test_a_study_of_a_saelens_jumprelu_sae_trains_twins_like_it(their_saes, tiny_dir, tmp_path, twin_sae):
    out = tmp_path / twin_sae
    assert main(tiny_args(tiny_dir, out, "--variants", "trained,control", "--scorers", "tokens", "--sae",
                          str(their_saes), "--twin-sae", twin_sae, "--tokens", "32k")) == 0
    record = json.loads((out / "trained" / "sae" / "config.json").read_text())
    measured = record["measured_l0"]
    assert set(measured) == {"0", "2"} and all(0 < v < 128 for v in measured.values())
    for layer in (0, 2):
        cfg = json.loads((out / "control" / "sae" / f"layer.{layer}" / "cfg.json").read_text())
        assert cfg["d_sae"] == 128 and cfg["d_in"] == 32
        control = read_rows(out / "control" / "eval" / "results.csv")[[0, 2].index(layer)]
        if twin_sae == "same":
            assert cfg["architecture"] == "jumprelu" and cfg["randsae"]["target_l0"] == measured[str(layer)]
            assert abs(float(control["l0"]) / measured[str(layer)] - 1) <= 0.10
        else:
            assert cfg["architecture"] == "topk" and cfg["k"] == round(measured[str(layer)])
        trained = read_rows(out / "trained" / "eval" / "results.csv")[[0, 2].index(layer)]
        assert trained["architecture"] == "jumprelu"
        assert control["architecture"] == ("jumprelu" if twin_sae == "same" else "topk")
    report = (out / "report.md").read_text()
    twins = "jumprelu" if twin_sae == "same" else "topk"
    assert f"{twins} twins of the same size, trained to your SAEs' measured L0 (--twin-sae {twin_sae})" in report
    assert "trained: jumprelu, L0 (dead) by layer 0: " in report  # each arm's architecture, held-out L0, dead


@pytest.mark.parametrize("architecture", ["batchtopk", "matryoshka"])
def test_batchtopk_and_matryoshka_trained_by_randsae_open_in_saelens_unchanged(architecture, tmp_path):
    """randsae's trainer, SAELens's format: SAELens loads the checkpoint as its own training class, and the
    inference SAE SAELens makes of it gives randsae's latents and reconstruction (Δ ≤ 1e-5 relative)."""
    from sae_lens import SAE
    from sae_lens.saes.sae import TrainingSAE

    from randsae.training.trainer import TopKTrainConfig, TopKTrainer

    config = TopKTrainConfig(architecture=architecture, k=4, expansion=4, batch_size=128, warmup_steps=2)
    sae = config.new_sae(16, 0, seed=0)
    trainer = TopKTrainer(sae, config, total_steps=40)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(48, 16, generator=gen)
    data = (torch.rand(5120, 48, generator=gen) < 0.05).float() @ features  # sparse codes: something to learn
    fvu = [trainer.step(batch) for batch in data.split(128)]
    assert sum(fvu[-5:]) < sum(fvu[:5])
    out = sae(data[:128])
    assert len(out.prefixes) == (3 if architecture == "matryoshka" else 0)
    sae.save(tmp_path / "checkpoint")

    theirs = TrainingSAE.load_from_disk(tmp_path / "checkpoint")
    assert type(theirs).__name__ == ("MatryoshkaBatchTopKTrainingSAE" if architecture == "matryoshka"
                                     else "BatchTopKTrainingSAE")
    assert float(theirs.topk_threshold) == pytest.approx(float(sae.threshold))
    theirs.save_inference_model(tmp_path / "inference")
    reference = SAE.load_from_disk(tmp_path / "inference")
    ours = load(tmp_path / "checkpoint")
    assert ours.saved_as == ("matryoshka_batchtopk" if architecture == "matryoshka" else "batchtopk")
    x = data[-64:]
    with torch.no_grad():
        expected = reference.encode(x)
        got = ours.encode_dense(x)
        assert (got != 0).sum() > 0 and torch.equal(got != 0, expected != 0)
        assert (got - expected).norm() <= 1e-5 * expected.norm()
        assert (ours.decode_dense(got) - reference.decode(expected)).norm() <= 1e-5 * x.norm()
