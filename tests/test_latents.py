"""Latent records: windows, example sets and entropy on hand-built data; the latent cache against direct
encoding; `randsae lm latents` and `lm compare --latents` end to end on a tiny model."""

import json
import math

import numpy as np
import pytest
import torch

from randsae.cli import main
from randsae.lm.activations import open_cache, write_safetensors
from randsae.lm.examples import ExampleSettings, LatentExamples, Windows, read_examples
from randsae.lm.latent_cache import open_latent_cache
from randsae.lm.latents import open_latents
from randsae.lm.source import read_held_out as load_held_out
from randsae.metrics import token_entropy, token_mass
from randsae.sae import load


def test_entropy_of_one_token_is_zero_and_of_n_even_tokens_is_log_n():
    assert token_entropy(np.array([7, 7, 7]), np.array([1.0, 2.0, 0.5])) == 0.0
    for n in (2, 5, 50):
        ids = np.repeat(np.arange(n), 3)
        assert token_entropy(ids, np.full(len(ids), 0.7)) == pytest.approx(math.log(n))
    # the mass, not the count, decides: two tokens with masses 3 and 1
    assert token_entropy(np.array([1, 2, 2, 2]), np.array([3.0, 1 / 3, 1 / 3, 1 / 3])) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    ids, mass = token_mass(np.array([5, 9, 5]), np.array([1.0, 2.0, 4.0]))
    assert ids.tolist() == [5, 9] and mass.tolist() == [5.0, 2.0]
    assert math.isnan(token_entropy(np.array([], dtype=int), np.array([])))


def test_windows_number_contexts_and_keep_a_short_last_window():
    w = Windows(context_length=64, window=32, num_contexts=3)
    assert w.per_context == 2 and w.count == 6
    assert w.of(np.array([0, 31, 32, 63, 64, 191])).tolist() == [0, 0, 1, 1, 2, 5]
    assert w.span(3) == (96, 128)
    short = Windows(context_length=40, window=32, num_contexts=2)
    assert short.per_context == 2 and short.span(1) == (32, 40) and short.span(2) == (40, 72)
    assert short.of(np.array([39, 40])).tolist() == [1, 2]


def synthetic_latent(num_contexts=400, context_length=64, seed=0):
    """A latent that fires on about a third of the windows, with activations rising with the window id."""
    rng = np.random.default_rng(seed)
    windows = Windows(context_length, 32, num_contexts)
    active = np.sort(rng.choice(windows.count, size=windows.count // 3, replace=False))
    positions = np.sort(np.concatenate([windows.span(w)[0] + rng.choice(32, size=2, replace=False)
                                        for w in active]))
    values = (1 + windows.of(positions) / windows.count).astype(np.float32) * rng.uniform(0.5, 1, len(positions))
    tokens = rng.integers(0, 1000, size=num_contexts * context_length)
    return windows, positions, values.astype(np.float32), tokens


def test_example_sets_have_the_paper_sizes_strata_and_silent_windows():
    windows, positions, values, tokens = synthetic_latent()
    settings = ExampleSettings(max_examples=200, min_examples=10)
    ex = LatentExamples(positions, values, windows, settings, layer=0, latent=3)
    assert len(ex.window_ids) == windows.count // 3
    # kept: the 200 strongest windows
    assert len(ex.kept) == 200 and ex.window_max[ex.kept].min() >= np.sort(ex.window_max)[-200]
    sets = ex.example_sets(tokens, layer=0, latent=3)
    assert len(sets.explainer) == 40 and len(sets.test) == 100 and len(sets.non_activating) == 100
    explainer_ids = {w.window for w in sets.explainer}
    assert not explainer_ids & {w.window for w in sets.test}  # the test set is not what the explainer saw
    assert [w.quantile for w in sets.test] == [q for q in range(10) for _ in range(10)]
    strata = [[w.max_activation for w in sets.test if w.quantile == q] for q in range(10)]
    assert all(max(a) <= min(b) for a, b in zip(strata, strata[1:], strict=False))  # strata ordered by activation
    active = set(ex.window_ids.tolist())
    for w in sets.non_activating:
        assert w.window not in active and w.max_activation == 0 and not any(w.activations)
    for w in sets.explainer + sets.test:
        start, stop = windows.span(w.window)
        assert w.tokens == tokens[start:stop].tolist()
        inside = (positions >= start) & (positions < stop)
        assert w.max_activation == pytest.approx(values[inside].max())
        assert np.flatnonzero(w.activations).tolist() == (positions[inside] - start).tolist()
    again = LatentExamples(positions, values, windows, settings, layer=0, latent=3).example_sets(tokens, 0, 3)
    assert again == sets  # seeded by (seed, layer, latent)
    other = LatentExamples(positions, values, windows, settings, layer=0, latent=4).example_sets(tokens, 0, 4)
    assert other.explainer != sets.explainer


def test_explainer_entropy_counts_only_the_explainer_windows():
    windows = Windows(64, 32, 100)
    positions = np.arange(0, 6400, 32)  # the first token of every window
    values = np.ones(len(positions), dtype=np.float32)
    tokens = np.zeros(6400, dtype=np.int64)
    tokens[positions] = np.arange(len(positions)) % 8  # eight token ids, evenly
    ex = LatentExamples(positions, values, windows, ExampleSettings(explainer_examples=7), 0, 0)
    chosen = tokens[positions[np.isin(ex.token_windows, ex.window_ids[ex.explainer])]]
    assert ex.explainer_entropy(tokens) == pytest.approx(token_entropy(chosen, np.ones(len(chosen))))
    assert token_entropy(tokens[positions], values) == pytest.approx(math.log(8))


def write_latent_cache(directory, shards):
    """A latent cache by hand: shards of (tokens, values, indices) for layer 0."""
    directory.mkdir()
    manifest = {"layers": [0], "context_length": 4, "k": {"0": 2}, "num_latents": {"0": 6}, "shards": []}
    for i, (tokens, values, indices) in enumerate(shards):
        name = f"shard-{i:05d}.safetensors"
        write_safetensors(directory / name, {"tokens": tokens, "layer.0.values": values,
                                             "layer.0.indices": indices})
        manifest["shards"].append({"file": name, "contexts": len(tokens)})
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return open_latent_cache(directory)


def test_the_index_groups_every_firing_entry_by_latent_in_cache_order(tmp_path):
    gen = torch.Generator().manual_seed(0)
    shards = []
    for contexts in (3, 2):
        tokens = torch.randint(0, 50, (contexts, 4), generator=gen)
        indices = torch.stack([torch.randperm(6, generator=gen)[:2] for _ in range(contexts * 4)]).int()
        values = torch.rand(contexts * 4, 2, generator=gen)
        values[values < 0.2] = 0  # kept by TopK but not firing
        shards.append((tokens, values, indices))
    cache = write_latent_cache(tmp_path / "lat", shards)
    index = cache.index(0)
    values = torch.cat([s[1] for s in shards]).numpy()
    indices = torch.cat([s[2] for s in shards]).numpy()
    for latent in range(6):
        positions, got = index.latent(latent)
        rows, cols = np.nonzero((indices == latent) & (values > 0))
        assert positions.tolist() == rows.tolist()  # ascending token positions
        assert got.tolist() == values[rows, cols].tolist()
    assert index.offsets[-1] == (values > 0).sum()
    assert cache.index(0).offsets.tolist() == index.offsets.tolist()  # built once, read back


TRAIN = ["--k", "4", "--expansion", "4", "--batch-size", "256", "--device", "cpu"]
SMALL = ["--min-examples", "5", "--sample", "8", "--max-examples", "50", "--explainer-examples", "6",
         "--test-examples", "10", "--quantiles", "5", "--non-activating", "10"]


@pytest.fixture(scope="module")
def tiny_runs(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-latents")
    for variant in ("trained", "control"):
        assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--variant", variant, "--tokens", "8k",
                     "--context-length", "64", "--layers", "0,2", "--out", str(root / "acts" / variant)]) == 0
        assert main(["-q", "lm", "train", "--acts", str(root / "acts" / variant), *TRAIN,
                     "--out", str(root / "sae" / variant)]) == 0
        assert main(["-q", "lm", "eval", "--sae", str(root / "sae" / variant), "--tokens", "512", "--device",
                     "cpu", "--out", str(root / "eval" / variant)]) == 0
        assert main(["-q", "lm", "latents", "--sae", str(root / "sae" / variant), *SMALL, "--device", "cpu",
                     "--out", str(root / "latents" / variant)]) == 0
    return root


def test_the_latent_cache_equals_encoding_the_activations_directly(tiny_runs):
    cache = open_cache(tiny_runs / "acts" / "trained")
    latents = open_latent_cache(tiny_runs / "latents" / "trained" / "cache")
    assert latents.num_tokens == cache.num_tokens and latents.layers == [0, 2]
    assert torch.equal(latents.tokens(), cache.tokens())
    for layer in (0, 2):
        sae = load(tiny_runs / "sae" / "trained" / f"layer.{layer}")
        x = torch.cat(list(cache.iter_batches(layer, 4096, shuffle=False)))
        with torch.no_grad():
            values, indices = sae.encode(x)
        shards = range(len(latents.manifest["shards"]))
        got_values = torch.cat([latents.read_shard(i, f"layer.{layer}.values") for i in shards])
        got_indices = torch.cat([latents.read_shard(i, f"layer.{layer}.indices") for i in shards])
        dense = sae.dense_latents(values, indices)
        torch.testing.assert_close(sae.dense_latents(got_values, got_indices.long()), dense, rtol=1e-5, atol=1e-6)


def test_records_read_back_and_agree_with_the_index(tiny_runs):
    rec = open_latents(tiny_runs / "latents" / "trained")
    assert rec.layers == [0, 2]
    rows = rec.summary(2)
    sampled = rec.sampled(2)
    assert len(sampled) == 8 and all(r.eligible for r in sampled)
    assert all(r.activating_windows >= 5 for r in rows if r.eligible)
    cache = open_latent_cache(tiny_runs / "latents" / "trained" / "cache")
    tokens = cache.tokens().numpy().ravel()
    index = cache.index(2)
    for row in rows[:20]:
        positions, values = index.latent(row.latent)
        assert row.activations == len(positions)
        assert row.firing_rate == pytest.approx(len(positions) / len(tokens))
        assert row.entropy_all == pytest.approx(token_entropy(tokens[positions], values))
        assert sum(row.top_token_shares) <= 1 + 1e-9 and row.top_token_shares == sorted(row.top_token_shares,
                                                                                         reverse=True)
        assert len(row.top_tokens) == len(row.top_token_ids)
    ex = rec.examples(2, sampled[0].latent)
    assert len(ex.explainer) == 6 and len(ex.test) <= 10 and len(ex.non_activating) == 10
    assert ex.explainer[0].tokens == tokens[ex.explainer[0].start:ex.explainer[0].start + 32].tolist()
    assert set(read_examples(tiny_runs / "latents" / "trained" / "examples" / "layer.2.jsonl")) == {
        r.latent for r in sampled}
    with pytest.raises(ValueError, match="was not sampled"):
        rec.examples(2, next(r.latent for r in rows if not r.sampled))


def test_a_rerun_resumes_and_changes_nothing(tiny_runs):
    out = tiny_runs / "latents" / "trained"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["-q", "lm", "latents", "--sae", str(tiny_runs / "sae" / "trained"), *SMALL, "--device", "cpu",
                 "--out", str(out)]) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(["-q", "lm", "latents", "--sae", str(tiny_runs / "sae" / "trained"), *SMALL[:-1], "20",
                 "--out", str(out)]) == 2  # other settings into the same directory


def test_compare_adds_the_entropy_row_table_and_histograms(tiny_runs, tmp_path):
    runs = tiny_runs
    assert main(["-q", "lm", "compare", str(runs / "eval" / "trained"), str(runs / "eval" / "control"),
                 "--latents", str(runs / "latents" / "trained"), str(runs / "latents" / "control"),
                 "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "entropy (nats)" in summary and "natural log" in summary and "meaningful for the trained model only" \
        in summary
    control = [line for line in summary.splitlines() if "| control | 2 | 8 |" in line]
    assert len(control) == 1
    from randsae.io import read_rows
    rows = read_rows(tmp_path / "results.csv")
    assert {"entropy_mean", "entropy_std", "sampled_latents"} <= set(rows[0])
    assert all(r["entropy_mean"] != "" for r in rows)
    assert (tmp_path / "entropy.png").stat().st_size > 10_000
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_on_the_fly_latents_come_from_contexts_the_sae_run_never_drew(tiny_runs, tiny_dir, tmp_path):
    out = tmp_path / "fly"
    assert main(["-q", "lm", "latents", "--sae", str(tiny_runs / "sae" / "trained"), "--model", str(tiny_dir),
                 "--variant", "trained", "--tokens", "4k", *SMALL, "--device", "cpu", "--out", str(out)]) == 0
    fly = open_latent_cache(out / "cache").tokens()
    assert fly.shape == (63, 64)  # 4k tokens in whole 64-token contexts
    used = torch.cat([open_cache(tiny_runs / "acts" / "trained").tokens(),
                      load_held_out(tiny_runs / "acts" / "trained")])
    assert not (fly[:, None, :] == used[None, :, :]).all(-1).any()  # no context of the run's is reused
    rec = open_latents(out)
    assert rec.layers == [0, 2] and len(rec.sampled(0)) == 8
    assert rec.config["on_the_fly"] is True
    assert main(["lm", "latents", "--sae", str(tiny_runs / "sae" / "trained"), "--model", str(tiny_dir),
                 "--variant", "control", "--out", str(tmp_path / "other")]) == 2


def test_hard_negatives_hold_the_top_tokens_or_a_neighbours_firing_and_are_silent(tiny_latents):
    """similar-tokens: silent windows holding one of the latent's top tokens; neighbours: silent windows where
    one of its nearest latents by decoder cosine fires. Both silent: the latent never fires in them."""
    import numpy as np

    from randsae.lm.examples import NEIGHBOURS, Windows
    from randsae.lm.latent_cache import open_latent_cache
    from randsae.lm.latents import nearest_latents, open_latents
    from randsae.sae import load

    records = open_latents(tiny_latents)
    cache = open_latent_cache(tiny_latents / "cache")
    found = {"similar-tokens": 0, "neighbours": 0}
    for layer in records.layers:
        index = cache.index(layer)
        windows = Windows(cache.context_length, records.config["examples"]["window"], cache.num_contexts)
        decoder = load(tiny_latents.parent / "sae" / f"layer.{layer}").W_dec.detach().numpy()
        for summary in records.sampled(layer):
            sets = records.examples(layer, summary.latent)
            active = set(windows.of(index.latent(summary.latent)[0]).tolist())
            neighbours = nearest_latents(decoder, summary.latent, NEIGHBOURS)
            firing = set(np.concatenate([windows.of(index.latent(j)[0]) for j in neighbours]).tolist())
            for w in sets.similar_tokens:
                assert w.window not in active and not any(w.activations)
                assert set(w.tokens) & set(summary.top_token_ids)
            for w in sets.neighbours:
                assert w.window not in active and not any(w.activations)
                assert w.window in firing
            found["similar-tokens"] += len(sets.similar_tokens)
            found["neighbours"] += len(sets.neighbours)
            assert {w.window for w in sets.similar_tokens}.isdisjoint(active)
    assert found["similar-tokens"] > 10 and found["neighbours"] > 10
