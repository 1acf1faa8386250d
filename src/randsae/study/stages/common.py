"""What several stages derive from a unit: its layers, its seed, the source of its activations."""

from randsae.sae.dictionaries import split_arm
from randsae.study.records import StudyState
from randsae.study.settings import parse_unit


def layer_list(study: StudyState) -> str:
    return ",".join(str(layer) for layer in study.checked.layers)


def seed_of(study: StudyState, unit: str) -> int:
    """The seed of a unit's every draw: --seed plus its seed's index."""
    return study.settings.seed + parse_unit(unit)[1]


def source_of(study: StudyState, unit: str):
    from randsae.lm.source import Source

    s = study.settings
    variant = split_arm(parse_unit(unit)[0])[0]
    return Source(model=s.model, revision=s.revision, variant=variant, seed=seed_of(study, unit),
                  dataset=s.dataset,
                  dataset_config=s.dataset_config, text_column=s.text_column, context_length=s.context_length,
                  tokens=s.tokens, prepend_bos=bool(s.prepend_bos))
