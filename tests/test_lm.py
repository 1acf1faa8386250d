"""Language models and their random twins, on the embedded SmolLM2-135M and a tiny Llama."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from randsae.lm import load_model, make_variant
from randsae.lm.models import embedded_gguf
from randsae.lm.variants import norm_parameters


@pytest.fixture(scope="session")
def smollm2():
    model, tokenizer = load_model("smollm2")
    again, _ = load_model("smollm2")  # from the converted copy
    return model, tokenizer, again


@pytest.fixture
def tiny():
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.slow
def test_embedded_model_converts_once_and_matches_the_gguf(smollm2):
    model, tokenizer, again = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    ids = tokenizer("To be, or not to be, that is the question", return_tensors="pt").input_ids
    gguf = embedded_gguf("smollm2")
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, direct(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["rerandomized", "rerandomized-no-embed"])
def test_rerandomized_tensors_keep_their_statistics(smollm2, variant):
    model = smollm2[0]
    twin = make_variant(model, variant, seed=3)
    norms = norm_parameters(model)
    embed = model.get_input_embeddings().weight
    changed = 0
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        if id(p) in norms or (variant == "rerandomized-no-embed" and p is embed):
            assert torch.equal(p, q), name
            continue
        changed += 1
        if p.numel() >= 1000:
            assert abs(q.mean() - p.mean()) <= 0.02 * p.std(), name
            assert abs(q.std() / p.std() - 1) < 0.02, name
            assert not torch.equal(p, q), name
    assert changed > 100
    if variant == "rerandomized-no-embed":  # tied unembedding: still the same, trained tensor
        assert torch.equal(twin.get_input_embeddings().weight, embed)
        assert twin.get_output_embeddings().weight is twin.get_input_embeddings().weight


def test_input_model_untouched_and_same_seed_same_weights(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    a = make_variant(tiny, "rerandomized", seed=1)
    b = make_variant(tiny, "rerandomized", seed=1)
    c = make_variant(tiny, "rerandomized", seed=2)
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)


def test_norms_are_kept_unless_asked(tiny):
    kept = make_variant(tiny, "rerandomized", seed=0)
    redrawn = make_variant(tiny, "rerandomized", seed=0, rerandomize_norms=True)
    norm = tiny.model.layers[0].input_layernorm.weight
    torch.testing.assert_close(kept.model.layers[0].input_layernorm.weight, norm)
    assert redrawn.model.layers[0].input_layernorm.weight.shape == norm.shape


def block_inputs(model, ids):
    with torch.no_grad():
        return model(ids, output_hidden_states=True).hidden_states[0][0]


def test_control_gives_each_occurrence_fresh_noise(tiny):
    ids = torch.tensor([[5, 7, 5, 5, 9]])
    trained = block_inputs(make_variant(tiny, "trained"), ids)
    torch.testing.assert_close(trained[0], trained[2])
    control = make_variant(tiny, "control", seed=4, control_std=2.0)
    noise = block_inputs(control, ids)
    assert not torch.allclose(noise[0], noise[2]) and not torch.allclose(noise[2], noise[3])
    assert 1.5 < noise.std() < 2.5
    again = block_inputs(make_variant(tiny, "control", seed=4, control_std=2.0), ids)
    torch.testing.assert_close(noise, again)  # the same seed gives the same activations
    torch.testing.assert_close(control.get_output_embeddings().weight, tiny.get_output_embeddings().weight)


def test_step0_without_a_hub_revision_is_a_seeded_fresh_init(tiny):
    a = make_variant(tiny, "step0", seed=5)
    b = make_variant(tiny, "step0", seed=5)
    assert a.randsae_variant["step0_source"] == "initialisation from the model's config under seed 5"
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.model.layers[1].self_attn.q_proj.weight, tiny.model.layers[1].self_attn.q_proj.weight)


@pytest.fixture
def local_model_dir(tmp_path, tiny, monkeypatch):
    """The tiny Llama saved as `models/mine`, a relative path under the working directory (tokenizer from
    the embedded model, vocabulary widened to match)."""
    from transformers import AutoTokenizer, LlamaConfig

    from randsae.lm.models import converted_gguf

    tokenizer = AutoTokenizer.from_pretrained(converted_gguf(embedded_gguf("smollm2")))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    monkeypatch.chdir(tmp_path)
    model.save_pretrained("models/mine")
    tokenizer.save_pretrained("models/mine")
    return "models/mine"


def test_step0_of_a_relative_local_directory_is_a_fresh_init_not_the_trained_weights(local_model_dir):
    trained, _ = load_model(local_model_dir)
    step0 = make_variant(trained, "step0", seed=0)
    assert step0.randsae_variant["step0_source"].startswith("initialisation from the model's config")
    weight = "model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(dict(step0.named_parameters())[weight], dict(trained.named_parameters())[weight])


def test_step0_cli_activations_of_a_relative_directory_differ_from_the_trained_ones(local_model_dir):
    from randsae.cli import main
    from randsae.lm.activations import open_cache

    for variant in ("trained", "step0"):
        assert main(["-q", "lm", "activations", "--model", local_model_dir, "--variant", variant, "--layers", "1",
                     "--tokens", "2k", "--context-length", "64", "--out", f"acts-{variant}"]) == 0
    trained, step0 = (next(open_cache(f"acts-{v}").iter_batches(1, 512, shuffle=False))
                      for v in ("trained", "step0"))
    assert not torch.allclose(trained, step0)
    record = json.loads(Path("acts-step0/manifest.json").read_text())["variant"]
    assert record["step0_source"].startswith("initialisation from the model's config")


def test_hub_step0_with_the_trained_weights_is_refused(tiny, monkeypatch):
    """A hub whose step0 revision serves the trained weights (a test double: no hub here)."""
    import copy

    tiny.randsae_origin = {"name": "org/model", "hub": True, "revision": None, "path": None}
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: copy.deepcopy(tiny))
    with pytest.raises(ValueError, match="has the trained model's weights"):
        make_variant(tiny, "step0")


def test_bad_names_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        make_variant(torch.nn.Linear(2, 2), "shuffled")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_model(str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError, match="dtype"):
        load_model("smollm2", dtype="int3")


def test_hub_names_go_through_transformers_and_fail_in_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here: the real loading path, answered offline
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # (read when the hub client is imported)
    with pytest.raises(ValueError, match="model 'EleutherAI/pythia-70m' is not in the local Hugging Face "
                                         "cache and HF_HUB_OFFLINE is set"):
        load_model("EleutherAI/pythia-70m", revision="step0")


@pytest.mark.slow
def test_cached_activations_of_the_embedded_model_equal_hidden_states(smollm2, tmp_path):
    from randsae.lm.activations import cache_activations, open_cache
    model = smollm2[0]
    rows = torch.randint(0, 49152, (3, 24))
    cache_activations(model, rows, [0, 14, 28], tmp_path, batch_size=2, progress=False)
    with torch.no_grad():
        hidden = model(rows, output_hidden_states=True).hidden_states
    cache = open_cache(tmp_path)
    for layer in (0, 14, 28):
        cached = torch.cat(list(cache.iter_batches(layer, 16, shuffle=False)))
        expected = hidden[layer + 1].reshape(-1, 576)
        # float16 keeps 11 significant bits: equal to within its rounding (plus batch-size noise)
        torch.testing.assert_close(cached, expected, rtol=2e-3, atol=1e-3)
