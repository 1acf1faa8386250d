"""What one study needs before it writes anything: every check that needs no work (`preflight`), and the plan's
inputs — the study's sizes (`study_scale`), the rates of the machine (`study_rates`) — and the plan itself
(`planned`, OUT/plan.csv)."""

import dataclasses
import logging
import os
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import randsae.study.stages  # noqa: F401  (registers the stages whose checks run here)
from randsae import io, runs
from randsae.errors import BadInput
from randsae.resources import format_bytes
from randsae.study.records import ordered
from randsae.study.settings import (
    TWIN_OF,
    BaselineSettings,
    Preflight,
    autointerp_settings,
    base_unit,
    judge_asked,
    judge_options,
    latent_scorers,
    paper_layers,
    study_units,
    train_config_for,
)

if TYPE_CHECKING:
    from randsae.study.machines import Machine
    from randsae.study.plan import PlanRow

log = logging.getLogger(__name__)

def preflight(settings: BaselineSettings, plan: bool = False, given: Collection[str] = ()) -> Preflight:
    """Every check that needs no work, before anything is written: the device, the model (its config loads),
    the layers and the context length lie in it, the training settings, the text, the judge, the user's SAEs
    read its width. One sentence (BadInput) otherwise: a study never finds its own settings wrong minutes in.
    With --sae, `settings` takes the input conventions the SAEs were trained with where `given` (the settings
    the user gave) does not name them (`adopt_conventions`)."""
    from randsae.config import resolve_device
    from randsae.lm.activations import parse_layers
    from randsae.lm.models import load_config, read_device_map
    from randsae.study.shapes import model_shape
    from randsae.training.trainer import TopKTrainConfig

    resolve_device(settings.device)
    read_device_map(settings.device_map)
    saes = user_saes(settings) if settings.sae is not None else None  # said before the model is loaded
    if saes is not None:
        adopt_conventions(settings, sae_conventions(*saes), given)
    config = load_config(settings.model, settings.revision)
    num_layers, d_model = config.num_hidden_layers, config.hidden_size
    limit = getattr(config, "max_position_embeddings", None)
    if settings.context_length < 2:
        raise BadInput(f"--context-length must be at least 2, not {settings.context_length}.")
    if limit is not None and settings.context_length > limit:
        raise BadInput(f"--context-length {settings.context_length} is beyond {settings.model}'s maximum of "
                       f"{limit} positions.")
    if settings.skip_positions >= settings.context_length:
        raise BadInput(f"--skip-positions {settings.skip_positions} leaves no token of the "
                       f"{settings.context_length}-token contexts to train on.")
    TopKTrainConfig(k=settings.k, expansion=settings.expansion, skip_positions=settings.skip_positions,
                    architecture=settings.architecture,
                    max_norm_ratio=settings.max_norm_ratio, dictionary_cone=settings.dictionary_cone,
                    **{k: v for k, v in {"batch_size": settings.batch_size, "lr": settings.lr}.items()
                       if v is not None}).validate()
    for stage in ordered():  # each stage's own checks: the text, the judge, --probe-data
        if stage.check is not None:
            stage.check(settings, plan)
    if settings.layers == "paper":
        vocab = getattr(config, "vocab_size", 0)
        layers = paper_layers(num_layers, 12 * num_layers * d_model ** 2 + 2 * vocab * d_model)
    else:
        layers = parse_layers(settings.layers, num_layers)
    check = Preflight(layers, d_model, shape=model_shape(config, settings.model))
    if saes is not None:
        check_user_saes(settings, check, *saes)
    return check


def user_saes(settings: BaselineSettings) -> tuple[Path, dict[int, Path]]:
    """(the --sae directory, {layer: its SAE's directory})."""
    from randsae.lm.sae_run import foreign_layers, trained_layers
    from randsae.sae.names import resolve

    assert settings.sae is not None
    sae_dir = resolve(settings.sae)
    if not sae_dir.exists():
        raise FileNotFoundError(f"--sae {sae_dir} does not exist.")
    return sae_dir, trained_layers(sae_dir) if (sae_dir / "config.json").is_file() else foreign_layers(
        sae_dir, settings.layers)


def sae_conventions(sae_dir: Path, found: dict[int, Path]):
    """The input conventions every one of the --sae SAEs (`user_saes`) records (they must agree)."""
    from randsae.lm.sae_run import input_conventions

    seen = {input_conventions(io.read_json(path / "cfg.json"), path) for path in found.values()}
    if len(seen) > 1:
        raise BadInput(f"the SAEs in {sae_dir} were trained on differently made inputs "
                       f"({'; '.join(sorted(c.describe() for c in seen))}); give SAEs made one way.")
    return seen.pop()


def adopt_conventions(settings: BaselineSettings, conventions, given: Collection[str]) -> None:
    """Every arm's contexts made as the user's SAEs' were: BOS first or not, and their length, unless the user
    said otherwise (then a warning: the SAEs are measured on inputs unlike their training inputs)."""
    from randsae.settings import flag_of, value_text

    fields = {f.name: f for f in dataclasses.fields(BaselineSettings)}

    def as_flag(name: str, value) -> str:  # as the user would give it
        shown = value_text(fields[name], value)
        return shown if isinstance(value, bool) else f"{flag_of(fields[name])} {shown}"

    for name, value in (("prepend_bos", conventions.prepend_bos), ("context_length", conventions.context_size)):
        if value is None or getattr(settings, name) == value:
            continue
        if name in given:
            log.warning("the SAEs of --sae %s were trained with %s, but the study makes every arm's contexts with "
                        "%s, as asked: they are measured on inputs unlike those they learnt from", settings.sae,
                        as_flag(name, value), as_flag(name, getattr(settings, name)))
            continue
        log.info("--sae %s was trained with %s: every arm's contexts are made so", settings.sae,
                 as_flag(name, value))
        setattr(settings, name, value)


def check_user_saes(settings: BaselineSettings, check: Preflight, sae_dir: Path, found: dict[int, Path]) -> None:
    """The --sae SAEs (`user_saes`) read: their width, architecture and shape, recorded in `check`."""
    from randsae.sae.files import read_sae_files

    shapes = set()
    for path in found.values():
        cfg, _ = read_sae_files(path)
        if cfg["d_in"] != check.d_model:
            raise BadInput(f"the SAE in {path} reads {cfg['d_in']} inputs, but {settings.model}'s residual "
                             f"stream has {check.d_model}; is it an SAE of another model?")
        architecture = cfg.get("saved_as", cfg["architecture"])
        if architecture == "relu":
            raise BadInput(f"the SAE in {path} is a ReLU + L1 SAE of the toy experiments, not one the study "
                           "compares (TopK, JumpReLU, Gated, BatchTopK, Matryoshka).")
        if settings.twin_sae == "same" and architecture not in TWIN_OF:
            raise BadInput(f"the SAE in {path} is a {architecture} SAE, which randsae does not train; give "
                           "--twin-sae topk for TopK twins at its measured L0.")
        if cfg["d_sae"] % cfg["d_in"]:
            raise BadInput(f"the SAE in {path} has {cfg['d_sae']} latents, not a multiple of its {cfg['d_in']} "
                             "inputs; the twins' expansion would not match.")
        widths = cfg.get("matryoshka_widths")
        check.sae_normalization = cfg.get("normalization", "none")  # one for all of them (`sae_conventions`)
        shapes.add((architecture, cfg.get("k") or cfg.get("batch_k"), cfg["d_sae"] // cfg["d_in"],
                    tuple(widths) if widths else None))
    if settings.layers not in ("all", "paper"):
        missing = [layer for layer in check.layers if layer not in found]
        if missing:
            raise BadInput(f"--sae {sae_dir} holds no SAE of layer {missing[0]} (it holds {sorted(found)}).")
        found = {layer: found[layer] for layer in check.layers}
    if len(shapes) > 1:
        described = sorted(f"{a} k={k} ×{e}" for a, k, e, _ in shapes)
        raise BadInput(f"the SAEs in {sae_dir} differ in architecture, k or size ({', '.join(described)}); give "
                       "one configuration.")
    check.sae_layers = {layer: str(path) for layer, path in found.items()}
    check.layers = sorted(found)
    check.sae_architecture, check.sae_k, check.sae_expansion, widths = shapes.pop()
    check.sae_widths = list(widths) if widths else None


def ranks_here() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def study_scale(settings: BaselineSettings, check: Preflight, ranks: int, cache: bool, devices: int = 1):
    """The sizes of the study that its plan multiplies."""
    from randsae.lm.source import contexts_drawn
    from randsae.study.plan import Scale
    from randsae.training.trainer import plan_schedule

    s = settings
    units = study_units(s)
    config, fixed = train_config_for(s, check, "control")
    latents = (check.sae_expansion or s.expansion) * check.d_model
    schedule = plan_schedule(config, s.tokens, latents, fixed, s.schedule == "budget")
    wanted = -(-s.tokens // s.context_length)
    drawn = contexts_drawn(wanted) * s.context_length
    train = wanted * s.context_length
    examples = dataclasses.replace(s.examples, seed=s.seed)
    judged_latents = s.autointerp.judged_latents
    judged = examples.sample if judged_latents is None else judged_latents
    probing = s.probing
    host = 2 * check.shape.weight_bytes(s.model_dtype) if s.device_map is not None and check.shape else 0
    return Scale(units=units, base_units={u for u in units if base_unit(u) == u},
                 imported={"trained"} if s.sae is not None else set(), layers=len(check.layers),
                 through=max(check.layers) + 1, latents=latents,
                 k=check.sae_k or s.k, batch=schedule.batch_size, train_tokens=train, drawn_tokens=drawn,
                 eval_tokens=min(s.eval_tokens, drawn - train), latent_tokens=s.latent_tokens, cache=cache,
                 cache_dtype=s.cache_dtype or "float16", model_dtype=s.model_dtype,
                 context_length=s.context_length, split=devices if s.device_map is not None else 1,
                 sampled=examples.sample, judged=judged, ranks=ranks, fit_tokens=s.fit_tokens,
                 judge_bytes=local_judge_bytes(s), host_bytes=host,
                 stages=tuple(stage for stage in ordered() if stage.wanted(s)),
                 probe_train_tokens=probing.probe_train_tokens,
                 probe_test_tokens=probing.probe_test_tokens)


def local_judge_bytes(settings: BaselineSettings) -> int:
    """The local judge's peak on its device (its weights and one batch's key-value cache); 0 behind a server."""
    from randsae.lm.models import load_config
    from randsae.study.plan import judge_bytes
    from randsae.study.shapes import model_shape

    options = judge_options(settings)
    if "llm" not in options or not judge_asked(settings):
        return 0
    config = load_config(options["llm"])
    heads = getattr(config, "num_attention_heads", 1)
    kv_dim = getattr(config, "num_key_value_heads", heads) * (config.hidden_size // heads)
    return judge_bytes(model_shape(config, options["llm"]), options["dtype"], options["batch_size"], kv_dim)


def study_rates(settings: BaselineSettings, check: Preflight, machine: "Machine", out: Path, batch: int):
    """The rates the plan divides by: a stated machine's, or this one's as measured (and kept)."""
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.study.calibrate import rates
    from randsae.study.plan import Rates, stated_rates

    assert check.shape is not None
    if machine.stated:
        return stated_rates(machine, check.shape, settings.model_dtype)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 measures, and keeps the plan
        return Rates(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "not measured on this rank",
                     "not measured on this rank")
    from randsae.lm.models import loading, read_device_map

    examples = dataclasses.replace(settings.examples, seed=settings.seed)
    # without a latent scorer the plan has no autointerp stage: its rates are measured on the cheapest scorer
    autointerp = autointerp_settings(settings, settings.seed) if latent_scorers(settings) else \
        AutointerpSettings(seed=settings.seed, scorers=["tokens"])
    with loading(settings.model_dtype, read_device_map(settings.device_map)):
        return rates(settings, check.shape, settings.device, judge_options(settings), autointerp, examples, out,
                     batch)


def planned(settings: BaselineSettings, check: Preflight, out: Path, machine: "Machine",
            ranks: int) -> tuple[BaselineSettings, "list[PlanRow]", str | None]:
    """(the settings with --cache decided, the plan, why it does not fit the machine or None). Undecided, the
    cache is kept where the plan says it fits and the model trains every layer on the fly otherwise; a study
    already begun in OUT keeps what it began with."""
    import dataclasses

    from randsae.study.plan import plan_study, why_not_fits

    assert check.shape is not None
    shape = check.shape
    scale = study_scale(settings, check, ranks, True, machine.devices)
    rates = study_rates(settings, check, machine, out, scale.batch)

    def plan(cache: bool) -> "tuple[list[PlanRow], str | None]":
        rows = plan_study(shape, dataclasses.replace(scale, cache=cache), rates, machine)
        return rows, why_not_fits(rows, machine, cache, settings.model, settings.model_dtype, shape, ranks,
                                  settings.device_map is not None)

    cache = settings.cache
    if cache is None:
        previous = runs.previous_record(out, "baseline")
        recorded = (previous or {}).get("settings", {}).get("cache") if previous else None
        if isinstance(recorded, bool):
            cache = recorded
        else:
            need = sum(r.disk_bytes for r in plan(True)[0])  # the cache is a matter of disk
            cache = need <= machine.disk_free
            if not cache:
                log.warning("the study with its activation cache would write %s, more than the %s free: every "
                            "layer trains on the fly from one pass of the model (--no-cache)", format_bytes(need),
                            format_bytes(machine.disk_free))
    settings = dataclasses.replace(settings, cache=cache)
    rows, problem = plan(cache)
    return settings, rows, problem


def write_plan(out: Path, rows: "list[PlanRow]", machine: "Machine", ranks: int) -> None:
    from randsae.study.plan import PlanRow
    from randsae.tables import write_table

    write_table(out / "plan.csv", rows, PlanRow)
    io.write_json(out / "plan.json", {"machine": asdict(machine), "ranks": ranks})

