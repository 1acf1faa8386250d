"""Released SAEs measured as they were trained: contexts that begin with BOS and have the SAE's context size
for every arm of a study (unless the user says otherwise), and SAELens's normalisations of the activations
applied as SAELens applies them — each checked against SAELens's own loader on the same files."""

import json
import logging

import pytest
import torch
from sae_lens import SAE

from randsae.errors import BadInput
from randsae.lm.source import Source, open_source
from randsae.lm.text import contexts, embedded_documents
from randsae.sae import load_language_sae
from randsae.sae.thresholded import JumpReLUSAE
from randsae.sae.topk import TopKSAE

D, LATENTS = 32, 64


def released(directory, architecture: str = "topk", **edits):
    """A random SAE saved in SAELens's layout, its cfg.json then edited as a released SAE's would say."""
    torch.manual_seed(0)
    if architecture == "topk":
        sae = TopKSAE(D, LATENTS, k=6, seed=1)
    else:
        sae = JumpReLUSAE(D, LATENTS)
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.3)
            sae.W_dec.normal_(0, 0.3)
            sae.threshold.uniform_(0.05, 0.3)
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.5)
        sae.b_enc.normal_(0, 0.1)
    sae.save(directory)
    cfg = json.loads((directory / "cfg.json").read_text())
    metadata = edits.pop("metadata", {})
    cfg.update(edits)
    cfg["metadata"].update(metadata)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return directory


def activations() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(40, D) * torch.linspace(0.5, 4, 40)[:, None] + 1.5  # tokens of very different norms


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
@pytest.mark.parametrize("norm", ["layer_norm", "constant_norm_rescale"])
def test_a_per_token_normalisation_is_applied_as_saelens_applies_it(tmp_path, architecture, norm):
    path = released(tmp_path / "sae", architecture, normalize_activations=norm)
    ours, theirs, x = load_language_sae(path), SAE.load_from_disk(str(path)), activations()
    with torch.no_grad():
        values, indices = ours.encode(x)
        reconstruction = ours.decode(values, indices)
        assert torch.allclose(ours.dense_latents(values, indices), theirs.encode(x), atol=1e-4)
        assert torch.allclose(reconstruction, theirs(x), atol=1e-4)
        ours.input_normalization = "none"  # what reading it as it is would give: other numbers
        assert not torch.allclose(ours.decode(*ours.encode(x)), reconstruction, atol=1e-2)
    ours.input_normalization = norm
    ours.save(tmp_path / "again")  # written back as it was read
    assert json.loads((tmp_path / "again" / "cfg.json").read_text())["normalize_activations"] == norm


def test_one_factor_for_all_activations_is_folded_in_as_saelens_folds_it(tmp_path):
    path = released(tmp_path / "sae", normalize_activations="expected_average_only_in", norm_scaling_factor=2.5)
    theirs = SAE.load_from_disk(str(path))
    theirs.fold_activation_norm_scaling_factor(2.5)
    ours, x = load_language_sae(path), activations()
    with torch.no_grad():
        assert torch.allclose(ours.decode(*ours.encode(x)), theirs(x), atol=1e-4)
    unfolded = released(tmp_path / "bare", normalize_activations="expected_average_only_in")
    with pytest.raises(BadInput, match="holds no norm_scaling_factor .* fold it in with SAELens's"):
        load_language_sae(unfolded)
    odd = released(tmp_path / "odd", normalize_activations="covariance_whitening")
    with pytest.raises(BadInput, match="normalize_activations 'covariance_whitening' is not supported"):
        load_language_sae(odd)


def test_bos_first_contexts_hold_one_token_less_of_the_same_text():
    from transformers import AutoTokenizer

    from randsae.lm.models import converted_gguf, embedded_gguf

    tokenizer = AutoTokenizer.from_pretrained(converted_gguf(embedded_gguf("smollm2")))
    docs = list(embedded_documents())[:3]
    with_bos = contexts(tokenizer, iter(docs), 16, max_contexts=20, prepend_bos=True)
    plain = contexts(tokenizer, iter(docs), 15, max_contexts=20)
    assert (with_bos[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(with_bos[:, 1:], plain) and with_bos.shape == (20, 16)


def test_a_source_with_bos_gives_every_context_a_bos_token(tiny_dir):
    _, tokenizer, train, held_out = open_source(Source(model=str(tiny_dir), tokens=640, context_length=32,
                                                       prepend_bos=True), torch.device("cpu"))
    assert (train[:, 0] == tokenizer.bos_token_id).all() and (held_out[:, 0] == tokenizer.bos_token_id).all()
    assert (train[:, 1:] != tokenizer.bos_token_id).any()


def test_a_study_takes_the_released_saes_bos_and_context_size_unless_told_otherwise(tiny_dir, tmp_path, caplog):
    from randsae.study.preflight import preflight
    from randsae.study.settings import settings_for, text_conventions

    sae = released(tmp_path / "sae", metadata={"hook_name": "blocks.1.hook_resid_post", "prepend_bos": True,
                                               "context_size": 48})
    settings = settings_for("demo", {"model": str(tiny_dir), "sae": str(sae), "layers": "1"})
    assert settings.context_length != 48 and settings.prepend_bos is None  # the preset's, before the SAEs are read
    preflight(settings, plan=True)
    assert (settings.context_length, settings.prepend_bos) == (48, True)
    assert "each beginning with the BOS token" in text_conventions(settings)

    asked = settings_for("demo", {"model": str(tiny_dir), "sae": str(sae), "layers": "1", "context_length": 64,
                                  "prepend_bos": False})
    with caplog.at_level(logging.WARNING, logger="randsae"):
        preflight(asked, plan=True, given={"context_length", "prepend_bos"})
    assert (asked.context_length, asked.prepend_bos) == (64, False)
    assert "trained with --context-length 48, but the study makes every arm's contexts with --context-length " \
           "64" in caplog.text
    assert "trained with --prepend-bos, but the study makes every arm's contexts with --no-prepend-bos" \
        in caplog.text

    other = released(tmp_path / "other", metadata={"hook_name": "blocks.2.hook_resid_post", "prepend_bos": False})
    both = tmp_path / "both"
    both.mkdir()
    (sae.rename(both / "layers.1"), other.rename(both / "layers.2"))
    mixed = settings_for("demo", {"model": str(tiny_dir), "sae": str(both), "layers": "all"})
    with pytest.raises(BadInput, match="were trained on differently made inputs"):
        preflight(mixed, plan=True)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_twins_train_on_inputs_normalised_as_the_released_saes_were(tiny_dir, tmp_path, architecture):
    """`--input-normalization` (what a study sets from a released SAE's): the SAE trains on normalised
    activations, records it as SAELens does, and SAELens's own loader gives its numbers."""
    from randsae.cli import main

    out = tmp_path / "twin"
    assert main(["-q", "lm", "train", "--model", str(tiny_dir), "--tokens", "2048", "--context-length", "32",
                 "--layers", "1", "--k", "4", "--expansion", "2", "--batch-size", "256", "--architecture",
                 architecture, "--input-normalization", "constant_norm_rescale", "--no-check", "--device", "cpu",
                 "--out", str(out)]) == 0
    cfg = json.loads((out / "layer.1" / "cfg.json").read_text())
    assert cfg["normalize_activations"] == "constant_norm_rescale"
    ours, x = load_language_sae(out / "layer.1"), activations()
    assert ours.input_normalization == "constant_norm_rescale"
    if architecture == "topk":  # SAELens reads a BatchTopK training checkpoint only through its own trainer
        with torch.no_grad():
            assert torch.allclose(ours.decode(*ours.encode(x)), SAE.load_from_disk(str(out / "layer.1"))(x),
                                  atol=1e-4)
    assert main(["lm", "train", "--model", str(tiny_dir), "--input-normalization", "whiten", "--out",
                 str(tmp_path / "bad")]) == 2


def test_a_study_trains_its_twins_with_the_released_saes_normalisation(tiny_dir, tmp_path):
    from randsae.study.preflight import preflight
    from randsae.study.settings import settings_for, train_config_for

    sae = released(tmp_path / "sae", normalize_activations="layer_norm",
                   metadata={"hook_name": "blocks.1.hook_resid_post"})
    settings = settings_for("demo", {"model": str(tiny_dir), "sae": str(sae), "layers": "1"})
    check = preflight(settings, plan=True)
    assert check.sae_normalization == "layer_norm"
    assert train_config_for(settings, check, "control")[0].input_normalization == "layer_norm"


def test_a_normalised_twin_learns_as_well_as_a_plain_one(tiny_dir, tmp_path):
    """Trained on normalised inputs, its loss compares the reconstruction with those inputs (not with them mapped
    back): its held-out EV, measured in the model's units, is that of the same SAE trained on the inputs as
    they are, within a few hundredths."""
    import csv

    from randsae.cli import main

    final = {}
    for norm in ("none", "layer_norm"):
        out = tmp_path / norm
        assert main(["-q", "lm", "train", "--model", str(tiny_dir), "--tokens", "8192", "--context-length", "32",
                     "--layers", "1", "--k", "4", "--expansion", "2", "--input-normalization", norm, "--no-check",
                     "--device", "cpu", "--out", str(out)]) == 0
        rows = list(csv.DictReader((out / "curve.csv").open()))
        final[norm] = float(rows[-1]["held_out_explained_variance"])
    assert final["none"] > 0.3
    assert abs(final["layer_norm"] - final["none"]) < 0.1, final
