"""The autointerp stage: each unit's sampled latents explained and scored by the judge and the judge-free
scorers, by `lm autointerp`; left out when --scorers names none of them. Reads OUT/<unit>/latents, writes
OUT/<unit>/autointerp."""

import logging
import math

import numpy as np

from randsae.metrics import pooled_auroc_draws, pooled_mean_draws
from randsae.scorer_kinds import SCORER_KINDS
from randsae.seeding import derive_seed
from randsae.study.evidence import RESAMPLES
from randsae.study.plan import Unit
from randsae.study.records import Stage, StudyState
from randsae.study.settings import (
    BaselineSettings,
    autointerp_settings,
    judge_asked,
    judge_options,
    latent_scorers,
    parse_unit,
    study_scorers,
)
from randsae.study.stages.common import seed_of
from randsae.study.verdict import METRICS, Measure
from randsae.tables import PlanRow

log = logging.getLogger(__name__)


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_autointerp import autointerp

    s = study.settings
    out = study.directory(unit, "autointerp")
    out.mkdir(parents=True, exist_ok=True)
    autointerp(study.directory(unit, "latents"), out, judge_options(s),
               autointerp_settings(s, seed_of(study, unit)), progress=False)


def cost(u: Unit) -> PlanRow:
    s, r = u.s, u.r
    judged = min(s.judged, s.sampled) * s.layers
    others = s.sampled * s.layers - judged
    calibration = r.calibration_seconds if u.name == s.units[0] else 0.0  # the first time on this machine
    return PlanRow(u.name, "autointerp", 0, 0, s.judge_bytes, r.judge_load_seconds + calibration
                   + judged * r.judged_latent_seconds + others * r.other_latent_seconds, r.judge_basis)


def check_judge(settings: BaselineSettings, _: bool = False) -> None:
    """The judge the autointerp stage will ask can be: its settings, its server answering with the model, or
    its local model found — checked now, not after every variant has trained. None where no scorer asks it."""
    import asyncio

    from randsae.autointerp.clients import make_judge

    if not judge_asked(settings):
        if settings.judge.url:
            log.warning("--llm-url %s names a judge, but no scorer of --scorers %s asks one: the judge is not "
                        "used", settings.judge.url, ",".join(study_scorers(settings)))
        return
    from randsae.lm.models import load_config

    options = judge_options(settings)
    if "url" in options:
        async def ask() -> None:
            judge = make_judge(**options)
            try:
                await judge.check()
            finally:
                await judge.close()

        asyncio.run(ask())
    elif options["llm"] != "smollm2":
        load_config(options["llm"])


def measures(study: StudyState, unit: str, draws: bool) -> list[Measure]:
    """Each layer's pooled AUROC (or accuracy) of every compared scorer, with whether the judge was at chance;
    `draws`: over the scored latents."""
    from randsae.autointerp.records import read_latents, read_summary

    variant, seed = parse_unit(unit)
    directory = study.directory(unit, "autointerp")
    summary, latents = read_summary(directory / "summary.csv"), read_latents(directory)
    out = []
    for layer in study.checked.layers:
        flags = {s.scorer: bool(s.judge_at_chance) for s in summary if s.layer == layer}
        scored = [r for r in latents if r.layer == layer]
        for metric in METRICS.values():
            if metric.scorer is None or metric.scorer not in flags:
                continue
            pairs = [(np.array([p for p in s.probabilities if p is not None]),
                      np.array([y for p, y in zip(s.probabilities, s.labels, strict=True) if p is not None]))
                     for r in scored for s in r.results if s.scorer == metric.scorer]
            resamples = RESAMPLES if draws else 0
            where = derive_seed(seed, "verdict", variant, layer, metric.scorer)
            if SCORER_KINDS[metric.scorer].measure == "accuracy":  # the intruder: trials named right, pooled
                point, sampled = pooled_mean_draws([p for p, _ in pairs], resamples, where)
            else:
                point, sampled = pooled_auroc_draws(pairs, resamples, where)
            out.append(Measure(variant, seed, layer, metric.name, point if math.isfinite(point) else None,
                               sampled if draws else None, len(pairs), judge_at_chance=flags[metric.scorer]))
    return out


STAGE = Stage("autointerp", run, directory="autointerp", reads=("latents",),
              wanted=lambda s: bool(latent_scorers(s)), cost=cost, measures=measures, check=check_judge)
