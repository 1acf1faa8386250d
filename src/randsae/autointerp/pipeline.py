"""One latent through explainer and scorers; the known-answer set through the judge. Async, so an HTTP judge
works on many latents at once (its client bounds the requests in flight)."""

import asyncio
import time

from randsae.autointerp import prompts
from randsae.autointerp import scorers as S
from randsae.autointerp.calibration import known_answer_set
from randsae.autointerp.clients.base import Judge
from randsae.autointerp.explainer import explain
from randsae.autointerp.prompts import render
from randsae.autointerp.records import Calibration, LatentResult, ScorerResult
from randsae.lm.examples import ExampleSets
from randsae.metrics import percentile_interval, pooled_auroc, pooled_mean_draws
from randsae.scorer_kinds import SCORER_KINDS, named, needs_explanation
from randsae.seeding import derive_seed


async def score_latent(judge: Judge | None, sets: ExampleSets, identity: dict, entropy: float, decode,
                       scorers: list[str], style: str = "delphi", embedder=None, seed: int = 0,
                       explanation: str | None = None, max_tokens: int = 96,
                       negatives: tuple[str, ...] = ("random",)) -> LatentResult:
    """Explain a latent (unless `explanation` is given) and score it with each of `scorers` against each kind
    of `negatives` (random silent windows, the paper's; or hard ones: results named `scorer@kind`). A scorer
    that needs an explanation and has none counts every window as failed."""
    started = time.perf_counter()
    if explanation is None and any(needs_explanation(s) for s in scorers):
        assert judge is not None, "a scorer that needs an explanation needs a judge"
        explanation = await explain(judge, sets, decode, max_tokens)
    lookup = S.top_tokens(sets.explainer, decode)
    results: list[ScorerResult] = []
    for kind in negatives:
        shown = S.scoring_set(sets, decode, seed, kind)
        results += await score_set(judge, sets, shown, scorers, style, embedder, explanation, lookup, decode, kind,
                                   seed)
    return LatentResult(**identity, layer=sets.layer, latent=sets.latent, entropy=entropy, explanation=explanation,
                        top_tokens=lookup, results=results, seconds=time.perf_counter() - started)


async def score_set(judge: Judge | None, sets: ExampleSets, shown: "S.ScoringSet", scorers: list[str], style: str,
                    embedder, explanation: str | None, lookup: list[str], decode, kind: str,
                    seed: int = 0) -> list[ScorerResult]:
    """Every scorer's result on one scoring set (the test windows and one kind of silent windows), each with the
    seconds it took (its throughput, in windows per second, is then comparable across scorers)."""
    results: list[ScorerResult] = []
    for scorer in scorers:
        started = time.perf_counter()
        if scorer == "intruder":
            assert judge is not None, "the intruder scorer needs a judge"
            trials = S.intruder_trials(shown, seed, sets.layer, sets.latent, kind)
            named_index = await asyncio.gather(*(ask_intruder(judge, excerpts) for excerpts, _ in trials))
            result = S.intruder_result(named(scorer, kind), list(named_index), [at for _, at in trials])
        else:
            scores, threshold = await window_scores(judge, sets, shown, scorer, style, embedder, explanation,
                                                    lookup, decode)
            result = S.result(named(scorer, kind), scores, shown.labels, shown.quantiles, threshold)
        result.seconds = time.perf_counter() - started
        results.append(result)
    return results


async def window_scores(judge: Judge | None, sets: ExampleSets, shown: "S.ScoringSet", scorer: str, style: str,
                        embedder, explanation: str | None, lookup: list[str],
                        decode) -> tuple[list[float | None], float | None]:
    """One scorer's score per shown window, and the threshold its balanced accuracy reads them at (None: the
    median)."""
    if scorer == "tokens":
        return list[float | None](S.token_lookup(shown.shown, lookup)), None
    if scorer == "examples":
        return embedder.closeness([render(decode(w.tokens)) for w in sets.explainer],
                                  [render(w.tokens) for w in shown.shown]), None
    if explanation is None:
        return [None] * len(shown.labels), 0.5
    if scorer == "embedding":
        return embedder.similarity(explanation, [render(w.tokens) for w in shown.shown]), None
    assert judge is not None, f"the {scorer} scorer needs a judge"
    return await judge.judge(scorer, explanation, shown.shown, style), 0.5


async def ask_intruder(judge: Judge, excerpts: list[str]) -> int | None:
    """The index of the excerpt the judge names as the odd one out; −1 when its answer names none (a wrong
    answer: asking again gets the same); None when the call failed (asked again on a rerun)."""
    completion = await judge.generate(prompts.intruder_messages(excerpts), max_tokens=6,
                                      answer_start=prompts.INTRUDER_START)
    if completion is None:
        return None
    named = prompts.parse_intruder(completion.text, len(excerpts))
    return -1 if named is None else named


async def calibrate(judge: Judge, style: str = "delphi", windows_per_class: int = 20, seed: int = 0,
                    resamples: int = 1000, scorers: tuple[str, ...] = S.LLM_SCORERS) -> Calibration:
    """The judge on the known-answer set, given the true explanations: each of `scorers` (those that ask it)
    — fuzzing and detection AUROC, the intruder's accuracy."""
    sets, explanations, decode = known_answer_set(windows_per_class, seed)
    identity = {"model": "known-answer set", "variant": "calibration"}
    results = await asyncio.gather(*(
        score_latent(judge, s, identity, float("nan"), decode, list(scorers), style, seed=seed,
                     explanation=e) for s, e in zip(sets, explanations, strict=True)))
    out = {}
    for scorer in scorers:
        found = [s for r in results for s in r.results if s.scorer == scorer]
        pairs = [([p for p in s.probabilities if p is not None],
                  [y for p, y in zip(s.probabilities, s.labels, strict=True) if p is not None]) for s in found]
        extra = {}
        if SCORER_KINDS[scorer].measure == "accuracy":  # "auroc" holds the accuracy, "measure" says so
            point, draws = pooled_mean_draws([p for p, _ in pairs], resamples,
                                             derive_seed(seed, "calibration-bootstrap", scorer))
            low, high = percentile_interval(draws)
            extra = {"measure": "accuracy", "chance": 1 / S.INTRUDER_WINDOWS}
        else:
            point, low, high = pooled_auroc(pairs, resamples, derive_seed(seed, "calibration-bootstrap", scorer))
        out[scorer] = {"auroc": point, "low": low, "high": high, **extra, "latents": len(found),
                       "windows": sum(s.windows_scored for s in found),
                       "windows_failed": sum(s.windows_failed for s in found),
                       "per_latent": {e: s.accuracy if extra else s.auroc
                                      for e, s in zip(explanations, found, strict=True)}}
    return Calibration(judge.describe(), style, out)
