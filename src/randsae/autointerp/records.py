"""What `randsae lm autointerp` writes and reads back.

OUT/config.json           the latent records it read, the judge (never its key), scorers, format, seed
OUT/calibration.json      the judge's scores on the known-answer set (`Calibration`)
OUT/latents/layer.<i>/<latent>.json   one scored latent (`LatentResult`): explanation, and per scorer every
                          window's P(1) with its label, the latent's AUROC and balanced accuracy
OUT/explanations.jsonl    one line per latent: identity, explanation
OUT/scores.csv            one row per latent and scorer (`SCORE_COLUMNS`)
OUT/summary.csv           one row per model, variant, layer and scorer (`SummaryRow`)
OUT/llm_calls.jsonl       every LLM call (`clients.base.Call`)
"""

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from randsae import io
from randsae.errors import BadInput
from randsae.scorer_kinds import needs_explanation


@dataclass
class ScorerResult:
    scorer: str
    auroc: float
    balanced_accuracy: float
    windows_scored: int
    windows_failed: int
    probabilities: list[float | None] = field(default_factory=list)  # P(1) (or a score) per window, shown order
    labels: list[int] = field(default_factory=list)  # 1: an activating test window, 0: a non-activating one
    quantiles: list[int | None] = field(default_factory=list)  # activating windows: stratum (0 = weakest)
    accuracy: float | None = None  # the intruder scorer: share of trials whose silent window the judge named
    chance: float | None = None  # …and what guessing gives (1 / windows per trial)
    seconds: float = 0.0  # the time this scorer took on this latent (answers from the call log take none)


@dataclass
class LatentResult:
    model: str
    variant: str
    layer: int
    latent: int
    entropy: float  # nats, explainer set (docs/paper.md §2.4)
    explanation: str | None  # None when the explainer gave no [EXPLANATION]: line
    top_tokens: list[str]
    results: list[ScorerResult]
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every window scored, and an explanation wherever a scorer needs one (`tokens` does not)."""
        explained = self.explanation is not None or not any(needs_explanation(r.scorer) for r in self.results)
        return explained and all(r.windows_failed == 0 for r in self.results)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "LatentResult":
        data = json.loads(text)
        data["results"] = [ScorerResult(**r) for r in data["results"]]
        return cls(**data)


def latent_path(out: Path, layer: int, latent: int) -> Path:
    return out / "latents" / f"layer.{layer}" / f"{latent}.json"


def write_latent(out: Path, result: LatentResult) -> None:
    path = latent_path(out, result.layer, result.latent)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write(path, lambda p: p.write_text(result.to_json()))


def read_latents(out: Path) -> list[LatentResult]:
    results = []
    for path in sorted((out / "latents").glob("layer.*/*.json")):
        try:
            results.append(LatentResult.from_json(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise BadInput(f"{path} is not a scored latent ({e}); delete it to score that latent "
                             "again.") from None
    return results


SCORE_COLUMNS = ["model", "variant", "layer", "latent", "scorer", "entropy", "auroc", "balanced_accuracy",
                 "windows_scored", "windows_failed", "explanation"]


def score_rows(results: list[LatentResult]) -> list[dict]:
    return [{"model": r.model, "variant": r.variant, "layer": r.layer, "latent": r.latent, "scorer": s.scorer,
             "entropy": r.entropy, "auroc": s.auroc, "balanced_accuracy": s.balanced_accuracy,
             "windows_scored": s.windows_scored, "windows_failed": s.windows_failed,
             "explanation": r.explanation or ""}
            for r in sorted(results, key=lambda r: (r.layer, r.latent)) for s in r.results]


@dataclass
class Calibration:
    """The judge's pooled AUROC on the known-answer set, per LLM scorer, with its bootstrap interval."""

    judge: dict
    style: str
    scorers: dict[str, dict]  # scorer -> {auroc, low, high, latents, windows, windows_failed}

    def at_chance(self, scorer: str) -> bool:
        """True unless the whole interval lies above chance (0.5 for an AUROC, 1/windows for the intruder's
        accuracy): a judge that cannot be told from chance (or scores below it, or could not be measured) gives
        scores that say nothing about the latents."""
        s = self.scorers.get(scorer)
        return s is None or not s["low"] > s.get("chance", 0.5)

    def failed(self, scorer: str) -> bool:
        """Not one known-answer window of `scorer` was scored (the judge answered none of them usably)."""
        s = self.scorers.get(scorer)
        return s is not None and s.get("windows", 0) == 0

    def label(self, scorer: str = "fuzzing") -> str:
        s = self.scorers.get(scorer)
        if s is None:
            return f"judge calibration: {scorer} not measured"
        if self.failed(scorer):
            return (f"judge {self.judge.get('model')} ({self.judge.get('backend')}): {scorer} not measured — "
                    f"none of its known-answer windows was scored ({s.get('windows_failed', 0)} failed)")
        measure = "accuracy" if s.get("measure") == "accuracy" else "AUROC"
        chance = f" (chance {s['chance']:.2f})" if s.get("chance") is not None else ""
        plural = "accuracies" if measure == "accuracy" else "AUROCs"
        verdict = f" — AT CHANCE: these {plural} say nothing about the latents" if self.at_chance(scorer) else ""
        return (f"judge {self.judge.get('model')} ({self.judge.get('backend')}, {self.style} format): {scorer} "
                f"{measure} {s['auroc']:.2f} [{s['low']:.2f}, {s['high']:.2f}]{chance} on the known-answer "
                f"set{verdict}")


def read_calibration(path: Path) -> Calibration:
    data = io.read_json(path, {"judge": dict, "style": str, "scorers": dict})
    return Calibration(data["judge"], data["style"], data["scorers"])


@dataclass
class SummaryRow:
    model: str
    variant: str
    layer: int
    scorer: str
    auroc: float  # pooled over the scored latents' windows
    auroc_low: float  # bootstrap interval over latents
    auroc_high: float
    latents: int
    latents_incomplete: int  # latents with a failed window or no explanation
    windows_failed: int
    judge: str
    calibration_auroc: float | None
    calibration_low: float | None
    calibration_high: float | None
    judge_at_chance: bool | None  # LLM scorers: the calibration interval does not lie above 0.5
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    accuracy: float | None = None  # the intruder scorer (its AUROC columns are NaN): pooled over trials
    accuracy_low: float | None = None  # bootstrap interval over latents
    accuracy_high: float | None = None
    chance: float | None = None  # 1 / windows per trial


SUMMARY_COLUMNS = [f.name for f in fields(SummaryRow)]


def read_summary(path: Path) -> list[SummaryRow]:
    rows = []
    for number, row in enumerate(io.read_rows(path), start=2):
        try:
            values = {}
            for f in fields(SummaryRow):
                if f.name not in row and f.default is not MISSING:  # a summary from before the column
                    continue
                cell = row[f.name]
                if f.name in ("model", "variant", "scorer", "judge"):
                    values[f.name] = cell
                elif f.name == "judge_at_chance":
                    values[f.name] = None if cell == "" else cell == "True"
                elif f.name in ("layer", "latents", "latents_incomplete", "windows_failed", "llm_calls",
                                "prompt_tokens", "completion_tokens"):
                    values[f.name] = int(cell)
                else:
                    values[f.name] = None if cell == "" else float(cell)
        except (KeyError, ValueError) as e:
            raise BadInput(f"{path} row {number} is not an auto-interpretability summary ({e}).") from None
        rows.append(SummaryRow(**values))
    return rows
