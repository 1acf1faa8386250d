"""Auto-interpretability: AUROC and its interval, prompts and answers, the scorers proven on judges whose
answers are known (a scripted judge behind real HTTP on loopback), faults, unreachable judges, the local
judge's prefix cache, the embedding scorer on explanations swapped between latents, and the CLI end to end."""

import asyncio
import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from judges import ScriptedJudge, truth_map

from randsae.autointerp import prompts
from randsae.autointerp.records import read_calibration, read_latents, read_summary
from randsae.autointerp.scorers import SCORERS
from randsae.cli import main
from randsae.metrics import auroc, balanced_accuracy, pooled_auroc, spearman, spearman_interval

FAST = ["--calibration-windows", "10", "--bootstrap", "200", "-q"]


# --- numbers ---

def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_auroc_is_the_pairwise_win_rate_with_ties_half():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 5, size=30).astype(float)  # many ties
        labels = rng.integers(0, 2, size=30)
        if labels.all() or not labels.any():
            continue
        assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    assert balanced_accuracy([0.9, 0.8, 0.2, 0.6], [1, 1, 0, 0]) == pytest.approx(0.75)


def test_pooled_auroc_interval_brackets_the_point_and_narrows_with_more_latents():
    rng = np.random.default_rng(1)

    def groups(n):
        out = []
        for _ in range(n):
            labels = np.r_[np.ones(20), np.zeros(20)]
            out.append((labels * 0.6 + rng.normal(0, 0.5, 40), labels))
        return out

    point, low, high = pooled_auroc(groups(10), 500, seed=0)
    assert low <= point <= high and 0.5 < point < 1
    _, low_many, high_many = pooled_auroc(groups(100), 500, seed=0)
    assert high_many - low_many < high - low
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ρ's interval resamples latents: it holds ρ, narrows with more latents, and is NaN below three
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    rho, low, high = spearman_interval(x[:20], y[:20], 500)
    assert low <= rho <= high
    rho_many, low_many, high_many = spearman_interval(x, y, 500)
    assert high_many - low_many < high - low and low_many > 0.4
    assert all(math.isnan(v) for v in spearman_interval([1, 2], [3, 4]))


# --- prompts ---

def test_marks_share_one_pair_over_consecutive_tokens_and_follow_the_threshold():
    tokens = ["a", " b", " c", " d", " e"]
    marked = prompts.marks([0.0, 3.0, 10.0, 2.9, 5.0])  # threshold 0.3 × 10 = 3
    assert marked == [False, True, True, False, True]
    assert prompts.render(tokens, marked) == "a<< b c>> d<< e>>"
    assert prompts.marks([0.0, 0.0]) == [False, False]
    messages = prompts.explainer_messages([(tokens, [0.0, 3.0, 10.0, 2.9, 5.0])], latent_max=20.0)
    assert '("b", 2), ("c", 5), ("e", 2)' in messages[1]["content"]


def test_explanation_is_read_from_the_last_line_and_lists_from_inside_brackets():
    assert prompts.parse_explanation("thinking...\n[EXPLANATION]: first\n[EXPLANATION]: the word love") == \
        "the word love"
    assert prompts.parse_explanation("no line here") is None

    def entry(token, p=None):
        top = [] if p is None else [{"token": "1", "logprob": math.log(p)},
                                    {"token": "0", "logprob": math.log(1 - p)}]
        return {"token": token, "logprob": 0.0, "top_logprobs": top}

    numbered = [entry("1"), entry("."), entry(" "), entry("0", 0.3), entry("\n"), entry("2"), entry("."),
                entry("1", 0.6)]
    assert prompts.probabilities(numbered, 2) == [None, None]  # digits outside a list are not answers
    assert prompts.probabilities([entry("1", 0.7)], 1) == pytest.approx([0.7])  # one window: a bare digit
    listed = [entry("["), entry("1", 0.8), entry(", "), entry("0", 0.3), entry("]")]
    assert prompts.probabilities(listed, 2) == pytest.approx([0.8, 0.3])
    assert prompts.probabilities(listed, 3)[2] is None


# --- the local judge ---

def test_local_judge_prefix_cache_gives_the_full_forward_pass(tiny_dir):
    from randsae.autointerp.clients.local import SENTINEL, LocalJudge

    judge = LocalJudge(str(tiny_dir), device="cpu", batch_size=3)
    windows = [prompts.Shown([" I", " love", " thee"], [False, True, False]),
               prompts.Shown([" the", " king", " is", " dead", " long", " live"], [False, True, False, False,
                                                                                  False, True]),
               prompts.Shown([","], [True]), prompts.Shown([" good"] * 9, [True] * 9)]
    cached = asyncio.run(judge.judge("fuzzing", "the word love", windows))
    prefix, template = judge.split("fuzzing", "the word love", "delphi")
    for window, p in zip(windows, cached, strict=True):
        suffix = template.replace(SENTINEL, prompts.excerpt(window, "fuzzing"))
        ids = torch.tensor([judge._encode(prefix) + judge._encode(suffix)])
        with torch.no_grad():
            logp = torch.log_softmax(judge.model(ids).logits[0, -1].float(), -1)
        p0, p1 = logp[judge.digits["0"]].exp().sum(), logp[judge.digits["1"]].exp().sum()
        assert p == pytest.approx(float(p1 / (p0 + p1)), abs=1e-4)


# --- the embedding scorer on known latents ---

def test_swapped_explanations_drive_the_embedding_scorer_toward_chance():
    from randsae.autointerp.calibration import known_answer_set
    from randsae.autointerp.clients.embedding import EmbeddingModel
    from randsae.autointerp.pipeline import score_latent

    sets, explanations, decode = known_answer_set(20, seed=0)
    embedder = EmbeddingModel()
    swapped = explanations[3:] + explanations[:3]

    def pooled(given):
        results = [asyncio.run(score_latent(None, s, {"model": "m", "variant": "v"}, 0.0, decode, ["embedding"],
                                            embedder=embedder, explanation=e))
                   for s, e in zip(sets, given, strict=True)]
        return pooled_auroc([(r.results[0].probabilities, r.results[0].labels) for r in results], 200)

    true, low, _ = pooled(explanations)
    wrong = pooled(swapped)[0]
    assert true > 0.7 and low > 0.5
    assert abs(wrong - 0.5) < abs(true - 0.5) - 0.15


def test_example_embedding_separates_the_known_latents_and_falls_to_chance_with_another_latents_windows():
    """No explanation, no judge: held-out activating windows sit closer to the latent's explainer windows than
    silent ones do — and no closer once the explainer windows are another latent's."""
    from randsae.autointerp.calibration import known_answer_set
    from randsae.autointerp.clients.embedding import EmbeddingModel
    from randsae.autointerp.pipeline import score_latent

    sets, _, decode = known_answer_set(20, seed=0, explainer_examples=8)
    embedder = EmbeddingModel()

    def pooled(explainers):
        results = []
        for s, explainer in zip(sets, explainers, strict=True):
            s = dataclasses.replace(s, explainer=explainer)
            results.append(asyncio.run(score_latent(None, s, {"model": "m", "variant": "v"}, 0.0, decode,
                                                    ["examples"], embedder=embedder)))
        assert all(r.explanation is None and r.results[0].windows_failed == 0 for r in results)
        return pooled_auroc([(r.results[0].probabilities, r.results[0].labels) for r in results], 200)

    own = [s.explainer for s in sets]
    true, low, _ = pooled(own)
    assert low > 0.5 and true > 0.6
    swapped, swapped_low, swapped_high = pooled(own[3:] + own[:3])
    assert abs(swapped - 0.5) < abs(true - 0.5) - 0.1
    assert swapped_low < 0.5 + (true - 0.5) / 2  # its interval reaches down toward chance


# --- the scripted judge over HTTP ---

def run_autointerp(latents, out, url, *extra, model="scripted"):
    return main(["lm", "autointerp", "--latents", str(latents), "--llm-url", url, "--llm-model", model,
                 "--scorers", "fuzzing,detection,tokens", "--timeout", "1", "--retries", "1",
                 "--retry-backoff", "0.02", *FAST, *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def truth(tiny_latents):
    return truth_map(tiny_latents, calibration_windows=10)


@pytest.mark.parametrize("mode, expected", [("truthful", 1.0), ("inverted", 0.0)])
def test_scoring_logic_follows_the_judge(tiny_latents, truth, tmp_path, mode, expected):
    with ScriptedJudge(mode, truth) as judge:
        assert run_autointerp(tiny_latents, tmp_path / mode, judge.url, "--negatives",
                              "random,similar-tokens,neighbours") == 0
    summary = read_summary(tmp_path / mode / "summary.csv")
    for row in summary:
        if row.scorer.partition("@")[0] in ("fuzzing", "detection"):  # against random and hard negatives
            assert row.auroc == pytest.approx(expected) and row.latents == 4 and row.windows_failed == 0
            assert row.judge_at_chance is (expected < 0.5)  # an inverting judge is no judge either
    # each kind of negatives reported apart, every scorer against each
    kinds = ("", "@similar-tokens", "@neighbours")
    assert {r.scorer for r in summary if r.layer == 0} == {
        f"{s}{kind}" for s in ("fuzzing", "detection", "tokens") for kind in kinds}
    calibration = read_calibration(tmp_path / mode / "calibration.json")
    assert calibration.scorers["fuzzing"]["auroc"] == pytest.approx(expected)
    results = read_latents(tmp_path / mode)
    assert all(r.explanation.startswith("scripted ") for r in results) and len(results) == 8


def test_intruder_accuracy_is_one_for_a_truthful_judge_zero_for_an_inverted_one_chance_for_a_coin(
        tiny_latents, truth, tmp_path):
    """The judge names the odd one out of 4 activating windows and 1 silent one: accuracy against chance 1/5,
    pooled over trials, with an interval over latents; its calibration on the known-answer set says whether
    it can do that at all."""
    from randsae.autointerp.scorers import INTRUDER_TRIALS, INTRUDER_WINDOWS

    found = {}
    for mode in ("truthful", "inverted", "random"):
        with ScriptedJudge(mode, truth, seed=7) as judge:
            assert run_autointerp(tiny_latents, tmp_path / mode, judge.url, "--scorers", "intruder,tokens") == 0
        rows = [r for r in read_summary(tmp_path / mode / "summary.csv") if r.scorer == "intruder"]
        assert len(rows) == 2 and all(math.isnan(r.auroc) and r.chance == 1 / INTRUDER_WINDOWS for r in rows)
        assert all(r.accuracy_low <= r.accuracy <= r.accuracy_high for r in rows)
        results = [s for r in read_latents(tmp_path / mode) for s in r.results if s.scorer == "intruder"]
        assert all(0 < s.windows_scored <= INTRUDER_TRIALS and s.windows_failed == 0 for s in results)
        assert sum(s.windows_scored for s in results) >= 6 * INTRUDER_TRIALS  # a trial per silent window
        found[mode] = (rows, read_calibration(tmp_path / mode / "calibration.json"))
    assert all(r.accuracy == 1.0 for r in found["truthful"][0])
    assert all(r.accuracy == 0.0 for r in found["inverted"][0])
    truthful, inverted, coin = (found[m][1] for m in ("truthful", "inverted", "random"))
    assert truthful.scorers["intruder"]["auroc"] == 1.0 and not truthful.at_chance("intruder")
    assert inverted.scorers["intruder"]["auroc"] == 0.0 and inverted.at_chance("intruder")
    # a coin: near 1/5 over the known-answer set's 80 trials, and flagged
    assert abs(coin.scorers["intruder"]["auroc"] - 0.2) < 0.1 and coin.at_chance("intruder")
    assert "intruder accuracy" in coin.label("intruder") and "(chance 0.20)" in coin.label("intruder")
    assert all(r.judge_at_chance for r in found["random"][0])
    assert all(0.0 <= r.accuracy <= 0.6 for r in found["random"][0])


def test_a_random_judge_scores_near_chance_and_is_flagged(tiny_latents, truth, tmp_path):
    with ScriptedJudge("random", truth, seed=3) as judge:
        assert run_autointerp(tiny_latents, tmp_path / "random", judge.url) == 0
    rows = [r for r in read_summary(tmp_path / "random" / "summary.csv") if r.scorer in ("fuzzing", "detection")]
    for row in rows:
        assert 0.3 < row.auroc < 0.7 and row.auroc_low <= row.auroc <= row.auroc_high
        assert row.judge_at_chance is True
    text = (tmp_path / "random" / "scores.csv").read_text()
    assert text.count("\n") == 1 + 2 * 4 * 3  # header + 2 layers × 4 latents × 3 scorers
    assert (tmp_path / "random" / "entropy_auroc.png").stat().st_size > 10_000


def test_faults_are_counted_and_a_rerun_fills_only_what_failed(tiny_latents, truth, tmp_path):
    out = tmp_path / "faulty"
    with ScriptedJudge("truthful", truth, fail=0.3, hang=0.05, malformed=0.05, no_logprobs=0.05, hang_seconds=1.5,
                       seed=5) as judge:
        assert run_autointerp(tiny_latents, out, judge.url, "--retries", "0") == 0
        faults = judge.requests["faults"]
    assert faults > 5
    failed_windows = sum(s.windows_failed for r in read_latents(out) for s in r.results)
    summary = read_summary(out / "summary.csv")
    assert failed_windows > 0 and sum(r.windows_failed for r in summary) == failed_windows
    calls = [json.loads(line) for line in (out / "llm_calls.jsonl").read_text().splitlines()]
    failed_calls = [c for c in calls if c["response"] is None]
    assert failed_calls and all(c["error"] for c in failed_calls)
    # the rerun against a healthy judge asks again what failed (calibration included), and nothing that had
    # succeeded; new calls only where a failed explanation had stopped a latent's scoring
    succeeded = {c["key"] for c in calls if c["response"] is not None}
    failed_keys = {c["key"] for c in failed_calls} - succeeded
    with ScriptedJudge("truthful", truth) as healthy:
        assert run_autointerp(tiny_latents, out, healthy.url) == 0
        asked = healthy.requests["chat"]
    new = [json.loads(line) for line in (out / "llm_calls.jsonl").read_text().splitlines()[len(calls):]]
    assert len(new) == asked and all(c["response"] is not None for c in new)
    assert failed_keys <= {c["key"] for c in new} and not succeeded & {c["key"] for c in new}
    assert all(r.complete for r in read_latents(out))
    for row in read_summary(out / "summary.csv"):
        if row.scorer in ("fuzzing", "detection"):
            assert row.auroc == pytest.approx(1.0) and row.windows_failed == 0
    with ScriptedJudge("truthful", truth) as again:  # everything done: nothing is asked
        assert run_autointerp(tiny_latents, out, again.url) == 0
        assert again.requests["chat"] == 0


def test_retries_ride_out_server_errors(tiny_latents, truth, tmp_path):
    """30% of requests answered with HTTP 500: with retries every window is scored, and the numbers are the
    truthful judge's."""
    with ScriptedJudge("truthful", truth, fail=0.3, seed=11) as judge:
        assert run_autointerp(tiny_latents, tmp_path / "retry", judge.url, "--retries", "6") == 0
        assert judge.requests["faults"] > 10
    for row in read_summary(tmp_path / "retry" / "summary.csv"):
        assert row.windows_failed == 0 and row.latents_incomplete == 0
        if row.scorer in ("fuzzing", "detection"):
            assert row.auroc == pytest.approx(1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_judge_stops_the_run_before_any_work(tiny_latents, tmp_path):
    out = tmp_path / "refused"
    run = subprocess.run([sys.executable, "-m", "randsae", "lm", "autointerp", "--latents", str(tiny_latents),
                          "--llm-url", f"http://127.0.0.1:{free_port()}/v1", "--llm-model", "x",
                          "--retries", "0", "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "cannot reach the judge" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not out.exists()
    with ScriptedJudge("truthful") as judge:
        run = subprocess.run([sys.executable, "-m", "randsae", "lm", "autointerp", "--latents", str(tiny_latents),
                              "--llm-url", judge.url, "--llm-model", "llama-70b", "--out", str(out)],
                             capture_output=True, text=True)
        assert judge.requests["chat"] == 0
    assert run.returncode == 2 and "does not serve model 'llama-70b'" in run.stderr and not out.exists()


@pytest.mark.slow
def test_concurrency_bounds_requests_in_flight(tiny_latents, truth, tmp_path):
    for concurrency in (1, 6):
        with ScriptedJudge("truthful", truth, latency=0.05) as judge:
            assert run_autointerp(tiny_latents, tmp_path / f"c{concurrency}", judge.url, "--concurrency",
                                  str(concurrency)) == 0
        if concurrency == 1:
            assert judge.most_in_flight == 1
        else:
            assert 1 < judge.most_in_flight <= concurrency


def test_different_settings_in_the_same_directory_are_refused(tiny_latents, truth, tmp_path):
    with ScriptedJudge("truthful", truth) as judge:
        assert run_autointerp(tiny_latents, tmp_path / "s", judge.url) == 0
        assert run_autointerp(tiny_latents, tmp_path / "s", judge.url, "--prompt-format", "simple") == 2


# --- end to end with the local judge, and the comparison ---

@pytest.mark.slow
def test_local_judge_end_to_end_and_compare(tiny_latents, tiny_dir, tmp_path):
    out = tmp_path / "local"
    assert main(["lm", "autointerp", "--latents", str(tiny_latents), "--llm", str(tiny_dir), "--latents-per-layer",
                 "2", "--explainer-tokens", "8", "--device", "cpu", *FAST, "--out", str(out)]) == 0
    summary = read_summary(out / "summary.csv")
    assert {r.scorer for r in summary} == set(SCORERS)  # every scorer by default
    assert all(r.latents == 2 for r in summary)
    assert read_calibration(out / "calibration.json").judge["backend"] == "local"
    kept = list((Path(os.environ["RANDSAE_CACHE"]) / "calibration").glob("*.json"))
    assert len(kept) == 1 and read_calibration(kept[0]) == read_calibration(out / "calibration.json")
    lines = (out / "explanations.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("top_tokens" in json.loads(line) for line in lines)
    # a rerun answers every call from the log
    assert main(["lm", "autointerp", "--latents", str(tiny_latents), "--llm", str(tiny_dir), "--latents-per-layer",
                 "2", "--explainer-tokens", "8", "--device", "cpu", *FAST, "--out", str(out)]) == 0
    eval_dir = tmp_path / "eval"
    sae = tiny_latents.parent / "sae"
    assert main(["-q", "lm", "eval", "--sae", str(sae), "--tokens", "512", "--device", "cpu", "--out",
                 str(eval_dir)]) == 0
    compare = tmp_path / "compare"
    assert main(["-q", "lm", "compare", str(eval_dir), "--latents", str(tiny_latents), "--autointerp", str(out),
                 "--out", str(compare)]) == 0
    text = (compare / "summary.md").read_text()
    assert "fuzzing AUROC" in text and "AT CHANCE" in text or "judge" in text
    header = (compare / "results.csv").read_text().splitlines()[0].split(",")
    assert {"auroc_fuzzing", "auroc_low_fuzzing", "judge_at_chance"} <= set(header)
    assert (compare / "entropy_auroc.png").is_file() and (compare / "comparison.png").is_file()
    # Fig. 20's correlation as a table beside the figure: a row per variant and layer, with its interval
    from randsae.tables import CorrelationRow, read_table

    rows = read_table(compare / "correlations.csv", CorrelationRow)
    assert {(r.variant, r.layer) for r in rows} == {("trained", 0), ("trained", 2)}
    for r in rows:
        assert r.scorer == "fuzzing" and r.latents == 2
        assert r.spearman is None  # two latents: too few for a rank correlation, and said so
    assert "too few latents" in (compare / "summary.md").read_text()


def test_token_lookup_separates_the_known_latents():
    """The scoring set's labels and fuzzing marks: on the known-answer set the token-lookup scorer (no LLM)
    separates activating from silent windows."""
    from randsae.autointerp.calibration import known_answer_set
    from randsae.autointerp.pipeline import score_latent

    sets, explanations, decode = known_answer_set(20, seed=0)
    aurocs = [asyncio.run(score_latent(None, s, {"model": "m", "variant": "v"}, 0.0, decode, ["tokens"],
                                       explanation=e)).results[0].auroc
              for s, e in zip(sets, explanations, strict=True)]
    assert np.mean(aurocs) > 0.9 and min(aurocs) > 0.7


def test_a_latent_is_complete_without_an_explanation_only_when_no_scorer_needs_one():
    from randsae.autointerp.records import LatentResult, ScorerResult

    def latent(scorer, explanation=None, failed=0):
        return LatentResult("m", "v", 0, 1, 0.0, explanation, [], [ScorerResult(scorer, 0.5, 0.5, 10, failed)])

    assert latent("tokens").complete and not latent("fuzzing").complete
    assert latent("fuzzing", "the word love").complete and not latent("fuzzing", "x", failed=1).complete


def test_an_intruder_answer_that_names_no_excerpt_is_wrong_and_a_failed_call_is_failed():
    from randsae.autointerp.prompts import parse_intruder
    from randsae.autointerp.scorers import intruder_result

    assert parse_intruder("Intruder: excerpt 3", 5) == 2 and parse_intruder(" 5.", 5) == 4
    assert parse_intruder("Intruder: excerpt 9 or maybe 2", 5) == 1 and parse_intruder("none of them", 5) is None
    result = intruder_result("intruder", [2, -1, None, 0], [2, 2, 2, 2])
    assert result.probabilities == [1.0, 0.0, None, 0.0]
    assert (result.windows_scored, result.windows_failed, result.accuracy) == (3, 1, pytest.approx(1 / 3))
