"""The activations stage: each unit's block outputs cached (with --cache; a random-dictionary arm reads its
variant's), by `lm activations`. Writes OUT/<unit>/acts."""

from randsae.study.records import Stage, StudyState
from randsae.study.settings import base_unit
from randsae.study.stages.common import layer_list, source_of


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_activations import cache_source

    if study.settings.cache and base_unit(unit) == unit:  # a random dictionary reads its unit's
        cache_source(source_of(study, unit), layer_list(study), study.directory(unit, "acts"),
                     dtype=study.settings.cache_dtype or "float16", device=study.settings.device, progress=False)


STAGE = Stage("activations", run, reads=())
