"""The SAEs people release: JumpReLU, Gated, BatchTopK and Matryoshka BatchTopK, built by SAELens's
own classes with random weights and saved by SAELens; randsae reads each and must give SAELens's latents and
reconstruction (Δ ≤ 1e-5 relative), write it back so that SAELens reads the same SAE again, and refuse in one
sentence the settings it cannot honour."""

import json

import pytest
import torch
from sae_lens import (
    SAE,
    BatchTopKTrainingSAEConfig,
    GatedSAEConfig,
    JumpReLUSAEConfig,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE
from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAE

from randsae.errors import BadInput
from randsae.sae import GatedSAE, JumpReLUSAE, load
from randsae.sae.files import read_sae_files

D_IN, D_SAE = 24, 96


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random values in every parameter, thresholds and biases included (SAELens starts them at zero, which
    would hide a wrong sign or a missing term)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.05 if name in ("threshold", "r_mag") else 0.3
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (0.05 if name == "threshold" else 0.0))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(64, D_IN, generator=torch.Generator().manual_seed(seed))


def saved_by_saelens(kind: str, path, apply_b_dec_to_input: bool = True):
    """(the SAELens SAE whose numbers are the reference, the directory SAELens saved it in)."""
    if kind in ("jumprelu", "gated"):
        cfg_class = JumpReLUSAEConfig if kind == "jumprelu" else GatedSAEConfig
        sae = SAE.from_dict({**cfg_class(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec_to_input)
                             .to_dict()})
        randomise(sae, 0)
        sae.save_model(path)
        return sae, path
    # both ways of rescaling by the decoder's norms, one with each bias setting
    common = {"d_in": D_IN, "d_sae": D_SAE, "k": 8, "apply_b_dec_to_input": apply_b_dec_to_input,
              "rescale_acts_by_decoder_norm": apply_b_dec_to_input}
    if kind == "batchtopk":
        training = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common))
    else:
        training = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
            **common, matryoshka_widths=[32, D_SAE]))
    randomise(training, 0)
    training.topk_threshold = torch.tensor(0.4, dtype=torch.double)
    training.save_model(path / "checkpoint")  # the training checkpoint: architecture batchtopk, topk_threshold
    training.save_inference_model(path / "inference")  # what SAELens releases: a jumprelu SAE
    return SAE.load_from_disk(path / "inference"), path / "checkpoint"


@pytest.mark.parametrize("apply_b_dec", [True, False])
@pytest.mark.parametrize("kind", ["jumprelu", "gated", "batchtopk", "matryoshka_batchtopk"])
def test_randsae_reads_what_saelens_saves_with_the_same_numbers(kind, apply_b_dec, tmp_path):
    reference, directory = saved_by_saelens(kind, tmp_path, apply_b_dec)
    ours = load(directory)
    assert isinstance(ours, GatedSAE if kind == "gated" else JumpReLUSAE)
    x = inputs()
    with torch.no_grad():
        expected_z = reference.encode(x)
        expected_x = reference.decode(expected_z)
        z = ours.encode_dense(x)
        values, indices = ours.encode(x)
        sparse = ours.dense_latents(values, indices)
    active = (expected_z != 0).float().sum(dim=-1)
    assert 0 < active.mean() < D_SAE  # the thresholds matter: some latents fire, not all
    assert relative(z, expected_z) <= 1e-5
    assert torch.equal(z != 0, expected_z != 0)  # the same latents are active
    assert relative(ours.decode_dense(z), expected_x) <= 1e-5
    assert torch.equal(sparse, z)  # the sparse view holds every active latent
    assert relative(ours.decode(values, indices), expected_x) <= 1e-5


@pytest.mark.parametrize("kind", ["jumprelu", "gated", "batchtopk"])
def test_randsae_writes_them_back_and_saelens_reads_the_same_sae(kind, tmp_path):
    reference, directory = saved_by_saelens(kind, tmp_path / "lens")
    ours = load(directory)
    written = ours.save(tmp_path / "ours", metadata={"model_name": "m", "hook_name": "h"})
    again = SAE.load_from_disk(written)
    x = inputs(2)
    with torch.no_grad():
        assert relative(again.encode(x), reference.encode(x)) <= 1e-5
        assert relative(again.decode(again.encode(x)), reference.decode(reference.encode(x))) <= 1e-5
    assert json.loads((written / "cfg.json").read_text())["architecture"] == ("gated" if kind == "gated"
                                                                               else "jumprelu")
    assert read_sae_files(written)[0]["architecture"] == read_sae_files(directory)[0]["architecture"]


@pytest.mark.parametrize(("key", "value"), [("normalize_activations", "covariance_whitening"),
                                            ("normalize_activations", "expected_average_only_in"),
                                            ("reshape_activations", "hook_z"),
                                            ("apply_b_dec_to_input", "yes")])
def test_settings_that_change_the_numbers_are_refused_in_one_sentence(key, value, tmp_path):
    """(The per-token normalisations are honoured: tests/test_conventions.py.)"""
    _, directory = saved_by_saelens("jumprelu", tmp_path)
    cfg = json.loads((directory / "cfg.json").read_text())
    (directory / "cfg.json").write_text(json.dumps({**cfg, key: value}))
    with pytest.raises(BadInput, match=key):
        load(directory)


def test_a_jumprelu_sae_with_rescaled_acts_is_refused(tmp_path):
    _, directory = saved_by_saelens("jumprelu", tmp_path)
    cfg = json.loads((directory / "cfg.json").read_text())
    (directory / "cfg.json").write_text(json.dumps({**cfg, "rescale_acts_by_decoder_norm": True}))
    with pytest.raises(BadInput, match="rescale_acts_by_decoder_norm"):
        load(directory)
