"""The verdict's rules on hand-built measures: every outcome (differs, the same within ±δ, cannot tell, not
comparable and each of its reasons), seeds against the one-seed bootstrap, the per-scorer judge flag, the
sentence per layer; and the statistics under them (Student's t, Welch, the chunk bootstrap)."""

import math

import numpy as np
import pytest

from randsae.metrics import chunk_bootstrap, chunk_weights, t_quantile, welch_interval
from randsae.scorer_kinds import SCORER_KINDS
from randsae.study.verdict import (
    CANNOT_TELL,
    DIFFERS,
    METRICS,
    NOT_COMPARABLE,
    SAME,
    LayerVerdict,
    Measure,
    VerdictSettings,
    compare_arms,
    decide,
    verdict_rows,
)

SETTINGS = VerdictSettings()


def seeds(variant: str, metric: str, values: list[float], layer: int = 3, **flags) -> list[Measure]:
    return [Measure(variant, i, layer, metric, v, **flags) for i, v in enumerate(values)]


def one(variant: str, metric: str, draws: np.ndarray, layer: int = 3, **flags) -> list[Measure]:
    return [Measure(variant, 0, layer, metric, float(np.mean(draws)), draws, **flags)]


def verdict(metric: str, trained: list[Measure], twin: list[Measure]):
    return compare_arms(METRICS[metric], trained, twin, SETTINGS, 3, twin[0].variant if twin else "step0")


def test_students_t_and_welch_match_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.95, 4) == pytest.approx(2.132, abs=1e-3)
    assert t_quantile(0.975, 200) == pytest.approx(1.972, abs=1e-3)
    # equal variances and sizes: Welch's df is 2(n − 1); the half-width t · sqrt(s²/n + s²/n)
    low, high = welch_interval(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]), 0.95)
    half = t_quantile(0.975, 4) * math.sqrt(2 / 3)
    assert (low, high) == pytest.approx((1 - half, 1 + half))
    # one value on one side adds no spread of its own
    low, high = welch_interval(np.array([5.0]), np.array([1.0, 2.0, 3.0]), 0.95)
    assert (low + high) / 2 == pytest.approx(3.0)
    assert high - 3 == pytest.approx(t_quantile(0.975, 2) / math.sqrt(3))


def test_the_decision_rule_and_its_edges():
    assert decide(0.10, (0.06, 0.14), (0.07, 0.13), 0.05)[0] == DIFFERS
    assert decide(0.01, (-0.02, 0.04), (-0.01, 0.03), 0.05)[0] == SAME
    assert decide(0.01, (-0.09, 0.11), (-0.07, 0.09), 0.05)[0] == CANNOT_TELL
    # excludes 0 but smaller than δ, and the 90% interval leaves ±δ: not "differs", not "the same"
    outcome, reason = decide(0.04, (0.01, 0.07), (0.015, 0.065), 0.05)
    assert outcome == CANNOT_TELL and "|difference| ≤ δ" in reason
    # excludes 0, smaller than δ, 90% inside ±δ: the same within δ (a real but negligible difference)
    assert decide(0.02, (0.005, 0.035), (0.008, 0.032), 0.05)[0] == SAME


def test_seeds_that_differ_clearly_differ_and_seeds_that_agree_are_the_same():
    trained = seeds("trained", "explained_variance", [0.80, 0.81, 0.79, 0.80])
    far = verdict("explained_variance", trained, seeds("step0", "explained_variance", [0.60, 0.61, 0.59, 0.60]))
    assert far.outcome == DIFFERS and far.difference == pytest.approx(0.20) and far.low95 > 0.02
    assert far.basis == "4 seeds per arm" and far.seeds == 4
    near = verdict("explained_variance", trained, seeds("step0", "explained_variance", [0.801, 0.80, 0.79, 0.805]))
    assert near.outcome == SAME and -0.02 < near.low90 < near.high90 < 0.02
    noisy = verdict("explained_variance", trained, seeds("step0", "explained_variance", [0.5, 0.9, 0.7, 1.0]))
    assert noisy.outcome == CANNOT_TELL and noisy.low95 < 0 < noisy.high95
    # each arm's own interval is over its seeds
    assert far.trained_low < 0.80 < far.trained_high and far.twin_low < 0.60 < far.twin_high


def test_one_seed_uses_the_bootstrap_draws_paired_by_index():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, 1000)  # the same tokens' difficulty moves both arms together
    trained = one("trained", "cosine_sim", 0.90 + shared)
    twin = one("rerandomized", "cosine_sim", 0.895 + shared + rng.normal(0, 0.001, 1000))
    row = verdict("cosine_sim", trained, twin)
    assert row.basis == "1 seed: bootstrap over held-out contexts"
    assert row.outcome == SAME and row.high95 - row.low95 < 0.01  # paired: the shared spread cancels
    assert row.trained_high - row.trained_low > 0.15  # …while each arm alone is wide
    entropy = verdict("entropy_mean", one("trained", "entropy_mean", rng.normal(2.0, 0.05, 1000), latents=30),
                      one("step0", "entropy_mean", rng.normal(3.0, 0.05, 1000), latents=30))
    assert entropy.outcome == DIFFERS and entropy.basis == "1 seed: bootstrap over latents"
    nothing = verdict("cosine_sim", [Measure("trained", 0, 3, "cosine_sim", 0.9)],
                      [Measure("step0", 0, 3, "cosine_sim", 0.8)])
    assert nothing.outcome == CANNOT_TELL and "nothing to resample" in nothing.reason


def test_every_reason_for_not_comparable_is_named():
    good = seeds("trained", "explained_variance", [0.80, 0.81])
    trained_below = seeds("trained", "explained_variance", [0.8, 0.8], below_baseline="CE<0")
    below = verdict("explained_variance", trained_below, seeds("step0", "explained_variance", [0.2, 0.2]))
    assert below.outcome == NOT_COMPARABLE
    assert below.reason == "the trained model's SAE is below its baselines (CE<0)"
    assert below.trained == pytest.approx(0.8)  # the values are still shown
    twin_below = verdict("explained_variance", good, seeds("step0", "explained_variance", [0.2, 0.25],
                                                           below_baseline="EV<PCA-32"))
    assert twin_below.outcome == NOT_COMPARABLE
    assert twin_below.reason == "step0's SAE is below its baselines (EV<PCA-32)"
    missing = verdict("explained_variance", good, [Measure("step0", 0, 3, "explained_variance", None)])
    assert missing.outcome == NOT_COMPARABLE and "not measured" in missing.reason
    few = verdict("entropy_mean", seeds("trained", "entropy_mean", [2.0, 2.1], latents=30),
                  seeds("step0", "entropy_mean", [3.0, 3.1], latents=5))
    assert few.outcome == NOT_COMPARABLE and few.reason == "5 scored latents in an arm, fewer than 20"


def test_a_judge_at_chance_on_fuzzing_only_leaves_detection_and_token_lookup_counted():
    def arm(variant, value, chance, scorer):
        return seeds(variant, SCORER_KINDS[scorer].column, [value, value + 0.01, value - 0.01], latents=40,
                     judge_at_chance=chance)

    fuzzing = verdict("auroc_fuzzing", arm("trained", 0.9, True, "fuzzing"), arm("step0", 0.6, True, "fuzzing"))
    assert fuzzing.outcome == NOT_COMPARABLE and fuzzing.reason == "the judge is at chance on fuzzing"
    detection = verdict("auroc_detection", arm("trained", 0.9, False, "detection"),
                        arm("step0", 0.6, False, "detection"))
    assert detection.outcome == DIFFERS
    tokens = verdict("auroc_token_lookup", arm("trained", 0.8, False, "tokens"),
                     arm("step0", 0.79, False, "tokens"))
    assert tokens.outcome == SAME and tokens.delta == 0.05


def test_l1s_delta_is_relative_to_the_trained_mean():
    row = verdict("l1", seeds("trained", "l1", [40.0, 40.2, 39.8]), seeds("step0", "l1", [38.0, 38.1, 37.9]))
    assert row.delta == pytest.approx(4.0) and row.outcome == SAME


def test_rows_per_layer_metric_and_twin_and_the_sentence():
    measures = [*seeds("trained", "explained_variance", [0.80, 0.81]),
                *seeds("rerandomized", "explained_variance", [0.60, 0.61]),
                *seeds("step0", "explained_variance", [0.2, 0.2], below_baseline="EV<PCA-4"),
                *seeds("trained", "cosine_sim", [0.90, 0.901, 0.899, 0.90]),
                *seeds("rerandomized", "cosine_sim", [0.905, 0.904, 0.906, 0.905]),
                *seeds("step0", "cosine_sim", [0.5, 0.5], below_baseline="EV<PCA-4")]
    rows = verdict_rows(measures, SETTINGS)
    # every metric for each twin, unmeasured ones saying so (those --scorers can leave out: only where run)
    assert len(rows) == sum(not m.optional for m in METRICS.values()) * 2
    assert [r.twin for r in rows[:2]] == ["rerandomized", "step0"]  # the study's order
    outcome = {(r.metric, r.twin): r.outcome for r in rows}
    assert outcome["explained_variance", "rerandomized"] == DIFFERS
    assert outcome["cosine_sim", "rerandomized"] == SAME
    assert outcome["explained_variance", "step0"] == NOT_COMPARABLE
    sentence = LayerVerdict(3, rows).sentence()
    # rerandomized is the one twin that counts: no list of twins after the metrics
    assert sentence.startswith("a random network gives the same result on cosine similarity; "
                               "a different one on explained variance; not comparable on ")
    assert "step0's SAE is below its baselines (EV<PCA-4)" in sentence
    assert "not measured for every seed of both arms" in sentence


def test_bad_deltas_are_refused_in_one_sentence():
    from randsae.errors import BadInput

    with pytest.raises(BadInput, match=r"--delta-auroc must be a positive number, not -0.1\."):
        VerdictSettings(delta_auroc=-0.1).validate()


def test_an_interval_over_two_seeds_stays_inside_the_metrics_range():
    auroc = SCORER_KINDS["fuzzing"].column
    row = verdict(auroc, seeds("trained", auroc, [0.9, 0.3], latents=30), seeds("control", auroc, [0.5, 0.52],
                                                                                 latents=30))
    assert 0 <= row.trained_low < row.trained_high <= 1  # Student's t with 1 df alone: [-3.2, 4.4]
    assert -1 <= row.low95 < row.high95 <= 1 and row.basis == "2 seeds per arm"
    ev = verdict("explained_variance", seeds("trained", "explained_variance", [0.99, 0.5]),
                 seeds("step0", "explained_variance", [0.3, 0.31]))
    assert ev.trained_high == 1 and ev.trained_low < 0  # explained variance has no floor
    mixed = verdict("explained_variance", seeds("trained", "explained_variance", [0.8, 0.81, 0.79]),
                    seeds("step0", "explained_variance", [0.3, 0.31]))
    assert mixed.basis == "3 seeds of the trained arm, 2 of the twin"


def test_the_chunk_bootstrap_gives_the_metrics_of_the_whole_when_every_chunk_is_drawn_once():
    from randsae.metrics import TokenQuality

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.randn(100, 8)
    x_hat = x + 0.3 * torch.randn(100, 8)
    values, indices = torch.rand(100, 2), torch.randint(0, 16, (100, 2))
    quality = TokenQuality(8, 16, 2)
    quality.add(x[:60], x_hat[:60], values[:60], indices[:60])
    quality.add(x[60:], x_hat[60:], values[60:], indices[60:])
    sums = {k: v.numpy() for k, v in quality.chunk_sums().items()}
    assert len(sums["tokens"]) == 4 + 3 and sums["tokens"].sum() == 100  # 16 tokens a chunk, per batch
    whole = chunk_bootstrap(sums, np.ones((1, len(sums["tokens"]))))
    result = quality.result()
    for name in ("explained_variance", "cosine_sim", "l1"):
        assert whole[name][0] == pytest.approx(result[name], rel=1e-9)
    weights = chunk_weights(7, 500, seed=1)
    assert weights.shape == (500, 7) and (weights.sum(1) == 7).all()
    assert (chunk_weights(7, 500, seed=1) == weights).all()  # the same units, the same draws: paired


def test_the_sentence_says_a_twin_that_is_not_comparable_anywhere_once():
    measures = []
    for metric in METRICS:
        measures += seeds("trained", metric, [0.80, 0.81, 0.80], latents=30)
        measures += seeds("rerandomized", metric, [0.50, 0.51, 0.50], latents=30)
        measures += seeds("step0", metric, [0.2, 0.2, 0.2], latents=30, below_baseline="EV<PCA-4")
    sentence = LayerVerdict(3, verdict_rows(measures, SETTINGS)).sentence()
    assert sentence.startswith("a random network gives a different result on explained variance, ")
    assert sentence.endswith("; not comparable on any metric of step0: step0's SAE is below its baselines "
                             "(EV<PCA-4).")
