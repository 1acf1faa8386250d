"""A study's plan before it runs: per unit and stage, the tokens it reads, the disk it writes, the peak memory
per device and the time — from the model's config (its shapes, no weights), the settings and the machine
(this one, or one stated with --machine), the time from throughputs this machine measured
(`randsae.study.calibrate`) or, for a stated machine, from its GPUs' peak rates at a stated utilisation.

`randsae baseline --plan` prints it and writes nothing; every real run makes the same plan first, refuses in
one sentence a study whose disk or memory does not fit (naming the cheaper setting), and keeps it in
OUT/plan.csv (`PlanRow`) so that the report sets it beside what each stage took (docs/reference.md "Planning
a study").

The formulas, per token (docs/choices.md "The plan's arithmetic"): a model forward pass costs 2 × its
non-embedding parameters + 2 × vocabulary × d (the unembedding) + 2 × layers × context × d (attention);
training a TopK SAE of L latents on d inputs costs 6 × d × L (encoder forward and backward, the decoder's
k-sparse rows being negligible beside it), encoding 2 × d × L.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from randsae.config import FIT_TOKENS, PROBE_TOKENS
from randsae.resources import FLOAT_BYTES, format_bytes
from randsae.settings import setting
from randsae.study.machines import Machine
from randsae.study.records import REGISTRY, Stage, StageRecord, directory_bytes, directory_of
from randsae.study.shapes import ModelShape, dtype_bytes
from randsae.tables import PlanRow

# the fraction of that peak a stated machine is assumed to reach (not measured): a transformer's forward pass,
# an SAE's training step
STATED_UTILISATION = {"forward": 0.35, "sae": 0.35}
# the basis of a stage's time that no calibration measures (the comparison with its bootstrap, the report): a
# fixed number of seconds its module states
FIXED = "fixed allowance"
# the judge's scoring of the known-answer set, the first time a machine runs it: this many latents' worth
CALIBRATION_LATENTS = 8
# the basis of a time the plan does not estimate (a judge behind a server: no call is paid for a plan)
NOT_TIMED = "the judge's time is not estimated: it is a server, and the plan pays for no call"
READS_CACHE = "reads its variant's cache"
IGNORED_BASES = (FIXED, READS_CACHE)
LATENT_ENTRY_BYTES = 20  # a latent-cache entry: value and index in the shard (8), and in the latent's index (12)
SUMMARY_BYTES = 300  # a latent's row in latents.csv


def sae_train_flops(d_model: int, latents: int) -> float:
    return 6.0 * d_model * latents


def sae_encode_flops(d_model: int, latents: int) -> float:
    return 2.0 * d_model * latents


def sae_train_bytes(d_model: int, latents: int, batch: int) -> int:
    """One SAE in training: both matrices, their gradients and Adam's two moments (8 × L × d floats), and the
    encoder's dense product on one batch (as `lm train` checks before it builds one)."""
    return FLOAT_BYTES * (8 * latents * d_model + batch * latents)


@dataclass(frozen=True)
class Rates:
    """The throughputs a plan divides by: FLOP/s of a forward pass and of SAE training and encoding, seconds to
    load a model, bytes/s of the disk, and the judge's seconds (per judged latent, per latent it does not ask,
    its load, its known-answer calibration) — measured here (`calibrate`) or stated."""
    forward_flops: float
    sae_train_flops: float
    sae_encode_flops: float
    load_seconds: float
    disk_bytes_per_s: float
    judged_latent_seconds: float
    other_latent_seconds: float
    judge_load_seconds: float
    calibration_seconds: float  # 0 when the judge's calibration is already kept on this machine
    basis: str
    judge_basis: str
    # the latents stage's own code (`calibrate.latent_rates`): seconds per layer and per token per layer, at this
    # many latents; 0: estimated from the encoding's FLOPs alone
    latent_layer_seconds: float = 0.0
    latent_token_seconds: float = 0.0
    latent_width: int = 0


def stated_rates(machine: Machine, shape: ModelShape, dtype: str) -> Rates:
    """A stated machine's rates: its GPUs' peak at STATED_UTILISATION; loading at 2 GB/s; an LLM judge's
    seconds per latent as the paper's 70B judge behind vLLM gives them (about 20 s per judged latent, every
    scorer; 0.05 s for one it does not ask)."""
    peak = machine.peak_flops or 1e12
    return Rates(peak * STATED_UTILISATION["forward"], peak * STATED_UTILISATION["sae"],
                 peak * STATED_UTILISATION["sae"], shape.weight_bytes(dtype) / 2e9 + 10, 2e9, 20.0, 0.05, 0.0, 0.0,
                 f"stated: {machine.devices} × {machine.name}, {peak / 1e12:.0f} TFLOP/s peak at "
                 f"{STATED_UTILISATION['forward']:.0%} utilisation (assumed, not measured)",
                 "stated: a 70B judge behind vLLM, about 20 s per judged latent (assumed, not measured)")


@dataclass(frozen=True)
class Scale:
    """The sizes of one study that the plan multiplies: per unit, its tokens and layers."""
    units: list[str]
    base_units: set[str]  # the units that cache their own activations (not a random dictionary's arm)
    imported: set[str]  # the units whose SAEs the user gave (no training)
    layers: int
    through: int  # the blocks a pass that reads the layers runs (the last layer + 1)
    latents: int
    k: int
    batch: int
    train_tokens: int
    drawn_tokens: int  # training + held-out contexts' tokens
    eval_tokens: int
    latent_tokens: int | None  # None: from the training cache
    cache: bool
    cache_dtype: str
    model_dtype: str
    context_length: int
    sampled: int  # latents per layer given examples
    judged: int  # of them, explained and scored by the judge
    ranks: int
    split: int = 1  # the devices the model is split across (--device-map)
    fit_tokens: int = FIT_TOKENS  # the training tokens each arm's baselines are fitted on
    judge_bytes: int = 0  # a local judge's peak on its device (`judge_bytes`); 0 behind a server
    host_bytes: int = 0  # a model split across devices: made whole on the CPU with its twin first
    stages: tuple[Stage, ...] = ()  # the stages the settings ask for, in the order they run
    probe_train_tokens: int = PROBE_TOKENS
    probe_test_tokens: int = PROBE_TOKENS


def plan_study(shape: ModelShape, scale: Scale, rates: Rates, machine: Machine) -> list[PlanRow]:
    """Every unit's stages and the stages across units (`scale.stages`), each estimated by its stage's `cost`
    (see the module's docstring); a row of a stage that loads the model and reads tokens holds the host memory a
    split model is made whole in."""
    rows = []
    for unit in [*scale.units, ""]:
        for stage in scale.stages:
            if stage.cost is None or stage.per_unit != bool(unit):
                continue
            row = stage.cost(Unit.of(unit, shape, scale, rates, machine.device_memory))
            if row is not None and stage.loads_model and row.tokens:
                row.host_memory_bytes = scale.host_bytes
            rows += [row] if row is not None else []
    return rows


@dataclass(frozen=True)
class Unit:
    """What one unit's stages share: the sizes, the rates, the device's memory, and the costs every stage
    reads."""
    name: str
    s: Scale
    r: Rates
    d: int
    weights: int  # bytes of the model's weights on one device
    forward: float  # seconds per token of a pass through the layers read
    whole: float  # seconds per token of the whole model's pass (the CE loss)
    cache_bytes: int
    memory: int  # bytes of one device

    @classmethod
    def of(cls, name: str, shape: ModelShape, s: Scale, r: Rates, memory: int) -> "Unit":
        return cls(name, s, r, shape.d_model, shape.weight_bytes(s.model_dtype) // s.split,
                   shape.forward_flops(s.context_length, s.through) / r.forward_flops,
                   shape.forward_flops(s.context_length) / r.forward_flops,
                   s.train_tokens * s.layers * shape.d_model * dtype_bytes(s.cache_dtype), memory)

    @property
    def layer_sae_bytes(self) -> int:  # one layer's SAE for inference: both matrices
        return 2 * self.s.latents * self.d * FLOAT_BYTES


def layer_groups(layers: int, fixed: int, per_layer: int, memory: int) -> int:
    """How many groups `layers` layers are evaluated in so that each group's SAEs (`per_layer` bytes a layer) fit
    a device of `memory` bytes beside `fixed` bytes (the model, a batch): ⌈layers / the layers that fit⌉; one
    layer a group where not even one fits (the plan then says the stage does not fit)."""
    fits = (memory - fixed) // per_layer if memory > fixed else 0
    return layers if fits < 1 else math.ceil(layers / min(fits, layers))


def fixed_cost(stage: str, seconds: float) -> "Callable[[Unit], PlanRow]":
    """The plan's row of a stage across the units that no calibration measures: `seconds`, a fixed allowance."""
    return lambda _: PlanRow("", stage, 0, 0, 0, seconds, FIXED)


def judge_bytes(shape: ModelShape | None, dtype: str, batch: int, kv_dim: int | None = None,
                tokens: int = 512) -> int:
    """A local judge's peak on its device: its weights, and the key-value cache of one batch of `batch` prompts of
    up to `tokens` tokens (2 × layers × the key-value width per token, in its float type); 0 for a judge behind a
    server."""
    if shape is None:
        return 0
    width = kv_dim or shape.d_model
    return shape.weight_bytes(dtype) + 2 * shape.layers * width * batch * tokens * dtype_bytes(dtype)


def totals(rows: list[PlanRow]) -> PlanRow:
    return PlanRow("all", "total", sum(r.tokens for r in rows), sum(r.disk_bytes for r in rows),
                   max((r.peak_memory_bytes for r in rows), default=0), sum(r.seconds for r in rows),
                   rows[0].basis if rows else "")


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def by_stage(rows: list[PlanRow]) -> list[PlanRow]:
    """The plan summed per stage over units (the printed table), in the stages' order, then the total."""
    order = list(dict.fromkeys(r.stage for r in rows))
    out = []
    for stage in order:
        part = [r for r in rows if r.stage == stage]
        out.append(PlanRow(f"{len(part)} unit{'s' if len(part) > 1 else ''}" if part[0].unit else "", stage,
                           sum(r.tokens for r in part), sum(r.disk_bytes for r in part),
                           max(r.peak_memory_bytes for r in part), sum(r.seconds for r in part), part[0].basis,
                           max(r.groups for r in part), max(r.host_memory_bytes for r in part)))
    return [*out, totals(rows)]


def plan_table(rows: list[PlanRow], machine: Machine, ranks: int, text: str | None = None) -> str:
    """The plan per stage as a Markdown table, with the machine, the text (`text`: what it is) and the
    estimate's basis under it."""
    lines = ["| stage | units | tokens | disk written | peak memory per device | layer groups | time |",
             "|---|---|---|---|---|---|---|"]
    untimed = any(r.basis == NOT_TIMED for r in rows)
    for r in by_stage(rows):
        time = "not estimated (a server judge)" if r.basis == NOT_TIMED else format_seconds(r.seconds) + (
            " + the judge's" if r.stage == "total" and untimed else "")
        groups = str(r.groups) if r.stage in REGISTRY and REGISTRY[r.stage].grouped else ""
        lines.append(f"| {r.stage} | {r.unit} | {r.tokens:,} | {format_bytes(r.disk_bytes)} | "
                     f"{format_bytes(r.peak_memory_bytes)} | {groups} | {time} |")
    bases = sorted({r.basis for r in rows if r.basis not in IGNORED_BASES})
    wall = format_seconds(wall_seconds(rows, ranks)) + (" and the judge's time" if untimed else "")
    ranked = f"{ranks} rank{'s' if ranks > 1 else ''}"
    host = max((r.host_memory_bytes for r in rows), default=0)
    if host:
        lines += ["", f"Host memory: about {format_bytes(host)} while each model and its twin are made whole on "
                      "the CPU before --device-map dispatches them."]
    lines += ["", f"Machine: {machine.describe()}; {ranked}: about {wall} from start to end."]
    if text is not None:
        lines.append(f"Text: {text}.")
    lines.append("Time estimated from: " + "; ".join(bases) + ".")
    return "\n".join(lines) + "\n"


def why_not_fits(rows: list[PlanRow], machine: Machine, cache: bool, model: str, dtype: str, shape: ModelShape,
                 ranks: int, split: bool = False) -> str | None:
    """Why a study's disk or memory does not fit the machine, in one sentence naming the cheaper setting; None
    when it fits."""
    disk = sum(r.disk_bytes for r in rows)
    if disk > machine.disk_free:
        cache_disk = sum(r.disk_bytes for r in rows if r.stage == "activations")
        cheaper = (f"--no-cache trains on the fly and writes {format_bytes(disk - cache_disk)}; "
                   "or fewer --layers, --cache-dtype bfloat16, fewer --tokens") if cache and cache_disk else \
            "fewer --layers, --latent-tokens, or fewer --tokens"
        return (f"the study would write about {format_bytes(disk)} under --out, more than the "
                f"{format_bytes(machine.disk_free)} free there; {cheaper}.")
    weights = shape.weight_bytes(dtype) // (machine.devices if split else 1)
    if weights > machine.device_memory:
        cheaper = "--model-dtype bfloat16 halves it; " if dtype == "float32" else ""
        where = "each of the devices it is split across" if split else "one device"
        also = "" if split or machine.devices < 2 else "--device-map auto splits it across the GPUs; "
        return (f"{model} in {dtype} needs {format_bytes(weights)} on {where}, more than its "
                f"{format_bytes(machine.device_memory)}; {cheaper}{also}or choose larger devices.")
    worst = max(rows, key=lambda r: r.peak_memory_bytes)
    if worst.peak_memory_bytes <= machine.device_memory:
        return None
    if worst.stage == "train" and not cache:
        cheaper = "--cache trains one layer at a time"
        if ranks < machine.devices:
            cheaper = f"torchrun with {machine.devices} ranks deals the layers across the devices, or " + cheaper
    elif worst.stage == "train":
        cheaper = "a smaller --batch-size or --expansion"
    elif worst.stage in ("eval", "latents"):
        cheaper = ("even one layer's SAE does not fit beside the model: a smaller --expansion, --model-dtype "
                   "bfloat16" + (", or --device-map auto" if machine.devices > 1 and not split else ""))
    else:
        cheaper = "--model-dtype bfloat16 halves the model" + (", --device-map auto splits it across the GPUs"
                                                               if machine.devices > 1 else "")
    return (f"the {worst.stage} stage needs about {format_bytes(worst.peak_memory_bytes)} on one device, more "
            f"than its {format_bytes(machine.device_memory)}; {cheaper}.")


@dataclass
class PlanSettings:
    """What `randsae baseline --plan` is asked; neither changes a study's results, so neither is recorded in
    its config.json."""
    plan: bool = setting(False, help="print the study's plan (tokens, disk, peak memory per device and time per "
                                     "stage) and exit without writing anything")
    machine: str | None = setting(None, help="plan for a stated machine instead of this one: N×GPU-MEMORY and "
                                             "disk=SIZE, e.g. 8xA100-80GB,disk=2TB (cores=N, peak=TFLOPS)",
                                  shown="this machine")
    device_memory: str | None = setting(None, help=(
        "plan each device's work to this memory instead of what it has (e.g. 40GB: a GPU shared with other jobs); "
        "eval and latents then hold as many layers' SAEs at once as fit it, a pass over the text per group"),
                                        shown="the device's own")


def wall_seconds(rows: list[PlanRow], ranks: int) -> float:
    """The study's time on `ranks` ranks: the units' stages dealt across the ranks (the busiest rank's share,
    at least the slowest unit's), the training of each unit with its layers dealt, the rest in turn."""
    total = 0.0
    for stage in dict.fromkeys(r.stage for r in rows):
        part = sorted((r.seconds for r in rows if r.stage == stage), reverse=True)
        if stage in REGISTRY and REGISTRY[stage].dealt and ranks > 1:
            shares = [0.0] * ranks
            for seconds in part:  # longest first, each to the least loaded rank
                shares[shares.index(min(shares))] += seconds
            total += max(shares)
        else:
            total += sum(part)
    return total


def plan_grid(out: Path, stages: list[StageRecord]) -> tuple[list[str], list[list[str]]] | None:
    """Per stage (summed over units): the plan's time and disk (OUT/plan.csv) beside what the finished units
    took and wrote; None for a study without a plan."""
    from randsae.tables import read_table

    path = out / "plan.csv"
    if not path.is_file():
        return None
    plan: list[PlanRow] = read_table(path, PlanRow)
    records = {(r.unit, r.stage): r for r in stages}
    rows = []
    for stage in dict.fromkeys(r.stage for r in plan):
        part = [r for r in plan if r.stage == stage]
        done = [r for r in part if records.get((r.unit, stage)) and records[r.unit, stage].status == "done"]
        took = sum(records[r.unit, stage].seconds for r in done)
        planned_s = sum(r.seconds for r in done)
        directory = directory_of(stage)
        written = sum(directory_bytes(out / r.unit / directory) for r in done if r.unit) if directory else 0
        untimed = any(r.basis == NOT_TIMED for r in done)
        ratio = f"{took / planned_s:.2f}" if done and planned_s > 0 and not untimed else "–"
        shown = "not estimated (a server judge)" if untimed else format_seconds(planned_s) if done else "–"
        rows.append([stage, f"{len(done)} of {len(part)}", shown,
                     format_seconds(took) if done else "–", ratio,
                     format_bytes(sum(r.disk_bytes for r in done)) if done else "–",
                     format_bytes(written) if done else "–"])
    return ["stage", "units done", "planned", "took", "took / planned", "disk planned", "disk written"], rows

