"""The field's own tools open randsae's SAEs unchanged, and randsae opens theirs: SAELens 6
(`SAE.load_from_disk`) and EleutherAI sparsify (`SparseCoder.load_from_disk`, `load_many` as delphi uses it),
the real packages from the registry, on checkpoints written by randsae's own commands."""

import json

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAEConfig
from sae_lens import TopKSAE as LensTopK
from sparsify import SparseCoder, SparseCoderConfig

from randsae.cli import main
from randsae.sae import ReluSAE, TopKSAE, load

TRAIN = ["--k", "8", "--expansion", "4", "--batch-size", "256", "--device", "cpu"]


@pytest.fixture(scope="module")
def topk_run(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "4k", "--context-length", "64",
                 "--layers", "1,2", "--out", str(root / "acts")]) == 0
    assert main(["-q", "lm", "train", "--acts", str(root / "acts"), *TRAIN, "--out", str(root / "sae")]) == 0
    x = torch.cat([torch.randn(64, 32) * 3, torch.randn(64, 32) * 0.1 + 5])  # varied scales, off-centre
    return root, x


def scale(x: torch.Tensor) -> float:
    return x.abs().max().item()


def test_saelens_opens_randsae_topk_checkpoints_unchanged(topk_run):
    root, x = topk_run
    directory = root / "sae" / "layer.2"
    ours = load(directory)
    theirs = SAE.load_from_disk(str(directory))
    assert isinstance(theirs, LensTopK) and theirs.cfg.k == ours.k
    assert theirs.cfg.metadata.hook_name == "model.layers.2" and theirs.cfg.metadata.prepend_bos is False
    assert theirs.cfg.metadata.context_size == 64
    with torch.no_grad():
        values, indices = ours.encode(x)
        latents = ours.dense_latents(values, indices)
        their_latents = theirs.encode(x)
        assert (their_latents - latents).abs().max() <= 1e-4 * scale(x)
        assert (theirs.decode(their_latents) - ours.decode(values, indices)).abs().max() <= 1e-4 * scale(x)


def test_saelens_opens_randsae_relu_checkpoints_with_standardisation(tmp_path):
    assert main(["-q", "toy", "--latents", "16", "--l1", "0.01", "--seeds", "1", "--epochs", "2", "--num-samples",
                 "300", "--num-inputs", "8", "--num-features", "16", "--transform", "none", "--data", "sharkey",
                 "--save-weights", "--no-plots", "--out", str(tmp_path)]) == 0
    (directory,) = (tmp_path / "weights").iterdir()
    ours = load(directory)
    assert isinstance(ours, ReluSAE) and ours.standardize
    theirs = SAE.load_from_disk(str(directory))
    assert isinstance(theirs, StandardSAE) and theirs.cfg.normalize_activations == "layer_norm"
    x = torch.randn(50, 8) * 2 + 1
    with torch.no_grad():
        x_hat, z = ours(x, index=0)
        their_z = theirs.encode(x)
        assert (their_z - z[0]).abs().max() <= 1e-4 * scale(x)  # SAELens divides by std + 1e-5
        assert (theirs.decode(their_z) - x_hat[0]).abs().max() <= 1e-4 * scale(x)


def test_sparsify_and_delphi_open_the_export(topk_run, tmp_path):
    root, x = topk_run
    assert main(["-q", "export", str(root / "sae"), "--format", "sparsify", "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hookpoints"] == ["layers.1", "layers.2"]
    coders = SparseCoder.load_many(str(tmp_path), local=True, layers=config["hookpoints"])  # delphi's loader
    for layer in (1, 2):
        ours = load(root / "sae" / f"layer.{layer}")
        theirs = coders[f"layers.{layer}"]
        single = SparseCoder.load_from_disk(tmp_path / f"layers.{layer}")
        with torch.no_grad():
            values, indices = ours.encode(x)
            out = theirs.encode(x)
            assert (ours.dense_latents(out.top_acts, out.top_indices) - ours.dense_latents(values, indices)
                    ).abs().max() <= 1e-5 * scale(x)
            assert (theirs.decode(out.top_acts, out.top_indices) - ours.decode(values, indices)).abs().max() \
                <= 1e-5 * scale(x)
            assert torch.equal(single.encoder.weight, theirs.encoder.weight)
    assert load(tmp_path / "layers.2").k == 8  # and randsae reads its own export back


def test_randsae_opens_checkpoints_saved_by_saelens_and_sparsify(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 16) * 2
    lens = LensTopK(TopKSAEConfig(d_in=16, d_sae=64, k=5))
    with torch.no_grad():
        lens.b_enc.normal_()
        lens.b_dec.normal_()
    lens.save_model(str(tmp_path / "lens-topk"))
    ours = load(tmp_path / "lens-topk")
    with torch.no_grad():
        values, indices = ours.encode(x)
        assert (ours.dense_latents(values, indices) - lens.encode(x)).abs().max() <= 1e-5 * scale(x)
        assert (ours.decode(values, indices) - lens.decode(lens.encode(x))).abs().max() <= 1e-5 * scale(x)

    standard = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64, normalize_activations="layer_norm"))
    with torch.no_grad():
        standard.b_enc.normal_()
    standard.save_model(str(tmp_path / "lens-standard"))
    relu = load(tmp_path / "lens-standard")
    with torch.no_grad():
        x_hat, z = relu(x, index=0)
        assert (z[0] - standard.encode(x)).abs().max() <= 1e-4 * scale(x)
    with torch.no_grad():
        standard.b_dec.normal_()
    standard.save_model(str(tmp_path / "lens-standard-bias"))
    with pytest.raises(ValueError, match="non-zero decoder bias"):
        load(tmp_path / "lens-standard-bias")

    coder = SparseCoder(16, SparseCoderConfig(num_latents=64, k=5))
    with torch.no_grad():
        coder.b_dec.normal_()
    coder.save_to_disk(tmp_path / "sparsify")
    ours = load(tmp_path / "sparsify")
    assert isinstance(ours, TopKSAE)
    with torch.no_grad():
        values, indices = ours.encode(x)
        out = coder.encode(x)
        assert (ours.dense_latents(values, indices) - ours.dense_latents(out.top_acts, out.top_indices)
                ).abs().max() <= 1e-5 * scale(x)
        assert (ours.decode(values, indices) - coder.decode(out.top_acts, out.top_indices)).abs().max() \
            <= 1e-5 * scale(x)


def test_old_randsae_checkpoints_still_load_and_export_rewrites_them(tmp_path):
    sae = ReluSAE(8, 16, standardize=False, seed=1)
    old = tmp_path / "old"
    old.mkdir()
    from safetensors.torch import save_file
    save_file({"W_enc": sae.W_enc[0].contiguous(), "b_enc": sae.b_enc[0].contiguous(),
               "W_dec": sae.W_dec[0].contiguous(), "b_dec": torch.zeros(8)}, str(old / "sae_weights.safetensors"))
    (old / "cfg.json").write_text(json.dumps({"architecture": "relu", "d_in": 8, "d_sae": 16, "standardize": False,
                                              "seed": 3}))
    loaded = load(old)
    assert not loaded.standardize and torch.equal(loaded.W_enc, sae.W_enc)
    assert main(["-q", "export", str(old), "--format", "saelens", "--out", str(tmp_path / "new")]) == 0
    cfg = json.loads((tmp_path / "new" / "old" / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["normalize_activations"] == "none"
    assert cfg["randsae"]["seed"] == 3 and cfg["metadata"]["sae_lens_version"]
    assert isinstance(SAE.load_from_disk(str(tmp_path / "new" / "old")), StandardSAE)


def test_lm_latents_takes_their_saes(topk_run, tmp_path):
    """A sparsify folder (here randsae's export) and a single SAE directory through randsae's analysis."""
    from randsae.lm.latents import open_latents

    root, _ = topk_run
    small = ["--min-examples", "2", "--sample", "2", "--explainer-examples", "4", "--test-examples", "10",
             "--quantiles", "5", "--non-activating", "5", "--device", "cpu"]
    assert main(["-q", "export", str(root / "sae"), "--format", "sparsify", "--out", str(tmp_path / "sp")]) == 0
    assert main(["-q", "lm", "latents", "--sae", str(tmp_path / "sp"), "--acts", str(root / "acts"), *small,
                 "--out", str(tmp_path / "lat-sp")]) == 0
    assert main(["-q", "lm", "latents", "--sae", str(root / "sae"), *small, "--out", str(tmp_path / "lat")]) == 0
    theirs, ours = open_latents(tmp_path / "lat-sp"), open_latents(tmp_path / "lat")
    assert theirs.layers == ours.layers == [1, 2]
    assert [r.activations for r in theirs.summary(2)] == [r.activations for r in ours.summary(2)]
    assert main(["-q", "lm", "latents", "--sae", str(tmp_path / "sp" / "layers.2"), "--acts", str(root / "acts"),
                 "--layers", "2", *small, "--out", str(tmp_path / "lat-one")]) == 0
    assert open_latents(tmp_path / "lat-one").layers == [2]
    assert main(["lm", "latents", "--sae", str(tmp_path / "sp"), *small, "--out", str(tmp_path / "x")]) == 2
