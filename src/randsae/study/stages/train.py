"""The train stage: each unit's SAEs, one per layer, by `lm train` from the cache or on the fly — or, for the
trained arm with --sae, the user's SAEs imported and their L0 measured. Reads OUT/<unit>/acts (with --cache),
writes OUT/<unit>/sae."""

import logging
import math
from dataclasses import asdict
from pathlib import Path

from randsae import io, runs
from randsae.errors import BadInput
from randsae.resources import FLOAT_BYTES
from randsae.study.plan import Unit, sae_encode_flops, sae_train_bytes, sae_train_flops
from randsae.study.records import Stage, StudyState
from randsae.study.settings import TWIN_OF, BaselineSettings, base_unit, train_config_for
from randsae.study.stages.common import layer_list, source_of
from randsae.tables import PlanRow

log = logging.getLogger(__name__)


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_train import train_from_cache, train_from_model

    out = study.directory(unit, "sae")
    out.mkdir(parents=True, exist_ok=True)
    if unit == "trained" and study.settings.sae is not None:
        import_saes(study, out)
        return
    config, fixed = train_config(study, unit)
    auto = study.settings.schedule == "budget"
    deal = study.world is not None and study.world.distributed  # each rank its share of the layers
    # no held-out check on the way out: the eval stage holds every SAE to its fitted baselines on more tokens
    if study.settings.cache:
        train_from_cache(study.directory(base_unit(unit), "acts"), "all", config, out, study.settings.device,
                         progress=False, fixed=fixed, auto=auto, check=False, deal=deal)
    else:
        train_from_model(source_of(study, unit), layer_list(study), config, out, study.settings.device,
                         progress=False, fixed=fixed, auto=auto, check=False, deal=deal)


def twin_architecture(study: StudyState) -> tuple[str, dict[str, float]]:
    """(the architecture the study's SAEs train with, the L0 per layer they are trained to match — the user's
    SAEs' measured L0, where the twins match a JumpReLU SAE or are TopK at a measured L0; else {})."""
    s, check = study.settings, study.checked
    if s.sae is None or check.sae_architecture is None:
        return s.architecture, {}
    architecture = "topk" if s.twin_sae == "topk" else TWIN_OF[check.sae_architecture]
    if architecture == "jumprelu" or (architecture == "topk" and check.sae_architecture != "topk"):
        return architecture, measured_l0(study)
    return architecture, {}


def recorded_l0(study: StudyState) -> dict[str, float]:
    """The L0 per layer of the user's SAEs, as `import_saes` measured it on the trained model's activations and
    recorded it ({} where it did not: no --sae, or its train stage not done)."""
    path = study.directory("trained", "sae") / "config.json"
    measured = io.read_json(path).get("measured_l0") if path.is_file() else None
    return measured if isinstance(measured, dict) else {}


def measured_l0(study: StudyState) -> dict[str, float]:
    """`recorded_l0`, which the twins are trained to: refused where it is not recorded yet."""
    measured = recorded_l0(study)
    if not measured:
        path = study.directory("trained", "sae") / "config.json"
        raise BadInput(f"{path} records no measured L0 of your SAEs, which the twins are trained to; the trained "
                       "arm's train stage must finish first.")
    return measured


def train_config(study: StudyState, unit: str):
    architecture, layer_l0 = twin_architecture(study) if unit != "trained" else (study.settings.architecture, {})
    return train_config_for(study.settings, study.checked, unit, architecture, layer_l0)


def import_saes(study: StudyState, out: Path) -> None:
    """The user's SAEs as the trained arm: each saved in `lm train`'s layout beside the activations' record,
    so that every later stage reads them as it reads the twins'."""
    from randsae.lm.activations import open_cache
    from randsae.lm.sae_run import layer_directory
    from randsae.lm.source import read_held_out, write_held_out
    from randsae.lm.token_filter import TokenFilter
    from randsae.sae import architecture_of, load_language_sae

    config, _ = train_config(study, "trained")
    acts = study.directory("trained", "acts")
    cache = open_cache(acts)
    source = {**{k: v for k, v in cache.manifest.items() if k != "shards"}, "acts": str(acts.resolve())}
    token_filter = TokenFilter(config.skip_positions, config.max_norm_ratio)
    measured = {}
    for layer, path in study.checked.sae_layers.items():
        sae = load_language_sae(path)
        batches = cache.iter_batches(layer, 4096, shuffle=False, token_filter=token_filter)
        measured[str(layer)] = mean_l0(sae, batches, study.settings.eval_tokens)
        sae.save(layer_directory(out, layer), {"model_name": source["model"]},
                 {"layer": layer, "model": source["model"], "variant": "trained", "imported_from": path,
                  "measured_l0": measured[str(layer)]})
        log.info("your SAE of layer %d (%s): L0 %.1f on %s's activations", layer, architecture_of(sae),
                 measured[str(layer)], source["model"])
    write_held_out(out, read_held_out(acts))
    runs.write_record(out, "lm train", {"train": asdict(config), "schedule": None, "source": source,
                                        "imported_from": study.settings.sae, "measured_l0": measured})


def mean_l0(sae, batches, tokens: int) -> float:
    """The mean count of active latents per token of `sae` over the first `tokens` tokens of `batches`."""
    import torch

    active = seen = 0
    with torch.no_grad():
        for batch in batches:
            batch = batch[:tokens - seen]
            if not len(batch):
                break
            values, _ = sae.encode(batch)
            active += int((values != 0).sum())
            seen += len(batch)
    if not seen:
        raise BadInput("the trained model's activation cache holds no token to measure your SAEs' L0 on.")
    return active / seen


def together(settings: BaselineSettings, unit: str) -> bool:
    """Every rank trains a unit's SAEs together, each its share of the layers; your SAEs (--sae), read as the
    trained arm, are read by one rank."""
    return not (unit == "trained" and settings.sae is not None)


def cost(u: Unit) -> PlanRow:
    s, r, d, L = u.s, u.r, u.d, u.s.latents
    saved = s.layers * 2 * L * d * FLOAT_BYTES
    if u.name in s.imported:  # your SAEs: their L0 measured on the trained model's cache
        measured = min(s.eval_tokens, s.train_tokens)
        return PlanRow(u.name, "train", measured, 0, u.weights,
                       measured * s.layers * sae_encode_flops(d, L) / r.sae_encode_flops, r.basis)
    per_rank = math.ceil(s.layers / s.ranks)  # the layers are dealt across the ranks
    train = s.train_tokens * per_rank * sae_train_flops(d, L) / r.sae_train_flops
    if s.cache:  # one layer at a time from the cache (the eval stage, not the training, checks it)
        return PlanRow(u.name, "train", s.train_tokens * s.layers, saved, sae_train_bytes(d, L, s.batch),
                       train + u.cache_bytes / s.ranks / r.disk_bytes_per_s, r.basis)
    batch = 8 * s.context_length * d * FLOAT_BYTES * s.layers
    return PlanRow(u.name, "train", s.train_tokens, saved,
                   u.weights + per_rank * sae_train_bytes(d, L, s.batch) + batch,
                   r.load_seconds + s.train_tokens * u.forward / s.ranks + train, r.basis)


STAGE = Stage("train", run, directory="sae", reads=("activations",), together=together, cost=cost,
              loads_model=True)
