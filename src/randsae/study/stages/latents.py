"""The latents stage: each unit's latent records, sampled latents' examples and token entropy, by `lm latents`
(from the cache, or on the fly after the training text). Reads OUT/<unit>/sae, writes OUT/<unit>/latents."""

import dataclasses

import numpy as np

from randsae.metrics import mean_draws
from randsae.resources import FLOAT_BYTES
from randsae.sae.dictionaries import split_arm
from randsae.seeding import derive_seed
from randsae.study.evidence import RESAMPLES
from randsae.study.plan import LATENT_ENTRY_BYTES, SUMMARY_BYTES, Unit, layer_groups, sae_encode_flops
from randsae.study.records import Stage, StudyState, group_size
from randsae.study.settings import parse_unit
from randsae.study.stages.common import seed_of
from randsae.study.verdict import Measure
from randsae.tables import PlanRow


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_latents import build_latents

    s = study.settings
    out = study.directory(unit, "latents")
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(s.examples, seed=seed_of(study, unit))
    on_the_fly = s.latent_tokens is not None or not s.cache
    build_latents(study.directory(unit, "sae"), out, settings=settings, device=s.device, progress=False,
                  max_tokens=s.latent_tokens if on_the_fly else None,
                  model=(s.model, split_arm(parse_unit(unit)[0])[0]) if on_the_fly else None,
                  group_layers=study.group_layers("latents"))


def cost(u: Unit) -> PlanRow:
    from randsae.lm.activations import SHARD_BYTES

    s, r, L = u.s, u.r, u.s.latents
    on_the_fly = s.latent_tokens is not None or not s.cache  # without a cache: 1M tokens after the training text
    tokens = s.latent_tokens if s.latent_tokens is not None else 1_000_000 if not s.cache else s.train_tokens
    if r.latent_width:  # measured on the stage's own code, scaled to this width
        scale = L / r.latent_width
        work = s.layers * scale * (r.latent_layer_seconds + r.latent_token_seconds * tokens)
    else:
        work = tokens * s.layers * sae_encode_flops(u.d, L) / r.sae_encode_flops
    fixed = (u.weights if on_the_fly else 0) + 4096 * L * FLOAT_BYTES  # the model, one encoding batch
    # a layer: its SAE, and a shard's activations and encoded entries (value and index: 8 bytes a kept latent)
    shard = min(tokens, SHARD_BYTES // (u.d * FLOAT_BYTES))
    per_layer = u.layer_sae_bytes + shard * (u.d * FLOAT_BYTES + s.k * 8)
    groups = layer_groups(s.layers, fixed, per_layer, u.memory)
    # each group reads the token set again: through the model, or its cache
    reading = r.load_seconds + groups * tokens * u.forward if on_the_fly else \
        groups * u.cache_bytes / r.disk_bytes_per_s
    written = s.layers * (tokens * s.k * LATENT_ENTRY_BYTES + L * SUMMARY_BYTES)
    memory = fixed + group_size(s.layers, groups) * per_layer
    return PlanRow(u.name, "latents", tokens * groups, written, memory, work + reading, r.basis, groups)


def measures(study: StudyState, unit: str, draws: bool) -> list[Measure]:
    """Each layer's mean token-distribution entropy of the sampled latents; `draws`: over the latents."""
    from randsae.lm.latents import open_latents

    variant, seed = parse_unit(unit)
    records = open_latents(study.directory(unit, "latents"))
    out = []
    for layer in study.checked.layers:
        entropy = np.array([r.entropy_explainer for r in records.sampled(layer)], dtype=float)
        entropy = entropy[np.isfinite(entropy)]
        out.append(Measure(variant, seed, layer, "entropy_mean", float(entropy.mean()) if len(entropy) else None,
                           mean_draws(entropy, RESAMPLES, derive_seed(seed, "verdict", variant, layer))
                           if draws else None, len(entropy)))
    return out


STAGE = Stage("latents", run, directory="latents", reads=("train",), cost=cost, loads_model=True, grouped=True,
              measures=measures)
