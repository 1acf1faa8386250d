"""The autointerp stage: each unit's sampled latents explained and scored by the judge and the judge-free
scorers, by `lm autointerp`; left out when --scorers names none of them. Reads OUT/<unit>/latents, writes
OUT/<unit>/autointerp."""

from randsae.study.records import Stage, StudyState
from randsae.study.settings import autointerp_settings, judge_options, latent_scorers
from randsae.study.stages.common import seed_of


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_autointerp import autointerp

    s = study.settings
    out = study.directory(unit, "autointerp")
    out.mkdir(parents=True, exist_ok=True)
    autointerp(study.directory(unit, "latents"), out, judge_options(s),
               autointerp_settings(s, seed_of(study, unit)), progress=False)


STAGE = Stage("autointerp", run, reads=("latents",), wanted=lambda s: bool(latent_scorers(s)))
