"""What a study has done, as OUT holds it: its settings as OUT/config.json records them (`recorded_settings`,
`check_out`), each stage's record (OUT/stages.json), the stages as their modules declare and register them
(`Stage`, `ordered`), and the table of seconds. `StudyState` is a study as every stage, the verdict and the report
read it; the runner (`randsae.study.runner`) adds the running."""

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from randsae import io, runs
from randsae.errors import BadInput
from randsae.study.settings import NESTED, STUDY, BaselineSettings, Preflight, latent_only, study_units
from randsae.study.verdict import VerdictSettings

if TYPE_CHECKING:
    from randsae.distributed import World
    from randsae.study.verdict import Measure
    from randsae.tables import PlanRow

STATUSES = ("running", "done", "failed")


@dataclass
class StageRecord:
    unit: str  # a variant at a seed (`study_units`); "" for the stages across the units (compare, report)
    stage: str
    status: str  # "running", "done" or "failed"
    seconds: float = 0.0
    error: str | None = None


# the settings an older study did not record: read with their defaults
NEW_SETTINGS = ("probing", "dictionaries", "dictionaries_on_twins", "dictionary_cone", "twin_sae", "architecture",
                "model_dtype", "device_map", "fit_tokens", "prepend_bos")


def default_settings(names: tuple[str, ...]) -> dict:
    """{name: its default} of BaselineSettings' fields `names`."""
    fields = {f.name: f for f in dataclasses.fields(BaselineSettings)}
    return {name: fields[name].default_factory() if fields[name].default is dataclasses.MISSING  # type: ignore[misc]
            else fields[name].default for name in names}


def recorded_settings(values: dict) -> BaselineSettings:
    """A study's settings as its OUT/config.json records them; what an older study did not record has its
    default, and what this version no longer has is left out."""
    known = {f.name for f in dataclasses.fields(BaselineSettings)}
    values = {**default_settings(NEW_SETTINGS), **{k: v for k, v in values.items() if k in known}}
    autointerp = dict(values.get("autointerp") or {})
    if "scorers" not in values:  # a study begun before the study's scorers were a setting of their own
        values["scorers"] = autointerp.get("scorers")
    values["autointerp"] = {**autointerp, "scorers": latent_only(autointerp.get("scorers"))}
    for part, cls in {**NESTED, "verdict": VerdictSettings}.items():
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(values.get(part), dict):
            values[part] = cls(**{k: v for k, v in values[part].items() if k in names})
        else:
            values.pop(part, None)  # its default
    return BaselineSettings(**values)


def check_out(out: Path, settings: BaselineSettings) -> None:
    """Refuse an OUT that holds another study, or anything else (nothing in it is touched)."""
    previous = runs.previous_record(out, "baseline")
    if previous is not None:
        if isinstance(previous.get("settings"), dict):  # as this version records them (defaults where older
            try:                                        # studies recorded less)
                previous = {**previous, "settings": asdict(recorded_settings(previous["settings"]))}
            except (BadInput, TypeError):
                pass  # settings this version cannot read: they differ, said below
        if previous.get("study") != STUDY:
            raise BadInput(f"{out} holds the output of another command ({out / 'config.json'}); choose another "
                           "--out.")
        if previous.get("settings") != io.json_round_trip(asdict(settings)):
            changed = sorted(k for k, v in asdict(settings).items()
                             if io.json_round_trip(v) != previous.get("settings", {}).get(k))
            what = ", ".join(changed) or "see config.json"
            raise BadInput(f"{out} holds a study with other settings ({what}); choose another --out or repeat "
                             "its settings.")
    else:
        runs.check_no_foreign_files(out)


def read_stages(out: Path) -> dict[tuple[str, str], StageRecord]:
    path = out / "stages.json"
    if not path.is_file():
        return {}
    names = {f.name for f in fields(StageRecord)}
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, list):
            raise TypeError
        # a study begun before the field was named for what it holds (a unit) wrote it as "variant"
        stages = [StageRecord(**{("unit" if k == "variant" else k): v for k, v in r.items()
                                 if k in names or k == "variant"}) for r in records]
        for r in stages:
            if not (isinstance(r.unit, str) and isinstance(r.stage, str) and r.status in STATUSES
                    and isinstance(r.seconds, int | float) and isinstance(r.error, str | None)):
                raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError):
        raise BadInput(f"{path} is not a study's list of stage records; move it away to start the study "
                       "again.") from None
    return {(r.unit, r.stage): r for r in stages}


def write_stages(out: Path, stages: dict[tuple[str, str], StageRecord]) -> None:
    text = json.dumps([asdict(r) for r in stages.values()], indent=1)
    io.atomic_write(out / "stages.json", lambda p: p.write_text(text))


def _always(_: BaselineSettings) -> bool:
    return True


def _alone(_: BaselineSettings, __: str) -> bool:
    return False


@dataclass(frozen=True)
class Stage:
    """Everything about one stage, declared in its own module (`randsae.study.stages`) and registered there
    (`register`): the runner, the plan, the verdict's evidence, the preflight and the report read it from here and
    name no stage. Hooks left None: the stage has nothing of that kind."""
    name: str
    run: "Callable[[StudyState, str], None]"  # does it for one unit ("" for a stage across the units)
    directory: str | None = None  # a unit's stage writes OUT/<unit>/<directory>
    reads: tuple[str, ...] = ()  # the stages whose outputs it reads: it runs after them
    per_unit: bool = True  # False: once across the units, after every unit's stages
    wanted: "Callable[[BaselineSettings], bool]" = _always  # whether the settings ask for it
    # whether every rank runs this unit's stage together under torchrun (each its share of the layers), rather
    # than the rank that owns the unit by itself
    together: "Callable[[BaselineSettings, str], bool]" = _alone
    cost: "Callable[[Any], PlanRow | None] | None" = None  # its row of the plan, given a `randsae.study.plan.Unit`
    loads_model: bool = False  # a row of its that reads tokens loads the model (host memory for a split model)
    grouped: bool = False  # evaluates the layers in the plan's groups (its rows say how many)
    measures: "Callable[[StudyState, str, bool], list[Measure]] | None" = None  # a unit's outputs as the verdict's
    check: "Callable[[BaselineSettings, bool], None] | None" = None  # before anything runs (settings, a --plan)
    section: "Callable[[Path, list[str]], str | None] | None" = None  # the report's section: OUT, units done

    @property
    def dealt(self) -> bool:
        """Its units are dealt across the ranks, each unit's run by one rank alone."""
        return self.per_unit and self.together is _alone


REGISTRY: dict[str, Stage] = {}
"""Every stage the study runs, by name; `register` adds one (the built-in ones: `randsae.study.stages`)."""


def register(stage: Stage) -> Stage:
    if stage.name in REGISTRY:
        raise ValueError(f"a stage named {stage.name} is registered already")
    REGISTRY[stage.name] = stage
    return stage


def ordered() -> list[Stage]:
    """The registered stages in the order they run: every stage after those it reads (and, among those free to
    run, in the order they were registered), each unit's stages before those across the units."""
    waiting = [s for s in REGISTRY.values() if s.per_unit] + [s for s in REGISTRY.values() if not s.per_unit]
    done: list[Stage] = []
    while waiting:
        ready = next((s for s in waiting if all(r in {d.name for d in done} or r not in REGISTRY
                                                for r in s.reads)), None)
        if ready is None:
            raise ValueError("the stages " + ", ".join(s.name for s in waiting) + " read each other in a circle")
        done.append(ready)
        waiting.remove(ready)
    return done


def directory_of(stage: str) -> str | None:
    """Where a unit's `stage` writes under OUT/<unit>/ (None: a stage across the units, or unknown)."""
    found = REGISTRY.get(stage)
    return found.directory if found is not None else None


class StudyState:
    """One study as its stages read it: OUT, the settings, the preflight's findings, the stages' records."""

    def __init__(self, out: Path, settings: BaselineSettings, progress: bool = True,
                 preflight: Preflight | None = None):
        self.out, self.settings, self.progress, self.preflight = out, settings, progress, preflight
        self.stages = read_stages(out)
        self.world: World | None = None  # under torchrun: the ranks the work is dealt across
        self.groups: dict[str, int] = {}  # eval, latents, probing: the layer groups the plan fits a device with

    def group_layers(self, stage: str) -> int | None:
        """The layers a group of `stage` holds, where the plan splits them into groups (None: all at once)."""
        groups = self.groups.get(stage, 1)
        return group_size(len(self.checked.layers), groups) if groups > 1 else None

    @property
    def checked(self) -> Preflight:
        """What the preflight found: every stage runs after it."""
        assert self.preflight is not None, "a study's stages run after its preflight"
        return self.preflight

    def directory(self, unit: str, name: str) -> Path:
        """OUT/<unit>/<name>: where a unit's stage writes (`name`: the stage's directory, e.g. sae)."""
        return self.out / unit / name

    def units(self, index: int | None = None) -> list[str]:
        """The study's units in order — each variant at seed 0, each followed by its random-dictionary arms
        (`trained+frozen-decoder`; the twins' with --dictionaries-on-twins), then the same at seed 1, …
        (`unit_name`); the user's own SAEs (--sae) are one trained arm, so the trained variant has seed 0
        only. `index`: one seed's."""
        return study_units(self.settings, index)

    def finished(self, stage: str, index: int | None = None) -> list[str]:
        """The units (of seed `index`, or all) whose `stage` is done."""
        return [u for u in self.units(index) if self.stages.get((u, stage), StageRecord("", "", "")).status
                == "done"]


def group_size(layers: int, groups: int) -> int:
    """The layers per group of `groups` groups (the last may hold fewer)."""
    return math.ceil(layers / max(1, groups))


def stage_grid(stages: list[StageRecord]) -> tuple[list[str], list[list[str]]]:
    """Seconds per stage (rows) and variant (columns) of OUT/stages.json's records; a failed stage shows its
    error."""
    variants = list(dict.fromkeys(r.unit for r in stages if r.unit))
    records = {(r.unit, r.stage): r for r in stages}
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


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
