import os

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
