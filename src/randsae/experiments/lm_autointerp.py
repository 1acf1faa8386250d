"""`randsae lm autointerp`: explanations and scores of the sampled latents of `randsae lm latents` records,
by an LLM judge on this machine or behind an OpenAI-compatible server (docs/paper.md §2.3). Composes the
records (`lm.latents`), the pipeline (`autointerp.pipeline`) and the tables and figure; see
`randsae.autointerp.records` for what OUT holds.

Every run first checks that the judge answers, then scores the known-answer set (`--calibrate` does only
that) and writes the result beside every table. A rerun into the same directory skips scored latents,
scores again those with a failed window, and answers every call made before from OUT/llm_calls.jsonl.
"""

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from randsae import io, runs
from randsae.autointerp import records as R
from randsae.autointerp.calibration import KNOWN
from randsae.autointerp.clients import CallLog, make_judge
from randsae.autointerp.pipeline import calibrate, score_latent
from randsae.autointerp.prompts import FORMATS, TokenTexts
from randsae.autointerp.scorers import LLM_SCORERS, SCORERS, summarise
from randsae.errors import BadInput, RunFailed, check_seed
from randsae.lm.activations import parse_layers
from randsae.lm.examples import NEGATIVES
from randsae.lm.latents import open_latents
from randsae.scorer_kinds import EMBEDS, PER_WINDOW, SCORER_KINDS, named, needs_explanation
from randsae.settings import setting

log = logging.getLogger(__name__)


@dataclass
class AutointerpSettings:
    """What `lm autointerp` (and a study's autointerp stage) scores, and how; the flags come from here."""

    scorers: list[str] = setting(default_factory=lambda: list(SCORERS), shown="all",
                                 help=f"comma list of {', '.join(SCORERS)}")
    style: str = setting("delphi", flag="--prompt-format",
                         help="delphi (the paper's) or simple (fuzzing shows only the marked tokens)")
    layers: str = setting("all", help="'all' or a comma list")
    latents_per_layer: int | None = setting(None, shown="every sampled latent",
                                            help="score the first N sampled latents only")
    judged_latents: int | None = setting(None, shown="all get every scorer", help=(
        "the first N latents per layer get every scorer, the rest only those that need no LLM (token lookup, "
        "example embedding)"))
    negatives: list[str] = setting(default_factory=lambda: ["random"], help=(
        "comma list of the silent windows to score against: random (the paper's), similar-tokens (holding the "
        "latent's top tokens), neighbours (where its nearest latents fire); each reported apart"))
    seed: int = setting(0, help="seeds the window order and the fuzzing marks")
    explainer_tokens: int = setting(96, help="the explainer's answer at most (tokens)")
    bootstrap: int = setting(1000, help="bootstrap resamples for the intervals")
    calibration_windows: int = setting(20, help="known-answer set: activating (and as many silent) windows per "
                                                "known latent")
    embedding_model: str = setting("minilm", help="embedding scorers: minilm (embedded all-MiniLM-L6-v2), a "
                                                  "directory or a hub name")

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        self.validate()

    def validate(self) -> None:
        check_seed(self.seed)
        unknown = [s for s in self.scorers if s not in SCORERS]
        if unknown or not self.scorers:
            raise BadInput(f"unknown scorer {unknown[0] if unknown else '(none)'!r}; choose from "
                             f"{', '.join(SCORERS)}.")
        if self.style not in FORMATS:
            raise BadInput(f"--prompt-format must be one of {', '.join(FORMATS)}, not {self.style!r}.")
        for name in ("explainer_tokens", "bootstrap", "calibration_windows"):
            if getattr(self, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be a positive integer, not "
                                 f"{getattr(self, name)}.")
        if self.latents_per_layer is not None and self.latents_per_layer < 1:
            raise BadInput(f"--latents-per-layer must be a positive integer, not {self.latents_per_layer}.")
        unknown = [n for n in self.negatives if n not in NEGATIVES]
        if unknown or not self.negatives or len(set(self.negatives)) != len(self.negatives):
            raise BadInput(f"--negatives takes each of {', '.join(NEGATIVES)} at most once, not "
                           f"{','.join(self.negatives)!r}.")
        if len(set(self.scorers)) != len(self.scorers):
            raise BadInput(f"--scorers names a scorer twice: {','.join(self.scorers)!r}.")
        if self.judged_latents is not None and self.judged_latents < 0:
            raise BadInput(f"--judged-latents must be 0 or more, not {self.judged_latents}.")

    def result_names(self) -> list[str]:
        """Every scorer against every kind of negatives, as the results name them (`fuzzing@neighbours`)."""
        return [named(s, kind) for kind in self.negatives for s in self.scorers]

    def scorers_of(self, rank: int) -> list[str]:
        """The scorers of a layer's `rank`-th chosen latent: every one among the first `judged_latents`, beyond
        them only those that need neither the judge nor an explanation (token lookup, example embedding)."""
        if self.judged_latents is None or rank < self.judged_latents:
            return self.scorers
        kinds = [SCORER_KINDS[s] for s in self.scorers]
        return [k.name for k in kinds if not k.uses_judge and not k.needs_explanation]


def judge_description(options: dict) -> dict:
    """What identifies the judge in config.json, known before it is loaded (never the API key)."""
    if options.get("url"):
        return {"backend": "openai", "url": options["url"].rstrip("/"), "model": options.get("model"),
                "windows_per_prompt": options.get("windows_per_prompt", 5)}
    return {"backend": "local", "model": options.get("llm", "smollm2"), "windows_per_prompt": 1,
            "dtype": options.get("dtype", "float32")}


def same_judge(a: dict, b: dict) -> bool:
    """The same model behind the same interface; where it is served (the URL) may change between runs."""
    return {k: v for k, v in a.items() if k != "url"} == {k: v for k, v in b.items() if k != "url"}


def judge_name(description: dict) -> str:
    return f"{description['backend']}:{description['model']}"


async def _calibration(judge, out: Path, settings: AutointerpSettings) -> R.Calibration:
    """The judge's calibration on the scorers of this run that ask it (fuzzing and detection when it runs none:
    the judge check alone), from OUT, this machine's kept ones, or measured."""
    asked = calibrated(settings)
    path = out / "calibration.json"
    if path.is_file():
        found = R.read_calibration(path)
        complete = all(s in found.scorers and found.scorers[s].get("windows_failed") == 0 for s in asked)
        if complete and same_judge(found.judge, judge.describe()) and found.style == settings.style:
            return found
    shared = shared_calibration_path(judge.describe(), settings)
    if shared is not None and shared.is_file():
        calibration = R.read_calibration(shared)
    else:
        log.info("scoring the judge on the known-answer set (%d latents, %d windows each)", len(KNOWN),
                 2 * settings.calibration_windows)
        calibration = await calibrate(judge, settings.style, settings.calibration_windows, settings.seed,
                                      settings.bootstrap, asked)
        if shared is not None and all(s["windows_failed"] == 0 for s in calibration.scorers.values()):
            try:  # a convenience: a cache that cannot be written costs only the next run's minute
                shared.parent.mkdir(parents=True, exist_ok=True)
                io.write_json(shared, asdict(calibration))
            except OSError as e:
                log.warning("could not keep the judge's calibration in %s (%s)", shared.parent, e)
    io.write_json(path, asdict(calibration))
    return calibration


def calibrated(settings: AutointerpSettings) -> tuple[str, ...]:
    """The scorers the judge is checked on: those of the run that ask it, or fuzzing and detection."""
    return tuple(s for s in LLM_SCORERS if s in settings.scorers) or PER_WINDOW


def shared_calibration_path(judge: dict, settings: AutointerpSettings) -> Path | None:
    """Where a local judge's calibration is kept for every run on this machine (it depends only on the model,
    the prompts and the settings below); None for a server, whose weights a name does not pin down."""
    import hashlib

    from randsae.autointerp import prompts
    from randsae.lm.models import is_hub_name

    model = judge.get("model", "")
    if judge.get("backend") != "local" or (model != "smollm2" and is_hub_name(model)):
        return None
    weights = model if model == "smollm2" else io.file_key(Path(model))
    text = prompts.EXPLAINER_SYSTEM + "".join(prompts.judge_system(k, 1, settings.style) for k in prompts.KINDS) \
        + prompts.INTRUDER_SYSTEM
    asked = sorted(calibrated(settings))
    key = json.dumps([weights, judge.get("dtype"), text, settings.style, settings.calibration_windows,
                      settings.seed, settings.bootstrap, asked])
    return io.cache_dir("calibration") / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def run_calibration(out: Path, judge_options: dict, settings: AutointerpSettings) -> R.Calibration:
    """Only the judge check: OUT/calibration.json and its line in the log."""
    settings.validate()

    async def main():
        judge = make_judge(log=CallLog(out / "llm_calls.jsonl"), **judge_options)
        try:
            await judge.check()
            return await _calibration(judge, out, settings)
        finally:
            await judge.close()

    calibration = asyncio.run(main())
    for scorer in LLM_SCORERS:
        log.info("%s", calibration.label(scorer))
    measured = [s for s in calibrated(settings) if not calibration.failed(s)]
    if not measured:
        raise RunFailed(f"the judge {judge_name(judge_description(judge_options))} answered none of the "
                        f"known-answer windows usably (see {out / 'llm_calls.jsonl'} for its errors).")
    return calibration


def figure_scorer(results: list[R.LatentResult], settings: AutointerpSettings) -> tuple[str, str] | None:
    """(scorer, result name) Fig. 20 draws: the first scorer run (fuzzing when it was: the paper's), against the
    first kind of negatives, with a latent that has both an entropy and an AUROC (`fuzzing@neighbours`); None where
    no latent has."""
    for scorer in SCORERS:
        if scorer not in settings.scorers:
            continue
        for name in (named(scorer, kind) for kind in settings.negatives):
            if any(s.scorer == name and s.auroc == s.auroc and r.entropy == r.entropy
                   for r in results for s in r.results):
                return scorer, name
    return None


def write_tables(out: Path, results: list[R.LatentResult], settings: AutointerpSettings, judge: dict,
                 calibration: R.Calibration | None, counts: dict, formats=("png",)) -> list[R.SummaryRow]:
    from randsae.plots import plot_entropy_auroc

    lines = "".join(json.dumps({"model": r.model, "variant": r.variant, "layer": r.layer, "latent": r.latent,
                                "explanation": r.explanation, "top_tokens": r.top_tokens}, ensure_ascii=False)
                    + "\n" for r in sorted(results, key=lambda r: (r.layer, r.latent)))
    io.atomic_write(out / "explanations.jsonl", lambda p: p.write_text(lines))
    io.write_rows(out / "scores.csv", R.SCORE_COLUMNS, R.score_rows(results))
    summary = summarise(results, settings.result_names(), judge_name(judge), calibration, counts,
                        settings.bootstrap, settings.seed)
    io.write_rows(out / "summary.csv", R.SUMMARY_COLUMNS, [asdict(s) for s in summary])
    drawn = figure_scorer(results, settings)
    if drawn is None:
        log.warning("no latent has an AUROC yet (every window failed or no latent was scored): no figure.")
    else:
        scorer, name = drawn
        llm = scorer in LLM_SCORERS
        note = (calibration.label(scorer) if calibration else "judge not calibrated") if llm else \
            f"{scorer} scorer: no LLM judge involved"
        at_chance = llm and (calibration is None or calibration.at_chance(scorer))
        plot_entropy_auroc(results, out / "entropy_auroc.png", name, [note], at_chance=at_chance,
                           formats=formats)
    return summary


def same_record(a: dict, b: dict) -> bool:
    return same_judge(a.get("judge", {}), b.get("judge", {})) and \
        {k: v for k, v in a.items() if k != "judge"} == {k: v for k, v in b.items() if k != "judge"}


def autointerp(latents_dir: str | Path, out: Path, judge_options: dict, settings: AutointerpSettings | None = None,
               progress: bool = True, formats=("png",)) -> list[R.SummaryRow]:
    """Explain and score the sampled latents in `latents_dir` (a `randsae lm latents` directory)."""
    settings = settings or AutointerpSettings()
    settings.validate()
    records = open_latents(latents_dir)
    layers = records.layers if settings.layers == "all" else parse_layers(settings.layers, max(records.layers) + 1)
    chosen, rank = [], {}
    for layer in layers:
        sampled = sorted(r.latent for r in records.sampled(layer))
        chosen += [(layer, latent) for latent in sampled[:settings.latents_per_layer]]
        rank.update({(layer, latent): i for i, latent in enumerate(sampled)})
    if not chosen:
        raise BadInput(f"{latents_dir} holds no sampled latents in layers {layers}.")
    for key in chosen:  # every input read before the judge is asked anything (a missing or cut file: one sentence)
        records.examples(*key)
    for kind in settings.negatives:
        if kind != "random" and not any(records.examples(*key).negatives(kind) for key in chosen):
            raise BadInput(f"the latent records in {latents_dir} hold no {kind} negatives (made before randsae "
                           "drew them, or none exist); run `randsae lm latents` again into a new --out.")
    judge_info = judge_description(judge_options)
    record = {"latents": str(Path(latents_dir).resolve()), "source": records.config.get("source"),
              "examples": records.config.get("examples"), "judge": judge_info, "settings": asdict(settings)}
    path = out / "config.json"
    previous = runs.previous_record(out, "lm autointerp")
    if previous is not None and not same_record(runs.settings_of(previous), io.json_round_trip(record)):
        raise BadInput(f"{out} holds scores made with another judge or other settings (see {path}); choose "
                         "another --out.")
    source = records.config.get("source") or {}
    from randsae.lm.models import load_tokenizer

    decode = TokenTexts(load_tokenizer(source.get("model", "smollm2"), source.get("revision")))

    done = {(r.layer, r.latent): r for r in R.read_latents(out)} if (out / "latents").is_dir() else {}
    todo = [key for key in chosen if key not in done or not done[key].complete]
    summaries = {(r.layer, r.latent): r for r in records.rows if r.sampled}
    embedder = None
    if set(EMBEDS) & set(settings.scorers):
        from randsae.autointerp.clients.embedding import EmbeddingModel

        embedder = EmbeddingModel(settings.embedding_model, device="cpu")
    calls = CallLog(out / "llm_calls.jsonl")

    async def main():
        judge = make_judge(log=calls, **judge_options)
        try:
            await judge.check()
            runs.write_record(out, "lm autointerp", record)
            calibration = await _calibration(judge, out, settings)
            failed = [s for s in settings.scorers if s in LLM_SCORERS and calibration.failed(s)]
            if failed:
                raise RunFailed(f"the judge {judge_name(judge_info)} answered none of the known-answer windows "
                                f"of {', '.join(failed)} usably (see {calls.path} for its errors); nothing was "
                                "scored.")
            for scorer in LLM_SCORERS:
                if scorer in settings.scorers:
                    level = logging.WARNING if calibration.at_chance(scorer) else logging.INFO
                    log.log(level, "%s", calibration.label(scorer))
            bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc="latents", unit="latent",
                       disable=not progress)
            limit = asyncio.Semaphore(getattr(judge, "concurrency", 1))

            async def one(layer: int, latent: int) -> None:
                async with limit:
                    summary = summaries[layer, latent]
                    identity = {"model": summary.model, "variant": summary.variant}
                    result = await score_latent(
                        judge, records.examples(layer, latent), identity, summary.entropy_explainer, decode,
                        settings.scorers_of(rank[layer, latent]), settings.style, embedder, settings.seed,
                        max_tokens=settings.explainer_tokens, negatives=tuple(settings.negatives))
                    R.write_latent(out, result)
                    done[layer, latent] = result
                    bar.update(1)

            await asyncio.gather(*(one(layer, latent) for layer, latent in todo))
            bar.close()
            return calibration
        finally:
            await judge.close()

    calibration = asyncio.run(main())
    results = [done[key] for key in chosen if key in done]
    summary = write_tables(out, results, settings, judge_info, calibration, calls.counts(), formats)
    asked = [s for s in settings.scorers if s in LLM_SCORERS]
    if asked and not any(row.latents > 0 and row.scorer in asked for row in summary):
        raise RunFailed(f"the judge {judge_name(judge_info)} scored no latent with {', '.join(asked)} (see "
                        f"{calls.path} and {out / 'scores.csv'}); the tables record what failed.")
    incomplete = sum(not r.complete for r in results)
    explained = [r for r in results if any(needs_explanation(x.scorer) for x in r.results)]
    if explained and all(r.explanation is None for r in explained):
        raise RunFailed(f"the judge {judge_name(judge_info)} wrote no explanation for any of the "
                        f"{len(explained)} latents whose scorers need one (see {calls.path}); the tables record "
                        "what failed — run the same command again to retry them.")
    if incomplete:
        log.warning("%d of %d latents have failed windows or no explanation; run the same command again to "
                    "score only those (calls that succeeded are reused).", incomplete, len(results))
    for row in summary:
        measure, value, low, high = ("accuracy", row.accuracy, row.accuracy_low, row.accuracy_high) \
            if row.accuracy is not None else ("AUROC", row.auroc, row.auroc_low, row.auroc_high)
        log.info("layer %d %-9s %s %.3f [%.3f, %.3f] over %d latents", row.layer, row.scorer, measure, value, low,
                 high, row.latents)
    return summary
