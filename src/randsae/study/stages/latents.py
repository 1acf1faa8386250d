"""The latents stage: each unit's latent records, sampled latents' examples and token entropy, by `lm latents`
(from the cache, or on the fly after the training text). Reads OUT/<unit>/sae, writes OUT/<unit>/latents."""

from randsae.sae.dictionaries import split_arm
from randsae.study.records import Stage, StudyState
from randsae.study.settings import parse_unit
from randsae.study.stages.common import seed_of


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_latents import build_latents
    from randsae.lm.examples import ExampleSettings

    s = study.settings
    out = study.directory(unit, "latents")
    out.mkdir(parents=True, exist_ok=True)
    settings = ExampleSettings(seed=seed_of(study, unit), **s.examples)
    on_the_fly = s.latent_tokens is not None or not s.cache
    build_latents(study.directory(unit, "sae"), out, settings=settings, device=s.device, progress=False,
                  max_tokens=s.latent_tokens if on_the_fly else None,
                  model=(s.model, split_arm(parse_unit(unit)[0])[0]) if on_the_fly else None,
                  group_layers=study.group_layers("latents"))


STAGE = Stage("latents", run, reads=("train",))
