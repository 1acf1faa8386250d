"""`randsae baseline`: the whole random-baseline study of one model in one command.

For each variant (docs/paper.md §2.1) the stages run in turn — activations, SAE training, quality eval, latent
records and entropy, auto-interpretability — then the comparison across variants and the report. One
model is in memory at a time (each stage loads what it needs and lets it go). Each stage is a call of the
command that does it alone (`lm activations`, `lm train`, …) into OUT/<variant>/<stage>, and each of those
already resumes where it stopped; OUT/stages.json records every finished stage, which a rerun does not
touch again. A stage that fails for one variant is recorded with its error, the variant's later stages are
left out, and the other variants go on. Under torchrun the units and each unit's layers are dealt across the
ranks (`Study.run_dealt`).

OUT/config.json    every setting (`BaselineSettings`), the preset it started from
OUT/stages.json    each stage's status, seconds and error (`StageRecord`)
OUT/plan.csv       the plan made before the run (`randsae.study.plan`: `PlanRow`), OUT/plan.json its machine
OUT/<variant>/{acts,sae,eval,latents,autointerp}/   the stages' own outputs
OUT/compare/       `lm compare` across the variants
OUT/report.md, OUT/report.html, OUT/figures/*.png   the report (randsae.study.report)
"""

import itertools
import json
import logging
import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from randsae import io, runs
from randsae.config import parse_count
from randsae.distributed import World
from randsae.errors import BadInput, check_seed
from randsae.lm.variants import VARIANTS
from randsae.resources import format_bytes
from randsae.sae.dictionaries import DEFAULT_CONE, arm_name, check_dictionary, split_arm
from randsae.settings import setting
from randsae.study.verdict import VerdictSettings

if TYPE_CHECKING:
    from randsae.study.plan import Machine, ModelShape, PlanRow

log = logging.getLogger(__name__)

STAGES = ("activations", "train", "eval", "latents", "autointerp")
TWIN_SAES = ("same", "topk")
# what the trainer trains (randsae.train_topk.ARCHITECTURES; the study cannot import it at module level)
TRAINED_ARCHITECTURES = ("topk", "jumprelu", "batchtopk", "matryoshka")
# a user's SAE (its architecture as SAELens names it) → the architecture its twins train with --twin-sae same
TWIN_OF = {"topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka"}
STUDY = "randsae baseline"


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _latent_tokens(text: str) -> int | str:
    return "cache" if text.strip() == "cache" else parse_count(text)


@dataclass
class BaselineSettings:
    """Every setting of a study (OUT/config.json), each declared once with its help: the presets fill them,
    a --config file overrides the preset, flags override both."""
    model: str = setting("smollm2", help="smollm2 (embedded), a .gguf file, a directory or a hub name")
    revision: str | None = setting(None, help="hub revision of the trained model", shown="the newest")
    variants: list[str] = setting(default_factory=lambda: list(VARIANTS), parse=_names,
                                  help=f"comma list of {', '.join(VARIANTS)}", shown="all five; the demo: four")
    layers: str = setting("all", help="'all', 'paper' (every layer to 410m parameters, every 2nd to 1b, every 4th "
                                      "above) or a comma list", shown="all; the paper preset: paper")
    dataset: str = setting("shakespeare", help="shakespeare (embedded), a .txt/.jsonl file or a Hugging Face "
                                               "data set")
    dataset_config: str | None = setting(None, help="the data set's configuration", shown="none")
    text_column: str = setting("text", help="the data set's column of text")
    context_length: int = setting(256, help="tokens per context")
    tokens: int = setting(100_000_000, parse=parse_count, help="training tokens per variant",
                          shown="100M; the demo: 32k")
    cache: bool | None = setting(None, help=(
        "cache every layer's activations and train from the cache (--cache), or train every layer on the fly "
        "from one pass of the model (--no-cache)"), shown="cache where the plan says the disk holds it; the demo: "
                                                          "cache")
    cache_dtype: str | None = setting(None, help="the activation cache's float type", shown=(
        "float16 (the paper's); bfloat16 for a bfloat16 model"))
    model_dtype: str = setting("float32", help=(
        "the float type the studied model is loaded in: float32, bfloat16 or float16; its block outputs reach the "
        "cache and the SAEs in it (the SAEs train and encode in float32)"))
    device_map: str | None = setting(None, help=(
        "split the studied model across devices (accelerate): auto (balanced over the visible GPUs) or a JSON "
        "file of module name → device (\"cpu\", \"disk\", 0, …); activations and evaluation run through the "
        "split model"), shown="none: the whole model on --device")
    k: int = setting(32, help="latents kept per token")
    expansion: int = setting(64, help="latents per input dimension", shown="64; the demo: 8")
    schedule: str = setting("budget", help="budget or paper, as `lm train --schedule`")
    batch_size: int | None = setting(None, help="tokens per optimiser step", shown="the budget rule")
    lr: float | None = setting(None, help="learning rate", shown="the budget rule")
    skip_positions: int = setting(0, help="as `lm train --skip-positions`")
    max_norm_ratio: float | None = setting(None, help="as `lm train --max-norm-ratio`", shown="none")
    eval_tokens: int = setting(64_000, parse=parse_count, help="held-out tokens for the quality eval",
                               shown="64k; the demo: every held-out token (14 contexts)")
    fit_tokens: int = setting(64_000, parse=parse_count, help=(
        "training tokens each arm's baselines (PCA-k, token lookup) are fitted on and its SAEs' training "
        "explained variance is measured on"))
    latent_tokens: int | None = setting(10_000_000, parse=_latent_tokens, help=(
        "tokens the latent records are drawn from, run on the fly after the training text, or 'cache': the "
        "training cache"), shown="10M; the demo: cache")
    examples: dict = field(default_factory=dict)  # ExampleSettings fields given (the rest the paper's)
    autointerp: dict = field(default_factory=dict)  # AutointerpSettings fields given
    judge: dict = field(default_factory=lambda: {"llm": "smollm2"})
    sae: str | None = setting(None, help=(
        "your SAEs as the trained arm: a directory (randsae, SAELens or sparsify; TopK, JumpReLU, Gated, "
        "BatchTopK, Matryoshka), sae-lens:RELEASE/ID (SAELens's registry) or hf:REPO/PATH; the twins get SAEs "
        "of the same size trained like yours (--twin-sae)"), shown="none")
    twin_sae: str = setting("same", help=(
        "how the twins' SAEs are trained beside yours (--sae): same (your architecture: JumpReLU to your SAE's "
        "measured L0, BatchTopK and Matryoshka with its k, TopK with its k) or topk (TopK, k = your SAE's "
        "measured L0)"))
    architecture: str = setting("topk", help="the SAEs every arm trains without --sae: topk (the paper's), "
                                             "jumprelu (to L0 = --k), batchtopk or matryoshka")
    seed: int = setting(0, help="seeds the variants, the contexts, the SAEs, the draws")
    seeds: int = setting(1, help=(
        "seeds per arm: seed s (counted from --seed) trains each arm's SAEs anew and draws each random twin "
        "anew (re-randomises, re-initialises, redraws the control's noise); with 1 a bootstrap over held-out "
        "tokens and latents stands in for the spread over seeds"))
    dictionaries: list[str] = setting(default_factory=lambda: ["trained"], parse=_names, help=(
        "comma list of the SAEs' dictionaries: trained, and random ones, each an arm of its own on the trained "
        "model: frozen-decoder, frozen-decoder-cov, soft-frozen-decoder, frozen-encoder (docs/choices.md "
        "\"Random dictionaries\")"), shown="trained")
    dictionaries_on_twins: bool = setting(False, help="give every random twin the random-dictionary arms too")
    dictionary_cone: float = setting(DEFAULT_CONE, help="as `lm train --dictionary-cone`")
    verdict: VerdictSettings = field(default_factory=VerdictSettings)
    device: str = setting("auto", help="auto, cpu or cuda")
    preset: str = "paper"

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        if self.cache_dtype is None:  # a bfloat16 model's activations stay bfloat16 end to end
            self.cache_dtype = "bfloat16" if self.model_dtype == "bfloat16" else "float16"
        self.validate()

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise BadInput(f"unknown variant {unknown[0]!r} in --variants; choose from {', '.join(VARIANTS)}.")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise BadInput(f"--variants must name each variant once, not {','.join(self.variants)!r}.")
        if "trained" not in self.variants:
            raise BadInput("--variants must include trained: every random twin is compared with it.")
        if len(self.variants) < 2:
            raise BadInput("--variants needs at least one random twin beside trained.")
        for name in ("tokens", "eval_tokens", "fit_tokens", "k", "expansion", "context_length", "seeds"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise BadInput(f"{flag} must be a positive integer, not {getattr(self, name)}.")
        check_seed(self.seed)
        from randsae.train_topk import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise BadInput(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}.")
        if self.twin_sae not in TWIN_SAES:
            raise BadInput(f"--twin-sae must be one of {', '.join(TWIN_SAES)}, not {self.twin_sae!r}.")
        if self.model_dtype not in ("float32", "bfloat16", "float16"):
            raise BadInput(f"--model-dtype must be float32, bfloat16 or float16, not {self.model_dtype!r}.")
        if self.architecture not in TRAINED_ARCHITECTURES:
            raise BadInput(f"--architecture must be one of {', '.join(TRAINED_ARCHITECTURES)}, not "
                           f"{self.architecture!r}.")
        if len(set(self.dictionaries)) != len(self.dictionaries):
            raise BadInput(f"--dictionaries must name each dictionary once, not {','.join(self.dictionaries)!r}.")
        for name in self.dictionaries:
            check_dictionary(name, self.dictionary_cone)
        self.verdict.validate()

    @property
    def random_dictionaries(self) -> list[str]:
        return [d for d in self.dictionaries if d != "trained"]


PRESETS = {
    # the embedded model, offline, minutes on 2 cores: what `make demo` runs (docs/results.md)
    "demo": {"model": "smollm2", "variants": ["trained", "rerandomized", "step0", "control"], "layers": "3,9",
             "cache": True,
             "tokens": 32_000, "expansion": 8, "eval_tokens": 3584, "latent_tokens": None,
             "examples": {"sample": 24, "min_examples": 20, "explainer_examples": 6, "test_examples": 10,
                          "non_activating": 10},
             # the judge (at chance here) explains and scores 2 latents a layer; token lookup and example
             # embedding score all 24
             "autointerp": {"explainer_tokens": 16, "calibration_windows": 5, "bootstrap": 200,
                            "judged_latents": 2},
             "judge": {"llm": "smollm2", "dtype": "auto"}},
    # docs/paper.md §2: R = 64, k = 32, 100M training tokens, every layer to 410m parameters (every 2nd to 1b,
    # every 4th above), a 10M-token latent cache, 100 latents, 40/100/100 example sets
    "paper": {"layers": "paper"},
}


def settings_for(preset: str, overrides: dict) -> BaselineSettings:
    if preset not in PRESETS:
        raise BadInput(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
    if values.get("latent_tokens") == "cache":  # --latent-tokens cache: the examples come from the training cache
        values["latent_tokens"] = None
    verdict = {**PRESETS[preset].get("verdict", {}), **(overrides.get("verdict") or {})}
    values["verdict"] = VerdictSettings(**verdict) if isinstance(verdict, dict) else verdict
    for part in ("examples", "autointerp", "judge"):
        values[part] = {**PRESETS[preset].get(part, {}), **(overrides.get(part) or {})}
    if overrides.get("judge") and "url" in overrides["judge"]:
        values["judge"] = overrides["judge"]  # a server replaces the local judge, not merged into it
    settings = BaselineSettings(**values)
    settings.validate()
    return settings


STATUSES = ("running", "done", "failed")


@dataclass
class StageRecord:
    variant: str  # "" for the stages across variants (compare, report)
    stage: str
    status: str  # "running", "done" or "failed"
    seconds: float = 0.0
    error: str | None = None


def read_stages(out: Path) -> dict[tuple[str, str], StageRecord]:
    path = out / "stages.json"
    if not path.is_file():
        return {}
    names = {f.name for f in fields(StageRecord)}
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise TypeError
        stages = [StageRecord(**{k: v for k, v in r.items() if k in names}) for r in records]
        for r in stages:
            if not (isinstance(r.variant, str) and isinstance(r.stage, str) and r.status in STATUSES
                    and isinstance(r.seconds, int | float) and isinstance(r.error, str | None)):
                raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        raise BadInput(f"{path} is not a study's list of stage records; move it away to start the study "
                       "again.") from None
    return {(r.variant, r.stage): r for r in stages}


def write_stages(out: Path, stages: dict[tuple[str, str], StageRecord]) -> None:
    text = json.dumps([asdict(r) for r in stages.values()], indent=1)
    io.atomic_write(out / "stages.json", lambda p: p.write_text(text))


def paper_layers(num_layers: int, parameters: float) -> list[int]:
    """docs/paper.md §2.2: every layer up to 410m parameters, every 2nd up to 1b, every 4th above."""
    step = 1 if parameters < 0.6e9 else 2 if parameters < 2e9 else 4
    return list(range(0, num_layers, step))


NEW_SETTINGS = {"dictionaries": ["trained"], "dictionaries_on_twins": False, "dictionary_cone": DEFAULT_CONE,
                "twin_sae": "same", "architecture": "topk", "model_dtype": "float32", "device_map": None,
                "fit_tokens": 64_000}


def check_out(out: Path, settings: BaselineSettings) -> None:
    """Refuse an OUT that holds another study, or anything else (nothing in it is touched)."""
    previous = runs.previous_record(out, "baseline")
    if previous is not None:
        if isinstance(previous.get("settings"), dict):  # what an older study did not record had its default
            previous = {**previous, "settings": {**NEW_SETTINGS, **previous["settings"]}}
        if previous.get("study") != STUDY:
            raise BadInput(f"{out} holds the output of another command ({out / 'config.json'}); choose another "
                           "--out.")
        if previous.get("settings") != io.json_round_trip(asdict(settings)):
            changed = sorted(k for k, v in asdict(settings).items()
                             if io.json_round_trip(v) != previous.get("settings", {}).get(k))
            what = ", ".join(changed) or "see config.json"
            raise BadInput(f"{out} holds a study with other settings ({what}); choose another --out or repeat "
                             "its settings.")
    elif out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise BadInput(f"{out} is not empty and holds no study; choose another --out.")


class Study:
    """One study's stages, run in order, recorded in OUT/stages.json."""

    def __init__(self, out: Path, settings: BaselineSettings, progress: bool = True,
                 preflight: "Preflight | None" = None):
        self.out, self.settings, self.progress, self.preflight = out, settings, progress, preflight
        self.stages = read_stages(out)
        self.world: World | None = None  # under torchrun: the ranks the work is dealt across (`run_dealt`)
        self.groups: dict[str, int] = {}  # eval, latents: the layer groups the plan fits a device with

    def group_layers(self, stage: str) -> int | None:
        """The layers a group of `stage` holds, where the plan splits them into groups (None: all at once)."""
        from randsae.study.plan import group_size

        groups = self.groups.get(stage, 1)
        return group_size(len(self.checked.layers), groups) if groups > 1 else None

    @property
    def checked(self) -> "Preflight":
        """What the preflight found: every stage runs after it."""
        assert self.preflight is not None, "a study's stages run after its preflight"
        return self.preflight

    def directory(self, unit: str, stage: str) -> Path:
        return self.out / unit / stage

    def units(self, index: int | None = None) -> list[str]:
        """The study's units in order — each variant at seed 0, each followed by its random-dictionary arms
        (`trained+frozen-decoder`; the twins' with --dictionaries-on-twins), then the same at seed 1, …
        (`unit_name`); the user's own SAEs (--sae) are one trained arm, so the trained variant has seed 0
        only. `index`: one seed's."""
        return study_units(self.settings, index)

    def plan(self) -> list[tuple[str, str]]:
        return [(u, s) for u in self.units() for s in STAGES] + [("", "compare"), ("", "report")]

    def run(self, work: dict) -> dict[tuple[str, str], StageRecord]:
        """Run every stage not done yet; `work[stage](study, variant)` does one. Returns the records."""
        plan = self.plan()
        done = sum(1 for key in plan if self.stages.get(key, StageRecord("", "", "")).status == "done")
        bar = tqdm(total=len(plan), initial=done, unit="stage", disable=not self.progress, desc="baseline",
                   bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} elapsed, ETA {remaining}")
        failed_variants: set[str] = set()
        ran = False  # a variant's stage ran: the comparison and the report are made again
        for variant, stage in plan:
            key = (variant, stage)
            if key in self.stages and self.stages[key].status == "done" and not (variant == "" and ran):
                continue
            if variant in failed_variants:
                continue
            ran = ran or variant != ""
            bar.set_description(f"{variant or 'all'} · {stage}")
            if self.run_stage(work, variant, stage).status == "failed":
                failed_variants.add(variant)
            bar.update(1)
        bar.close()
        return self.stages

    def record(self, record: StageRecord) -> None:
        """Keep one stage's record in OUT/stages.json (under torchrun: merged with the other ranks' under a
        lock, each rank writing only the records of the work it does)."""
        self.stages[record.variant, record.stage] = record
        if self.world is None or not self.world.distributed:
            write_stages(self.out, self.stages)
            return
        with io.file_lock(self.out / ".stages.lock"):
            merged = read_stages(self.out)
            merged[record.variant, record.stage] = record
            write_stages(self.out, merged)

    def run_stage(self, work: dict, variant: str, stage: str) -> StageRecord:
        """One stage of one unit (or across units), recorded running, then done or failed."""
        from randsae.lm.models import loading, read_device_map

        self.record(StageRecord(variant, stage, "running"))
        killer = KillForTest.armed(variant, stage)
        start = time.perf_counter()
        try:
            with loading(self.settings.model_dtype, read_device_map(self.settings.device_map)):
                work[stage](self, variant)
            if killer is not None:
                killer.stage_over()
        except Exception as error:  # one variant's failure is reported; the others go on
            collective = stage == "train" and self.world is not None and self.world.distributed
            if variant == "" or isinstance(error, MemoryError) or collective:
                self.record(StageRecord(variant, stage, "failed", time.perf_counter() - start,
                                        f"{type(error).__name__}: {error}"))
                raise
            message = self.failure(variant, stage, error)
            self.record(StageRecord(variant, stage, "failed", time.perf_counter() - start, message))
        else:
            self.record(StageRecord(variant, stage, "done", time.perf_counter() - start))
        finally:
            if killer is not None:
                killer.disarm()
        record = self.stages[variant, stage]
        log.info("%s · %s: %s in %.1f s", variant or "all", stage, record.status, record.seconds)
        return record

    def run_dealt(self, work: dict, world: World) -> dict[tuple[str, str], StageRecord]:
        """The stages under torchrun, dealt across the ranks: each unit's activations, eval, latents and
        autointerp run on the rank that owns the unit (unit i on rank i mod N), by itself; each unit's training
        runs on every rank together, each rank training its share of the layers; rank 0 then compares and
        reports. A phase ends when every rank has finished its share of it. Each rank records the stages it
        runs in the one OUT/stages.json; a rerun (after a kill of any rank) redoes only what is not done."""
        from randsae.distributed import alone, any_rank

        self.world = world
        units = self.units()
        owned = [u for i, u in enumerate(units) if i % world.size == world.rank]
        bar = tqdm(total=len(self.plan()), unit="stage", disable=not (self.progress and world.is_main),
                   desc="baseline", bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} elapsed")
        ran = False

        def todo(unit: str, stage: str) -> bool:
            self.stages = read_stages(self.out)
            if any(self.stages.get((unit, s), StageRecord("", "", "")).status == "failed" for s in STAGES):
                return False
            return self.stages.get((unit, stage), StageRecord("", "", "")).status != "done"

        def mine(stages: tuple[str, ...]) -> None:
            nonlocal ran
            for unit in owned:
                for stage in stages:
                    if todo(unit, stage):
                        ran = True
                        with alone():
                            self.run_stage(work, unit, stage)
            world.barrier()
            self.show(bar)

        mine(("activations",))
        for unit in units:  # every rank together, in the same order, all agreeing whether it is still to do
            if any_rank(world, todo(unit, "train")):
                ran = True
                if unit == "trained" and self.settings.sae is not None:  # your SAEs: read by one rank
                    if world.is_main:
                        with alone():
                            self.run_stage(work, unit, "train")
                elif world.is_main:  # rank 0 keeps the record of the work they share
                    self.run_stage(work, unit, "train")
                else:
                    work["train"](self, unit)
                world.barrier()
        self.show(bar)
        mine(("eval", "latents", "autointerp"))
        ran = any_rank(world, ran)
        if world.is_main:
            self.stages = read_stages(self.out)
            for stage in ("compare", "report"):
                if ran or self.stages.get(("", stage), StageRecord("", "", "")).status != "done":
                    with alone():
                        self.run_stage(work, "", stage)
        world.barrier()
        self.show(bar)
        bar.close()
        self.stages = read_stages(self.out)
        return self.stages

    def show(self, bar) -> None:
        """The one progress display (rank 0's): the stages every rank has finished."""
        done = sum(1 for r in read_stages(self.out).values() if r.status == "done")
        bar.update(done - bar.n)

    def failure(self, variant: str, stage: str, error: Exception) -> str:
        """What a failed stage's record says: bad input its one sentence; a fault its first line and where its
        traceback is kept (the stage's error.txt), the traceback also logged."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, BadInput):
            log.error("%s · %s failed: %s (the other variants go on)", variant, stage, first)
            return first
        path = self.directory(variant, stage) / "error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_write(path, lambda p: p.write_text("".join(traceback.format_exception(error))))
        log.error("%s · %s failed (the other variants go on)", variant, stage, exc_info=error)
        return f"{type(error).__name__}: {first} (traceback in {path.relative_to(self.out)})"

    def finished(self, stage: str, index: int | None = None) -> list[str]:
        """The units (of seed `index`, or all) whose `stage` is done."""
        return [u for u in self.units(index) if self.stages.get((u, stage), StageRecord("", "", "")).status
                == "done"]


def study_units(s: BaselineSettings, index: int | None = None) -> list[str]:
    """`Study.units` of a study with these settings."""
    units = []
    for i in range(s.seeds) if index is None else [index]:
        for v in s.variants:
            if i and v == "trained" and s.sae is not None:
                continue
            units.append(unit_name(v, i))
            if v == "trained" or s.dictionaries_on_twins:
                units += [unit_name(arm_name(v, d), i) for d in s.random_dictionaries]
    return units


def unit_name(variant: str, index: int) -> str:
    """A study's unit of work: a variant at one seed — `rerandomized` (seed 0), `rerandomized/seed1`, …; its
    stages write under OUT/<unit>/."""
    return variant if index == 0 else f"{variant}/seed{index}"


def parse_unit(unit: str) -> tuple[str, int]:
    """(arm, seed index) of a unit; the arm is a variant, or a variant and a random dictionary (`split_arm`)."""
    variant, _, seed = unit.partition("/seed")
    return variant, int(seed or 0)


def base_unit(unit: str) -> str:
    """The unit whose activations a random-dictionary arm reads: its variant's at its seed."""
    arm, index = parse_unit(unit)
    return unit_name(split_arm(arm)[0], index)


class KillForTest:
    """RANDSAE_TEST_KILL="<variant>/<stage>[@N]": SIGKILL this process inside that stage, right after the Nth
    file (default 1) the stage puts in place through `io.atomic_write`, or, when the stage writes fewer, once
    its work is over but before it is recorded done. The kill is triggered by what the run writes, never by a
    clock. The kill-and-resume tests set the variable; nothing else does."""

    def __init__(self, writes: int):
        self.writes = writes
        io.AFTER_WRITE.append(self.written)

    @classmethod
    def armed(cls, variant: str, stage: str) -> "KillForTest | None":
        target, _, count = os.environ.get("RANDSAE_TEST_KILL", "").partition("@")
        return cls(int(count or 1)) if target == f"{variant}/{stage}" else None

    def written(self, path: Path) -> None:
        self.writes -= 1
        if self.writes <= 0:
            self.stage_over()

    @staticmethod
    def stage_over() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def disarm(self) -> None:
        io.AFTER_WRITE.remove(self.written)


def stage_grid(stages: list[StageRecord]) -> tuple[list[str], list[list[str]]]:
    """Seconds per stage (rows) and variant (columns) of OUT/stages.json's records; a failed stage shows its
    error."""
    variants = list(dict.fromkeys(r.variant for r in stages if r.variant))
    records = {(r.variant, r.stage): r for r in stages}
    rows = []
    for stage in dict.fromkeys(r.stage for r in stages):
        cells = []
        for variant in (*variants, ""):
            r = records.get((variant, stage))
            if r is None:
                cells.append("")
            elif stage == "report" and r.status == "running":
                cells.append("this report")
            elif r.status == "done":
                cells.append(f"{r.seconds:.0f} s")
            else:
                cells.append(r.status.upper() + (f": {r.error}" if r.error else ""))
        rows.append([stage, *cells])
    total = sum(r.seconds for r in stages)
    rows.append(["total", *[""] * len(variants), f"{total / 60:.1f} min"])
    return ["stage", *variants, "across variants"], rows


def stage_table(stages: dict[tuple[str, str], StageRecord]) -> str:
    """Seconds per stage and variant, as the report shows them (a Markdown table)."""
    return markdown_table(*stage_grid(list(stages.values()))) + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


STAGE_DIRECTORIES = {"activations": "acts", "train": "sae", "eval": "eval", "latents": "latents",
                     "autointerp": "autointerp"}


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def plan_grid(out: Path, stages: list[StageRecord]) -> tuple[list[str], list[list[str]]] | None:
    """Per stage (summed over units): the plan's time and disk (OUT/plan.csv) beside what the finished units
    took and wrote; None for a study without a plan."""
    from randsae.study.plan import NOT_TIMED, PlanRow, format_seconds
    from randsae.tables import read_table

    path = out / "plan.csv"
    if not path.is_file():
        return None
    plan: list[PlanRow] = read_table(path, PlanRow)
    records = {(r.variant, r.stage): r for r in stages}
    rows = []
    for stage in dict.fromkeys(r.stage for r in plan):
        part = [r for r in plan if r.stage == stage]
        done = [r for r in part if records.get((r.unit, stage)) and records[r.unit, stage].status == "done"]
        took = sum(records[r.unit, stage].seconds for r in done)
        planned_s = sum(r.seconds for r in done)
        written = sum(directory_bytes(out / r.unit / STAGE_DIRECTORIES[stage]) for r in done if r.unit) \
            if stage in STAGE_DIRECTORIES else 0
        untimed = any(r.basis == NOT_TIMED for r in done)
        ratio = f"{took / planned_s:.2f}" if done and planned_s > 0 and not untimed else "–"
        shown = "not estimated (a server judge)" if untimed else format_seconds(planned_s) if done else "–"
        rows.append([stage, f"{len(done)} of {len(part)}", shown,
                     format_seconds(took) if done else "–", ratio,
                     format_bytes(sum(r.disk_bytes for r in done)) if done else "–",
                     format_bytes(written) if done else "–"])
    return ["stage", "units done", "planned", "took", "took / planned", "disk planned", "disk written"], rows


# --- what one study needs before it writes anything -----------------------------------------------------------

@dataclass
class Preflight:
    """What the checks before any work found: the layers to study and, with --sae, the SAEs' shape."""
    layers: list[int]
    d_model: int
    sae_layers: dict[int, str] = field(default_factory=dict)
    sae_k: int | None = None  # a TopK or BatchTopK SAE's
    sae_expansion: int | None = None
    sae_architecture: str | None = None  # SAELens's name: topk, jumprelu, gated, batchtopk, matryoshka_batchtopk
    sae_widths: list[int] | None = None  # a Matryoshka SAE's nested widths
    shape: "ModelShape | None" = None  # the model's sizes (randsae.study.plan), for the plan


def preflight(settings: BaselineSettings) -> Preflight:
    """Every check that needs no work, before anything is written: the device, the model (its config loads),
    the layers and the context length lie in it, the training settings, the text, the judge, the user's SAEs
    read its width. One sentence (BadInput) otherwise: a study never finds its own settings wrong minutes in."""
    from randsae.config import resolve_device
    from randsae.lm.activations import parse_layers
    from randsae.lm.models import load_config, read_device_map
    from randsae.study.plan import model_shape
    from randsae.train_topk import TopKTrainConfig

    resolve_device(settings.device)
    read_device_map(settings.device_map)
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
    check_text(settings)
    check_judge(settings)
    if settings.layers == "paper":
        vocab = getattr(config, "vocab_size", 0)
        layers = paper_layers(num_layers, 12 * num_layers * d_model ** 2 + 2 * vocab * d_model)
    else:
        layers = parse_layers(settings.layers, num_layers)
    check = Preflight(layers, d_model, shape=model_shape(config, settings.model))
    if settings.sae is not None:
        check_user_saes(settings, check)
    return check


def check_text(settings: BaselineSettings) -> None:
    """A text file given as --dataset exists and holds a document (a hub data set is streamed later)."""
    from randsae.lm.text import EMBEDDED_CORPUS, documents

    path = Path(settings.dataset).expanduser()
    if settings.dataset == EMBEDDED_CORPUS or not (path.suffix in (".txt", ".jsonl") or path.exists()):
        return
    if not path.is_file():
        raise BadInput(f"--dataset {path} does not exist.")
    first = itertools.islice(documents(settings.dataset, settings.text_column), 1000)
    if not any(str(doc).strip() for doc in first):
        raise BadInput(f"--dataset {path} holds no text.")


def check_judge(settings: BaselineSettings) -> None:
    """The judge the autointerp stage will ask can be: its settings, its server answering with the model, or
    its local model found — checked now, not after every variant has trained."""
    import asyncio

    from randsae.autointerp.clients import make_judge
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


def check_user_saes(settings: BaselineSettings, check: Preflight) -> None:
    from randsae.experiments.lm_train import foreign_layers, trained_layers
    from randsae.sae.files import read_sae_files
    from randsae.sae.names import resolve

    assert settings.sae is not None
    sae_dir = resolve(settings.sae)
    if not sae_dir.exists():
        raise FileNotFoundError(f"--sae {sae_dir} does not exist.")
    found = trained_layers(sae_dir) if (sae_dir / "config.json").is_file() else foreign_layers(
        sae_dir, settings.layers)
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


# --- the plan (randsae.study.plan) ------------------------------------------------------------------------------

def ranks_here() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def study_scale(settings: BaselineSettings, check: Preflight, ranks: int, cache: bool, devices: int = 1):
    """The sizes of the study that its plan multiplies."""
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.lm.examples import ExampleSettings
    from randsae.lm.source import contexts_drawn
    from randsae.study.plan import Scale
    from randsae.train_topk import plan_schedule

    s = settings
    units = study_units(s)
    config, fixed = train_config_for(s, check, "control")
    latents = (check.sae_expansion or s.expansion) * check.d_model
    schedule = plan_schedule(config, s.tokens, latents, fixed, s.schedule == "budget")
    wanted = -(-s.tokens // s.context_length)
    drawn = contexts_drawn(wanted) * s.context_length
    train = wanted * s.context_length
    examples = ExampleSettings(seed=s.seed, **s.examples)
    autointerp = AutointerpSettings(seed=s.seed, **s.autointerp)
    judged = examples.sample if autointerp.judged_latents is None else autointerp.judged_latents
    host = 2 * check.shape.weight_bytes(s.model_dtype) if s.device_map is not None and check.shape else 0
    return Scale(units=units, base_units={u for u in units if base_unit(u) == u},
                 imported={"trained"} if s.sae is not None else set(), layers=len(check.layers),
                 through=max(check.layers) + 1, latents=latents,
                 k=check.sae_k or s.k, batch=schedule.batch_size, train_tokens=train, drawn_tokens=drawn,
                 eval_tokens=min(s.eval_tokens, drawn - train), latent_tokens=s.latent_tokens, cache=cache,
                 cache_dtype=s.cache_dtype or "float16", model_dtype=s.model_dtype,
                 context_length=s.context_length, split=devices if s.device_map is not None else 1,
                 sampled=examples.sample, judged=judged, ranks=ranks, fit_tokens=s.fit_tokens,
                 judge_bytes=local_judge_bytes(s), host_bytes=host)


def local_judge_bytes(settings: BaselineSettings) -> int:
    """The local judge's peak on its device (its weights and one batch's key-value cache); 0 behind a server."""
    from randsae.lm.models import load_config
    from randsae.study.plan import judge_bytes, model_shape

    options = judge_options(settings)
    if "llm" not in options:
        return 0
    config = load_config(options["llm"])
    heads = getattr(config, "num_attention_heads", 1)
    kv_dim = getattr(config, "num_key_value_heads", heads) * (config.hidden_size // heads)
    return judge_bytes(model_shape(config, options["llm"]), options["dtype"], options["batch_size"], kv_dim)


def study_rates(settings: BaselineSettings, check: Preflight, machine: "Machine", out: Path, batch: int):
    """The rates the plan divides by: a stated machine's, or this one's as measured (and kept)."""
    from randsae.experiments.lm_autointerp import AutointerpSettings
    from randsae.lm.examples import ExampleSettings
    from randsae.study.calibrate import rates
    from randsae.study.plan import Rates, stated_rates

    assert check.shape is not None
    if machine.stated:
        return stated_rates(machine, check.shape, settings.model_dtype)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 measures, and keeps the plan
        return Rates(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, "not measured on this rank",
                     "not measured on this rank")
    from randsae.lm.models import loading, read_device_map

    examples = ExampleSettings(seed=settings.seed, **settings.examples)
    autointerp = AutointerpSettings(seed=settings.seed, **settings.autointerp)
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


# --- the stages ---------------------------------------------------------------------------------------------

def layer_list(study: Study) -> str:
    return ",".join(str(layer) for layer in study.checked.layers)


def seed_of(study: Study, unit: str) -> int:
    """The seed of a unit's every draw: --seed plus its seed's index."""
    return study.settings.seed + parse_unit(unit)[1]


def source_of(study: Study, unit: str):
    from randsae.lm.source import Source

    s = study.settings
    variant = split_arm(parse_unit(unit)[0])[0]
    return Source(model=s.model, revision=s.revision, variant=variant, seed=seed_of(study, unit),
                  dataset=s.dataset,
                  dataset_config=s.dataset_config, text_column=s.text_column, context_length=s.context_length,
                  tokens=s.tokens)


def stage_activations(study: Study, variant: str) -> None:
    from randsae.experiments.lm_activations import cache_source

    if study.settings.cache and base_unit(variant) == variant:  # a random dictionary reads its variant's
        cache_source(source_of(study, variant), layer_list(study), study.directory(variant, "acts"),
                     dtype=study.settings.cache_dtype or "float16", device=study.settings.device, progress=False)


def twin_architecture(study: Study) -> tuple[str, dict[str, float]]:
    """(the architecture the study's SAEs train with, the L0 per layer they are trained to match — the user's
    SAEs' measured L0, where the twins match a JumpReLU SAE or are TopK at a measured L0; else {})."""
    s, check = study.settings, study.checked
    if s.sae is None or check.sae_architecture is None:
        return s.architecture, {}
    architecture = "topk" if s.twin_sae == "topk" else TWIN_OF[check.sae_architecture]
    if architecture == "jumprelu" or (architecture == "topk" and check.sae_architecture != "topk"):
        return architecture, measured_l0(study)
    return architecture, {}


def measured_l0(study: Study) -> dict[str, float]:
    """The L0 per layer of the user's SAEs, as `import_saes` measured it on the trained model's activations."""
    path = study.directory("trained", "sae") / "config.json"
    measured = io.read_json(path).get("measured_l0") if path.is_file() else None
    if not isinstance(measured, dict) or not measured:
        raise BadInput(f"{path} records no measured L0 of your SAEs, which the twins are trained to; the trained "
                       "arm's train stage must finish first.")
    return measured


def train_config(study: Study, unit: str):
    architecture, layer_l0 = twin_architecture(study) if unit != "trained" else (study.settings.architecture, {})
    return train_config_for(study.settings, study.checked, unit, architecture, layer_l0)


def train_config_for(s: BaselineSettings, check: Preflight, unit: str, architecture: str | None = None,
                     layer_l0: dict | None = None):
    """A unit's training settings (the architecture and per-layer L0 its twins match, where they do)."""
    from randsae.train_topk import TopKTrainConfig

    given = {"batch_size": s.batch_size, "lr": s.lr}
    architecture, layer_l0 = architecture or s.architecture, layer_l0 or {}
    config = TopKTrainConfig(k=check.sae_k or s.k, expansion=check.sae_expansion or s.expansion,
                             architecture=architecture, layer_l0=layer_l0, matryoshka_widths=check.sae_widths,
                             seed=s.seed + parse_unit(unit)[1], dictionary=split_arm(parse_unit(unit)[0])[1],
                             dictionary_cone=s.dictionary_cone,
                             skip_positions=s.skip_positions, max_norm_ratio=s.max_norm_ratio,
                             **{k: v for k, v in given.items() if v is not None})
    config.validate()
    return config, {k for k, v in given.items() if v is not None}


def stage_train(study: Study, variant: str) -> None:
    from randsae.experiments.lm_train import train_from_cache, train_from_model

    out = study.directory(variant, "sae")
    out.mkdir(parents=True, exist_ok=True)
    if variant == "trained" and study.settings.sae is not None:
        import_saes(study, out)
        return
    config, fixed = train_config(study, variant)
    auto = study.settings.schedule == "budget"
    deal = study.world is not None and study.world.distributed  # each rank its share of the layers
    # no held-out check on the way out: the eval stage holds every SAE to its fitted baselines on more tokens
    if study.settings.cache:
        train_from_cache(study.directory(base_unit(variant), "acts"), "all", config, out, study.settings.device,
                         progress=False, fixed=fixed, auto=auto, check=False, deal=deal)
    else:
        train_from_model(source_of(study, variant), layer_list(study), config, out, study.settings.device,
                         progress=False, fixed=fixed, auto=auto, check=False, deal=deal)


def import_saes(study: Study, out: Path) -> None:
    """The user's SAEs as the trained arm: each saved in `lm train`'s layout beside the activations' record,
    so that every later stage reads them as it reads the twins'."""
    from randsae.experiments.lm_train import layer_directory
    from randsae.lm.activations import open_cache
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


def stage_eval(study: Study, variant: str) -> None:
    from randsae.experiments.lm_eval import evaluate

    out = study.directory(variant, "eval")
    out.mkdir(parents=True, exist_ok=True)
    evaluate(study.directory(variant, "sae"), out, max_tokens=study.settings.eval_tokens,
             device=study.settings.device, progress=False, fit_tokens=study.settings.fit_tokens,
             group_layers=study.group_layers("eval"))


def stage_latents(study: Study, variant: str) -> None:
    from randsae.experiments.lm_latents import build_latents
    from randsae.lm.examples import ExampleSettings

    s = study.settings
    out = study.directory(variant, "latents")
    out.mkdir(parents=True, exist_ok=True)
    settings = ExampleSettings(seed=seed_of(study, variant), **s.examples)
    on_the_fly = s.latent_tokens is not None or not s.cache
    build_latents(study.directory(variant, "sae"), out, settings=settings, device=s.device, progress=False,
                  max_tokens=s.latent_tokens if on_the_fly else None,
                  model=(s.model, split_arm(parse_unit(variant)[0])[0]) if on_the_fly else None,
                  group_layers=study.group_layers("latents"))


def judge_options(settings: BaselineSettings) -> dict:
    from randsae.autointerp.clients import JudgeSettings

    return JudgeSettings(**settings.judge, device=settings.device).options()


def stage_autointerp(study: Study, variant: str) -> None:
    from randsae.experiments.lm_autointerp import AutointerpSettings, autointerp

    s = study.settings
    out = study.directory(variant, "autointerp")
    out.mkdir(parents=True, exist_ok=True)
    autointerp(study.directory(variant, "latents"), out, judge_options(s),
               AutointerpSettings(seed=seed_of(study, variant), **s.autointerp), progress=False)


def compare_directory(study: Study, index: int) -> Path:
    """OUT/compare (seed 0: the figures and tables the report shows) or OUT/compare/seed<i>."""
    return study.out / "compare" / (f"seed{index}" if index else "")


def stage_compare(study: Study, _: str) -> None:
    """`lm compare` per seed, then the verdict across seeds (OUT/compare/verdict.csv)."""
    from randsae.experiments.lm_compare import compare
    from randsae.study.evidence import write_verdict

    if not study.finished("eval", 0):
        raise BadInput("no variant got as far as its quality eval; there is nothing to compare.")
    for index in range(study.settings.seeds):
        evaluated = study.finished("eval", index)
        if not evaluated:
            continue
        out = compare_directory(study, index)
        out.mkdir(parents=True, exist_ok=True)
        compare([study.directory(u, "eval") for u in evaluated], out,
                latents=[study.directory(u, "latents") for u in study.finished("latents", index)],
                autointerp=[study.directory(u, "autointerp") for u in study.finished("autointerp", index)],
                replace=True, strict=False)
    write_verdict(study)


def stage_report(study: Study, _: str) -> None:
    from randsae.study.report import write_report

    write_report(study.out)


WORK = {"activations": stage_activations, "train": stage_train, "eval": stage_eval, "latents": stage_latents,
        "autointerp": stage_autointerp, "compare": stage_compare, "report": stage_report}


def baseline(out: Path, settings: BaselineSettings, check: Preflight, progress: bool = True,
             plan: "tuple[list[PlanRow], Machine, int] | None" = None) -> Study:
    """Run (or resume) the study in OUT; returns it with every stage's record. `plan`: (its rows, the machine,
    the ranks), kept in OUT/plan.csv beside what the stages take."""
    from randsae.config import resolve_device
    from randsae.distributed import joined_world

    assert settings.cache is not None, "a study runs with its cache decided (`planned`)"

    def begin() -> None:
        if not (out / "config.json").is_file():
            runs.write_record(out, "baseline", {"study": STUDY, "settings": asdict(settings),
                                                "layers": check.layers})
        if plan is not None and not (out / "plan.csv").is_file():
            write_plan(out, *plan)

    study = Study(out, settings, progress, check)
    if plan is not None:
        study.groups = {stage: max(r.groups for r in plan[0] if r.stage == stage)
                        for stage in ("eval", "latents") if any(r.stage == stage for r in plan[0])}
    if ranks_here() == 1:
        begin()
        study.run(WORK)
        return study
    with joined_world(resolve_device(settings.device)) as world:
        if world.is_main:  # rank 0 records the study; the others start once it has
            begin()
        world.barrier()
        study.run_dealt(WORK, world)
    return study
