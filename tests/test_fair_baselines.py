"""Baselines fitted where the SAE was fitted (docs/choices.md "Baselines fitted where the SAE was fitted"), on a
synthetic stream whose every context is dominated by one random offset, plus a small part carried by the token:
PCA fitted on a few held-out contexts captures their offsets and beats any code fitted elsewhere; PCA fitted on
the training contexts does not, and the gate follows the fitted one."""

import copy

import numpy as np
import pytest
import torch

from randsae.lm.quality import below_baselines, fit_baselines
from randsae.lm.token_filter import TokenFilter
from randsae.metrics import TokenQuality, chunk_bootstrap, chunk_weights, context_sums, percentile_interval
from randsae.tables import EvalRow
from randsae.training.trainer import TopKTrainConfig, TopKTrainer

D, LENGTH, VOCABULARY = 32, 64, 40


def stream(contexts: int, seed: int, offset: float = 4.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids: contexts × length, activations: contexts × length × D): a context offset (norm ~25 by
    default), each token's own vector of norm ~3, a little noise."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.Generator().manual_seed(99)  # the same vector for a token id in every stream
    by_token = 0.5 * torch.randn(VOCABULARY, D, generator=tokens)
    ids = torch.randint(0, VOCABULARY, (contexts, LENGTH), generator=generator)
    offsets = offset * torch.randn(contexts, 1, D, generator=generator)
    return ids, offsets + by_token[ids] + 0.1 * torch.randn(contexts, LENGTH, D, generator=generator)


def trained_sae(ids: torch.Tensor, hidden: torch.Tensor, steps: int):
    config = TopKTrainConfig(k=4, expansion=4, batch_size=512, lr=3e-3, warmup_steps=10, seed=0)
    sae = config.new_sae(D, 0, seed=0)
    trainer = TopKTrainer(sae, config, total_steps=steps)
    rows = hidden.reshape(-1, D)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))
    for step in range(steps):
        trainer.step(rows[order[(step * 512) % len(rows):][:512]])
    return sae.inference().eval()


def evaluated(sae, fitted, ids: torch.Tensor, hidden: torch.Tensor) -> TokenQuality:
    quality = TokenQuality(D, sae.num_latents, sae.k, fitted)
    with torch.no_grad():
        for batch_ids, batch in zip(ids.split(2), hidden.split(2), strict=True):
            x = batch.reshape(-1, D)
            values, indices = sae.encode(x)
            numbers = torch.arange(len(batch_ids))[:, None].expand_as(batch_ids).reshape(-1)
            quality.add(x, sae.decode(values, indices), values, indices, batch_ids.reshape(-1), numbers)
    return quality


@pytest.fixture(scope="module")
def world():
    train_ids, train = stream(200, seed=0)
    held_ids, held = stream(4, seed=1)
    return train_ids, train, held_ids, held, trained_sae(train_ids, train, steps=150)


def test_pca_fitted_on_the_evaluated_contexts_is_a_bound_and_the_gate_follows_the_fitted_one(world):
    train_ids, train, held_ids, held, sae = world
    sample = ((train_ids[i:i + 8], {0: train[i:i + 8]}) for i in range(0, len(train), 8))
    on_training, fitted = fit_baselines({0: sae}, sample, TokenFilter())
    assert fitted[0].tokens == train_ids.numel() and fitted[0].components == 4
    result = evaluated(sae, fitted[0], held_ids, held).result()
    # PCA fitted on 4 held-out contexts captures their 4 offsets: a bound the SAE, fitted elsewhere, cannot meet
    assert result["pca_in_sample_explained_variance"] > 0.85
    assert result["explained_variance"] < result["pca_in_sample_explained_variance"] - 0.2
    # PCA fitted on the training contexts cannot know these offsets: the SAE beats it
    assert result["pca_explained_variance"] < result["explained_variance"] - 0.1, result
    assert result["context_share"] > 0.8 and result["held_out_contexts"] == 4
    # every id was seen in training; the lookup knows the token part and nothing of the offset
    assert result["unseen_token_share"] == 0
    assert result["token_lookup_explained_variance"] < 0.2
    # on its own training tokens the SAE does better than on held-out text
    assert on_training[0].result()["explained_variance"] > result["explained_variance"]
    row = EvalRow("synthetic", "trained", 0, k=4, pca_components=4, **result, ce_loss_score=0.5)
    assert below_baselines(row) == ""  # the old rule (the bound) would have flagged it
    bound = EvalRow("synthetic", "trained", 0, k=4, pca_components=4,
                    explained_variance=result["explained_variance"],
                    pca_explained_variance=result["pca_in_sample_explained_variance"])
    assert below_baselines(bound).startswith("EV ")


def test_an_sae_below_the_fitted_pca_is_not_comparable_with_both_numbers(world):
    sae = copy.deepcopy(world[-1])
    train_ids, train = stream(50, seed=4, offset=0.0)  # the token alone: PCA fitted in training carries over
    held_ids, held = stream(4, seed=5, offset=0.0)
    with torch.no_grad():
        sae.W_dec.mul_(0.05)  # a decoder that hardly reconstructs: an SAE that did not train
    _, fitted = fit_baselines({0: sae}, iter([(train_ids, {0: train})]), TokenFilter())
    result = evaluated(sae, fitted[0], held_ids, held).result()
    assert result["pca_explained_variance"] > 0.3 and result["token_lookup_explained_variance"] > 0.9
    row = EvalRow("synthetic", "step0", 0, k=4, pca_components=4, **result, ce_loss_score=-0.2)
    flag = below_baselines(row)
    assert f"EV {result['explained_variance']:.3f} < PCA-4's {result['pca_explained_variance']:.3f}" in flag
    assert "CE loss score -0.200 < 0" in flag


def test_resampling_whole_contexts_is_wider_than_resampling_chunks_where_an_offset_dominates(world):
    train_ids, train, _, _, _ = world
    sae = trained_sae(train_ids, train, steps=150)
    held_ids, held = stream(12, seed=2)
    quality = evaluated(sae, None, held_ids, held)
    chunks = {k: v.numpy() for k, v in quality.chunk_sums().items()}
    contexts = context_sums(chunks)
    assert len(chunks["tokens"]) == 12 * LENGTH // TokenQuality.CHUNK and len(contexts["tokens"]) == 12
    whole = chunk_bootstrap(contexts, np.ones((1, 12)))["explained_variance"][0]
    assert whole == pytest.approx(quality.result()["explained_variance"], rel=1e-9)

    def width(sums: dict) -> float:
        draws = chunk_bootstrap(sums, chunk_weights(len(sums["tokens"]), 1000, seed=3))["explained_variance"]
        low, high = percentile_interval(draws)
        return high - low

    assert width(contexts) > 2 * width(chunks)
