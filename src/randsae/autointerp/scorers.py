"""The scorers (docs/paper.md §2.3) and what they are scored on.

Every scorer sees the same windows of a latent: its test set (activating, label 1) and its non-activating
set (label 0), shuffled together under the seed. For fuzzing, activating windows carry their true marks and
each non-activating window gets ceil(mean number of active tokens per test window) random tokens marked.

- `fuzzing`, `detection`: an LLM judge's P(1) per window (fuzzing shows the marks, detection none);
- `embedding`: cosine similarity between the explanation and the window's text (a sentence-embedding model);
- `tokens`: no explanation at all: the latent's top tokens over its explainer set; a window scores the share of
  its (fuzzing-)marked tokens that are among them;
- `intruder`: no explanation: the judge sees 4 activating windows and 1 silent one (plain text) and names the
  odd one out; its accuracy over such trials, against chance 1/5;
- `examples`: no explanation and no judge: a window scores its embedding's cosine to the mean embedding of the
  latent's explainer windows (held-out activating windows should sit closer than silent ones).
Each gives, per latent, an AUROC of its scores against the labels and a balanced accuracy (P(1) > 0.5; for
`embedding`, `tokens` and `examples` the threshold is the median score, so only the AUROC compares across scorers).
"""

import math
from dataclasses import dataclass

import numpy as np

from randsae.autointerp.prompts import Shown, clean, marks, render
from randsae.autointerp.records import Calibration, LatentResult, ScorerResult, SummaryRow
from randsae.lm.examples import ExampleSets, Window
from randsae.metrics import (
    auroc,
    balanced_accuracy,
    percentile_interval,
    pooled_auroc,
    pooled_mean_draws,
    token_mass,
)
from randsae.scorer_kinds import ALL, JUDGED, SCORER_KINDS, base
from randsae.seeding import derive_seed

LLM_SCORERS = JUDGED  # the scorers that ask the judge (randsae.scorer_kinds registers them all)
SCORERS = ALL


@dataclass
class ScoringSet:
    shown: list[Shown]  # fuzzing marks: true ones on activating windows, random ones on the others
    labels: list[int]
    quantiles: list[int | None]


def scoring_set(sets: ExampleSets, decode, seed: int = 0, negatives: str = "random") -> ScoringSet:
    """The test windows and one kind of silent windows of a latent (random: the non-activating set, the
    paper's; or hard negatives), shuffled, with their fuzzing marks."""
    rng = np.random.default_rng(derive_seed(seed, "scoring-set", sets.layer, sets.latent,
                                            *([] if negatives == "random" else [negatives])))
    active = [sum(a > 0 for a in w.activations) for w in sets.test]
    fuzz = math.ceil(np.mean(active)) if active else 1
    items: list[tuple[Shown, int, int | None]] = []
    for w in sets.test:
        items.append((Shown(decode(w.tokens), marks(w.activations)), 1, w.quantile))
    for w in sets.negatives(negatives):
        chosen = set(rng.choice(len(w.tokens), size=min(fuzz, len(w.tokens)), replace=False).tolist())
        items.append((Shown(decode(w.tokens), [i in chosen for i in range(len(w.tokens))]), 0, None))
    order = rng.permutation(len(items))
    return ScoringSet([items[i][0] for i in order], [items[i][1] for i in order], [items[i][2] for i in order])


INTRUDER_WINDOWS = 5  # per trial: 4 activating windows and 1 silent one (chance 1/5)
INTRUDER_TRIALS = 10  # per latent, at most (one silent window each)


def intruder_trials(shown: ScoringSet, seed: int, layer: int, latent: int,
                    negatives: str = "random") -> list[tuple[list[str], int]]:
    """(plain excerpts, index of the silent one) per trial: INTRUDER_WINDOWS − 1 activating windows of the test
    set (drawn afresh each trial) and one of the silent windows (each used once), the intruder's place drawn
    under the seed. No trial with fewer activating windows than that."""
    active = [render(s.tokens) for s, y in zip(shown.shown, shown.labels, strict=True) if y == 1]
    silent = [render(s.tokens) for s, y in zip(shown.shown, shown.labels, strict=True) if y == 0]
    rng = np.random.default_rng(derive_seed(seed, "intruder", layer, latent, negatives))
    count = min(INTRUDER_TRIALS, len(silent)) if len(active) >= INTRUDER_WINDOWS - 1 else 0
    trials = []
    for t in range(count):
        excerpts = [active[i] for i in rng.choice(len(active), INTRUDER_WINDOWS - 1, replace=False)]
        at = int(rng.integers(0, INTRUDER_WINDOWS))
        trials.append((excerpts[:at] + [silent[t]] + excerpts[at:], at))
    return trials


def intruder_result(name: str, named_index: list[int | None], truth: list[int]) -> ScorerResult:
    """The intruder's numbers for one latent: per trial 1.0 when the judge named the silent window, 0.0 when
    another or none (−1), None when the call failed (a failed trial, asked again on a rerun)."""
    correct = [None if got is None else float(got == want) for got, want in zip(named_index, truth, strict=True)]
    kept = [c for c in correct if c is not None]
    return ScorerResult(name, float("nan"), float("nan"), len(kept), len(correct) - len(kept), correct,
                        [1] * len(correct), [None] * len(correct),
                        accuracy=float(np.mean(kept)) if kept else float("nan"), chance=1 / INTRUDER_WINDOWS)


def top_tokens(windows: list[Window], decode, count: int = 10) -> list[str]:
    """The `count` token texts holding the most activation mass over `windows` (normalised: stripped,
    lower case), most first."""
    tokens = np.array([t for w in windows for t in w.tokens])
    values = np.array([a for w in windows for a in w.activations])
    if not len(tokens) or not values.sum() > 0:
        return []
    ids, mass = token_mass(tokens[values > 0], values[values > 0])
    texts: dict[str, float] = {}
    for token_id, m in zip(ids.tolist(), mass.tolist(), strict=True):
        key = normal(decode([token_id])[0])
        texts[key] = texts.get(key, 0.0) + m
    return sorted(texts, key=lambda k: -texts[k])[:count]


def normal(token: str) -> str:
    return clean(token).strip().lower() or clean(token)


def token_lookup(shown: list[Shown], lookup: list[str]) -> list[float]:
    """Per window, the share of its marked tokens whose text is in `lookup` (0 with none marked)."""
    wanted = set(lookup)
    out = []
    for w in shown:
        marked = [normal(t) for t, m in zip(w.tokens, w.marked, strict=True) if m]
        out.append(sum(t in wanted for t in marked) / len(marked) if marked else 0.0)
    return out


def result(scorer: str, scores: list[float | None], labels: list[int], quantiles: list[int | None],
           threshold: float | None = 0.5) -> ScorerResult:
    """A scorer's numbers for one latent; windows with no score are counted as failed and left out."""
    kept = [i for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    s = np.array([scores[i] for i in kept], dtype=np.float64)
    y = np.array([labels[i] for i in kept], dtype=np.int64)
    cut = threshold if threshold is not None else (float(np.median(s)) if len(s) else 0.5)
    return ScorerResult(scorer, auroc(s, y), balanced_accuracy(s, y, cut), len(kept), len(scores) - len(kept),
                        [None if v is None else float(v) for v in scores], list(labels), list(quantiles))


def summarise(results: list[LatentResult], scorers: list[str], judge: str, calibration: Calibration | None,
              counts: dict, resamples: int = 1000, seed: int = 0) -> list[SummaryRow]:
    """Per (model, variant, layer, scorer): AUROC pooled over every scored window of its latents, with a
    bootstrap interval over latents; how many latents were incomplete; the judge's calibration beside it.
    `counts` (LLM calls, tokens, seconds) is the run's and goes on every row."""
    groups: dict[tuple[str, str, int], list[LatentResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.variant, r.layer), []).append(r)
    rows = []
    for (model, variant, layer), group in sorted(groups.items()):
        for scorer in scorers:
            found = [s for r in group for s in r.results if s.scorer == scorer]
            pairs = [(np.array([p for p in s.probabilities if p is not None]),
                      np.array([y for p, y in zip(s.probabilities, s.labels, strict=True) if p is not None]))
                     for s in found]
            accuracy = {}
            if SCORER_KINDS[base(scorer)].measure == "accuracy":  # the intruder: no AUROC, an accuracy
                value, draws = pooled_mean_draws([p for p, _ in pairs], resamples,
                                                 derive_seed(seed, "bootstrap", layer, scorer))
                low, high = percentile_interval(draws)
                accuracy = {"accuracy": value, "accuracy_low": low, "accuracy_high": high,
                            "chance": 1 / INTRUDER_WINDOWS}
                point = low = high = float("nan")
            else:
                point, low, high = pooled_auroc(pairs, resamples, derive_seed(seed, "bootstrap", layer, scorer))
            judged = calibration is not None and base(scorer) in LLM_SCORERS
            cal = calibration.scorers.get(base(scorer)) if calibration is not None and judged else None
            rows.append(SummaryRow(
                model, variant, layer, scorer, point, low, high, len(found),
                sum(1 for r in group if not r.complete), sum(s.windows_failed for s in found), judge,
                cal["auroc"] if cal else None, cal["low"] if cal else None, cal["high"] if cal else None,
                calibration.at_chance(base(scorer)) if calibration is not None and judged else None,
                counts.get("llm_calls", 0), counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0),
                counts.get("llm_seconds", 0.0), **accuracy))
    return rows
