"""Text, contexts and the residual-stream cache, on a tiny Llama and on the embedded SmolLM2."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from randsae.cli import main
from randsae.cli.common import parse_count
from randsae.lm import make_variant
from randsae.lm.activations import cache_activations, open_cache, parse_layers, residual_stream
from randsae.lm.models import converted_gguf, embedded_gguf
from randsae.lm.text import contexts, documents, split_contexts, strip_markdown


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(converted_gguf(embedded_gguf("smollm2")))


@pytest.fixture
def tiny():
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def test_markdown_is_stripped():
    text = "# Hamlet\n\n## ACT I\n\n**HAMLET**  \nTo be, or not to be_  \n_Exit_ it's a well_known word\n"
    assert strip_markdown(text) == "Hamlet\n\nACT I\n\nHAMLET\nTo be, or not to be\nExit it's a well_known word\n"


def test_embedded_corpus_contexts_are_disjoint_and_deterministic(tokenizer):
    rows = contexts(tokenizer, documents("shakespeare"), context_length=64, max_contexts=300)
    assert rows.shape == (300, 64)
    train, held_out = split_contexts(rows, 0.1, seed=3)
    assert len(train) == 270 and len(held_out) == 30
    assert not {tuple(r) for r in train.tolist()} & {tuple(r) for r in held_out.tolist()}
    again, _ = split_contexts(rows, 0.1, seed=3)
    assert torch.equal(train, again) and not torch.equal(train, split_contexts(rows, 0.1, seed=4)[0])


def test_local_files_and_eos_joins(tokenizer, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one two three"}\n\n{"text": "four five"}\n')
    rows = contexts(tokenizer, documents(str(tmp_path / "a.jsonl")), context_length=4)
    flat = rows.flatten().tolist()
    assert tokenizer.eos_token_id in flat
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        list(documents(str(tmp_path / "bad.jsonl")))
    with pytest.raises(FileNotFoundError):
        list(documents(str(tmp_path / "missing.txt")))


def test_hooked_blocks_equal_hidden_states_and_stop_early(tiny):
    ids = torch.randint(0, 49152, (2, 16))
    with torch.no_grad():
        hidden = tiny(ids, output_hidden_states=True).hidden_states
    acts = residual_stream(tiny, ids, [0, 2])
    for layer in (0, 2):
        torch.testing.assert_close(acts[layer], hidden[layer + 1])
    calls = []
    tiny.model.layers[3].register_forward_hook(lambda *a: calls.append(1))
    residual_stream(tiny, ids, [1])
    assert not calls  # blocks after the last one asked for never run


def test_cache_round_trip_shards_resume_and_batches(tiny, tmp_path):
    rows = torch.randint(0, 49152, (10, 8))
    out = tmp_path / "acts"
    cache_activations(tiny, rows, [0, 3], out, batch_size=2, shard_contexts=4, progress=False)
    cache = open_cache(out)
    assert cache.layers == [0, 3] and cache.d_model == 32 and cache.context_length == 8
    assert cache.num_tokens == 80 and torch.equal(cache.tokens(), rows)
    with torch.no_grad():
        hidden = tiny(rows, output_hidden_states=True).hidden_states
    ordered = torch.cat(list(cache.iter_batches(0, 7, shuffle=False)))
    torch.testing.assert_close(ordered, hidden[1].reshape(-1, 32), rtol=1e-3, atol=1e-3)  # float16
    shuffled = torch.cat(list(cache.iter_batches(3, 7, shuffle=True, seed=1)))
    assert not torch.equal(shuffled, torch.cat(list(cache.iter_batches(3, 7, shuffle=False))))
    torch.testing.assert_close(shuffled.sort(dim=0).values,
                               torch.cat(list(cache.iter_batches(3, 7, shuffle=False))).sort(dim=0).values)
    assert [len(b) for b in cache.iter_batches(0, 7, shuffle=True)] == [7] * 11 + [3]
    # resume: drop the last shard from the manifest, rerun, get it back unchanged
    manifest = json.loads((out / "manifest.json").read_text())
    before = (out / "shard-00002.safetensors").read_bytes()
    manifest["shards"] = manifest["shards"][:2]
    (out / "manifest.json").write_text(json.dumps(manifest))
    cache_activations(tiny, rows, [0, 3], out, batch_size=2, shard_contexts=4, progress=False)
    assert open_cache(out).num_tokens == 80 and (out / "shard-00002.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="layers"):
        cache_activations(tiny, rows, [1], out, batch_size=2, shard_contexts=4, progress=False)


def test_same_seed_same_control_activations(tiny):
    ids = torch.randint(0, 49152, (1, 12))
    a = residual_stream(make_variant(tiny, "control", seed=7), ids, [1])[1]
    b = residual_stream(make_variant(tiny, "control", seed=7), ids, [1])[1]
    torch.testing.assert_close(a, b)


def test_parsers():
    assert parse_count("1M") == 1_000_000 and parse_count("500k") == 500_000 and parse_count("2048") == 2048
    with pytest.raises(ValueError):
        parse_count("lots")
    assert parse_layers("all", 3) == [0, 1, 2] and parse_layers("2,0", 3) == [0, 2]
    for bad in ("3", "-1", "a,b"):
        with pytest.raises(ValueError):
            parse_layers(bad, 3)


@pytest.mark.slow
def test_cli_caches_the_embedded_model(tmp_path):
    out = tmp_path / "acts"
    assert main(["-q", "lm", "activations", "--variant", "control", "--layers", "0,5", "--tokens", "2k",
                 "--context-length", "128", "--out", str(out)]) == 0
    cache = open_cache(out)
    assert cache.num_tokens == 2048 and cache.d_model == 576
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variant"]["variant"] == "control" and manifest["dtype"] == "float16"
    assert main(["-q", "lm", "activations", "--layers", "31", "--out", str(tmp_path / "x")]) == 2
    assert main(["-q", "lm", "activations", "--tokens", "many", "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow
def test_token_embeddings_as_toy_data_and_as_vectors(tmp_path):
    from randsae.io import read_rows

    out = tmp_path / "emb"
    assert main(["-q", "toy", "--data", "embeddings:smollm2,sharkey", "--transform", "none", "--latents", "64",
                 "--l1", "0.1", "--seeds", "1", "--epochs", "1", "--num-samples", "500", "--no-plots",
                 "--out", str(out)]) == 0
    rows = {r["data"]: r for r in read_rows(out / "results.csv")}
    assert rows["embeddings:smollm2"]["input_dim"] == "576" and rows["sharkey"]["input_dim"] == "256"
    assert rows["embeddings:smollm2"]["mmcs"] == ""
    vectors = tmp_path / "vec"
    assert main(["-q", "glove", "--vectors", "embeddings:smollm2", "--latent-multiples", "1", "--l1", "1",
                 "--epochs", "1", "--transform", "none", "--no-plots", "--out", str(vectors)]) == 0
    assert {r["data"] for r in read_rows(vectors / "results.csv")} == {"glove", "gaussian"}
    assert main(["-q", "toy", "--data", "embeddings:", "--out", str(tmp_path / "bad")]) == 2


@pytest.mark.slow
def test_datasets_streaming_path_on_a_local_data_set(tokenizer, tmp_path, monkeypatch):
    # the code that streams RedPajama from the hub, pointed at a local directory laid out as a data set
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    data = tmp_path / "corpus" / "data"
    data.mkdir(parents=True)
    (data / "train-00000.jsonl").write_text(
        "".join(json.dumps({"body": f"document number {i} " * 20}) + "\n" for i in range(30)))
    docs = documents(str(tmp_path / "corpus"), text_column="body", split="train")
    rows = contexts(tokenizer, docs, context_length=32, max_contexts=10)
    assert rows.shape == (10, 32) and "document number 0" in tokenizer.decode(rows[0])
    with pytest.raises(ValueError, match="no column 'text'"):
        next(documents(str(tmp_path / "corpus"), text_column="text"))
    with pytest.raises(ValueError, match="cannot stream data set"):
        next(documents("no-such-org/no-such-data-set"))


def test_activations_beyond_the_cache_dtype_are_refused(tiny, tmp_path):
    with torch.no_grad():
        tiny.get_input_embeddings().weight.mul_(1e9)  # block outputs far past float16's 65,504
    ids = torch.randint(0, 49152, (2, 8))
    with pytest.raises(ValueError, match="does not fit the cache dtype"):
        cache_activations(tiny, ids, [0], tmp_path / "f16", batch_size=2, progress=False)
    cache_activations(tiny, ids, [0], tmp_path / "f32", batch_size=2, dtype="float32", progress=False)
    assert torch.isfinite(next(open_cache(tmp_path / "f32").iter_batches(0, 16))).all()
