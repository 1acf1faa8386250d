"""What a study has done, as OUT holds it: each stage's record (OUT/stages.json), where each unit's stage
writes (the `Stage` a stage module declares), and the tables of seconds and of the plan against
what the stages took. `StudyState` is a study as every stage, the verdict and the report read it; the runner
(`randsae.study.runner`) adds the running."""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from randsae import io
from randsae.errors import BadInput
from randsae.resources import format_bytes
from randsae.study.settings import BaselineSettings, Preflight, study_units

if TYPE_CHECKING:
    from randsae.distributed import World

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


# where each unit's stage writes: OUT/<unit>/<directory>
STAGE_DIRECTORIES = {"activations": "acts", "train": "sae", "eval": "eval", "probing": "probing",
                     "latents": "latents", "autointerp": "autointerp"}


def _always(_: BaselineSettings) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """A stage as its module (`randsae.study.stages`) declares it; it writes under OUT/<unit>/`directory`."""
    name: str
    run: "Callable[[StudyState, str], None]"  # does it for one unit ("" for a stage across the units)
    reads: tuple[str, ...] = ()  # the stages whose outputs it reads
    per_unit: bool = True
    wanted: "Callable[[BaselineSettings], bool]" = _always  # whether the settings ask for it

    @property
    def directory(self) -> str | None:
        return STAGE_DIRECTORIES.get(self.name)


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
        from randsae.study.plan import group_size

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

