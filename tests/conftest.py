import os
import socket

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    """One cache for the whole run, never the user's: a converted model is made once per test session."""
    previous = os.environ.get("RANDSAE_CACHE")
    os.environ["RANDSAE_CACHE"] = str(tmp_path_factory.mktemp("randsae-cache"))
    yield
    if previous is None:
        os.environ.pop("RANDSAE_CACHE", None)
    else:
        os.environ["RANDSAE_CACHE"] = previous


@pytest.fixture
def port() -> int:
    """A free TCP port on loopback (torchrun's rendezvous: tests run side by side under pytest-xdist)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, _session_cache):
    """A 3-block Llama with random weights, saved like any local model directory (the embedded model's
    tokenizer, so real text tokenises)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from randsae.lm.models import converted_gguf, embedded_gguf

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(converted_gguf(embedded_gguf("smollm2"))).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_latents(tiny_dir, tmp_path_factory):
    """Latent records of the tiny model (trained variant, blocks 0 and 2): activations, TopK SAEs, records
    with small example sets (6 explainer, 10 test, 10 silent windows per latent, 4 latents per layer)."""
    from randsae.cli import main

    root = tmp_path_factory.mktemp("tiny-autointerp")
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "8k", "--context-length", "64",
                 "--layers", "0,2", "--out", str(root / "acts")]) == 0
    # the paper's trainer (--recipe sparsify): these SAEs stand for any SAE whose latents are being explained
    assert main(["-q", "lm", "train", "--acts", str(root / "acts"), "--k", "4", "--expansion", "4",
                 "--batch-size", "256", "--device", "cpu", "--recipe", "sparsify", "--out",
                 str(root / "sae")]) == 0
    assert main(["-q", "lm", "latents", "--sae", str(root / "sae"), "--min-examples", "5", "--sample", "4",
                 "--max-examples", "50", "--explainer-examples", "6", "--test-examples", "10", "--quantiles", "5",
                 "--non-activating", "10", "--device", "cpu", "--out", str(root / "latents")]) == 0
    return root / "latents"
