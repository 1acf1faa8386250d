"""The activations stage: each unit's block outputs cached (with --cache; a random-dictionary arm reads its
variant's), by `lm activations`. Writes OUT/<unit>/acts."""

import itertools
from pathlib import Path

from randsae.errors import BadInput
from randsae.resources import FLOAT_BYTES
from randsae.study.plan import READS_CACHE, Unit
from randsae.study.records import Stage, StudyState
from randsae.study.settings import BaselineSettings, base_unit
from randsae.study.stages.common import layer_list, source_of
from randsae.tables import PlanRow


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_activations import cache_source

    if study.settings.cache and base_unit(unit) == unit:  # a random dictionary reads its unit's
        cache_source(source_of(study, unit), layer_list(study), study.directory(unit, "acts"),
                     dtype=study.settings.cache_dtype or "float16", device=study.settings.device, progress=False)


def cost(u: Unit) -> PlanRow | None:
    s, r = u.s, u.r
    if not s.cache:
        return None
    if u.name not in s.base_units:
        return PlanRow(u.name, "activations", 0, 0, 0, 0.0, READS_CACHE)
    held_out = (s.drawn_tokens - s.train_tokens) * 8
    batch = 8 * s.context_length * u.d * FLOAT_BYTES * s.layers
    return PlanRow(u.name, "activations", s.drawn_tokens, u.cache_bytes + held_out,
                   u.weights + batch + min(u.cache_bytes, 256 * 2**20),
                   r.load_seconds + s.drawn_tokens * u.forward + u.cache_bytes / r.disk_bytes_per_s, r.basis)


def check_text(settings: BaselineSettings, plan: bool = False) -> None:
    """A text file given as --dataset exists and holds a document; a hub data set can be reached (not for a
    --plan, made where the study will not run: it is streamed later); the embedded text holds the tokens."""
    from randsae.lm.text import EMBEDDED_CORPUS, check_text_source, documents, is_local_text

    check_text_source(settings.dataset, settings.tokens, reach=not plan)
    path = Path(settings.dataset).expanduser()
    if settings.dataset == EMBEDDED_CORPUS or not is_local_text(settings.dataset):
        return
    if not path.exists():
        raise BadInput(f"--dataset {path} does not exist.")
    first = itertools.islice(documents(settings.dataset, settings.text_column, settings.dataset_config), 1000)
    if not any(str(doc).strip() for doc in first):
        raise BadInput(f"--dataset {path} holds no text.")


STAGE = Stage("activations", run, directory="acts", cost=cost, loads_model=True, check=check_text)
