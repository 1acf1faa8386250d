"""`randsae baseline`: the whole random-baseline study of one model in one command.

For each unit (a variant at one seed, docs/paper.md §2.1) the stages run in turn — activations, SAE training,
quality eval, probing, latent records and entropy, auto-interpretability — then the comparison across units and
the report. Each stage is a module of `randsae.study.stages` (what it reads and writes, per unit or across
them) that calls the command doing it alone (`lm activations`, `lm train`, …) into OUT/<unit>/<its directory>,
and each of those already resumes where it stopped. This module only deals the stages out and records them:
OUT/stages.json records every finished stage, which a rerun does not touch again. A stage that fails for one
unit is recorded with its error, the unit's later stages are left out, and the other units go on. Under
torchrun the units and each unit's layers are dealt across the ranks (`Study.run_dealt`).

OUT/config.json    every setting (`randsae.study.settings.BaselineSettings`), the preset it started from
OUT/stages.json    each stage's status, seconds and error (`randsae.study.records.StageRecord`)
OUT/plan.csv       the plan made before the run (`randsae.study.plan`: `PlanRow`), OUT/plan.json its machine
OUT/<unit>/{acts,sae,eval,probing,latents,autointerp}/   the stages' own outputs
OUT/compare/       `lm compare` across the units, the verdict, what separates trained from random
OUT/report.md, OUT/report.html, OUT/figures/*.png   the report (randsae.study.report)
"""

import logging
import os
import signal
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

import randsae.study.stages  # noqa: F401  (registers the stages)
from randsae import io, runs
from randsae.distributed import World
from randsae.errors import BadInput
from randsae.study.preflight import ranks_here, write_plan
from randsae.study.records import REGISTRY, Stage, StageRecord, StudyState, ordered, read_stages, write_stages
from randsae.study.settings import STUDY, BaselineSettings, Preflight

if TYPE_CHECKING:
    from randsae.study.machines import Machine
    from randsae.study.plan import PlanRow

log = logging.getLogger(__name__)

class Study(StudyState):
    """One study's stages, run in order, recorded in OUT/stages.json."""

    def wanted(self) -> list[Stage]:
        """The registered stages the settings ask for, in the order they run."""
        return [s for s in ordered() if s.wanted(self.settings)]

    def plan(self) -> list[tuple[str, str]]:
        """Every (unit, stage) the settings ask for, in order; ("", stage) for the stages across units."""
        stages = self.wanted()
        return [(u, s.name) for u in self.units() for s in stages if s.per_unit] + \
            [("", s.name) for s in stages if not s.per_unit]

    def run(self) -> dict[tuple[str, str], StageRecord]:
        """Run every stage not done yet. Returns the records."""
        plan = self.plan()
        done = sum(1 for key in plan if self.stages.get(key, StageRecord("", "", "")).status == "done")
        bar = tqdm(total=len(plan), initial=done, unit="stage", disable=not self.progress, desc="baseline",
                   bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} elapsed, ETA {remaining}")
        failed_units: set[str] = set()
        ran = False  # a unit's stage ran: the stages across units are run again
        for unit, stage in plan:
            key = (unit, stage)
            if key in self.stages and self.stages[key].status == "done" and not (unit == "" and ran):
                continue
            if unit in failed_units:
                continue
            ran = ran or unit != ""
            bar.set_description(f"{unit or 'all'} · {stage}")
            if self.run_stage(unit, stage).status == "failed":
                failed_units.add(unit)
            bar.update(1)
        bar.close()
        return self.stages

    def record(self, record: StageRecord) -> None:
        """Keep one stage's record in OUT/stages.json (under torchrun: merged with the other ranks' under a
        lock, each rank writing only the records of the work it does)."""
        self.stages[record.unit, record.stage] = record
        if self.world is None or not self.world.distributed:
            write_stages(self.out, self.stages)
            return
        with io.file_lock(self.out / ".stages.lock"):
            merged = read_stages(self.out)
            merged[record.unit, record.stage] = record
            write_stages(self.out, merged)

    def run_stage(self, unit: str, stage: str) -> StageRecord:
        """One stage of one unit (or across units), recorded running, then done or failed."""
        from randsae.lm.models import loading, read_device_map

        self.record(StageRecord(unit, stage, "running"))
        killer = KillForTest.armed(unit, stage)
        start = time.perf_counter()
        try:
            with loading(self.settings.model_dtype, read_device_map(self.settings.device_map)):
                REGISTRY[stage].run(self, unit)
            if killer is not None:
                killer.stage_over()
        except Exception as error:  # one unit's failure is reported; the others go on
            collective = self.world is not None and self.world.distributed and \
                REGISTRY[stage].together(self.settings, unit)
            if unit == "" or isinstance(error, MemoryError) or collective:
                self.record(StageRecord(unit, stage, "failed", time.perf_counter() - start,
                                        f"{type(error).__name__}: {error}"))
                raise
            message = self.failure(unit, stage, error)
            self.record(StageRecord(unit, stage, "failed", time.perf_counter() - start, message))
        else:
            self.record(StageRecord(unit, stage, "done", time.perf_counter() - start))
        finally:
            if killer is not None:
                killer.disarm()
        record = self.stages[unit, stage]
        log.info("%s · %s: %s in %.1f s", unit or "all", stage, record.status, record.seconds)
        return record

    def run_dealt(self, world: World) -> dict[tuple[str, str], StageRecord]:
        """The stages under torchrun, dealt across the ranks. In the stages' order, a phase at a time: each run of
        stages dealt by unit (activations; eval, probing, latents, autointerp) runs every unit's share on the rank
        that owns the unit (unit i on rank i mod N), by itself; a stage the ranks run together (training: each
        rank its share of the layers) runs unit by unit on every rank, rank 0 keeping its record; then rank 0
        runs the stages across the units. A phase ends when every rank has finished its share of it. Each rank
        records the stages it runs in the one OUT/stages.json; a rerun (after a kill of any rank) redoes only
        what is not done."""
        from randsae.distributed import alone, any_rank

        self.world = world
        units = self.units()
        owned = [u for i, u in enumerate(units) if i % world.size == world.rank]
        bar = tqdm(total=len(self.plan()), unit="stage", disable=not (self.progress and world.is_main),
                   desc="baseline", bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} elapsed")
        stages = self.wanted()
        ran = False

        def todo(unit: str, stage: str) -> bool:
            self.stages = read_stages(self.out)
            if any(self.stages.get((unit, s.name), StageRecord("", "", "")).status == "failed"
                   for s in stages if s.per_unit):
                return False
            return self.stages.get((unit, stage), StageRecord("", "", "")).status != "done"

        def mine(phase: list[Stage]) -> None:
            nonlocal ran
            for unit in owned:
                for stage in phase:
                    if todo(unit, stage.name):
                        ran = True
                        with alone():
                            self.run_stage(unit, stage.name)
            world.barrier()
            self.show(bar)

        def together(stage: Stage) -> None:
            nonlocal ran
            for unit in units:  # every rank, in the same order, all agreeing whether it is still to do
                if any_rank(world, todo(unit, stage.name)):
                    ran = True
                    if not stage.together(self.settings, unit):  # this unit's by one rank
                        if world.is_main:
                            with alone():
                                self.run_stage(unit, stage.name)
                    elif world.is_main:  # rank 0 keeps the record of the work they share
                        self.run_stage(unit, stage.name)
                    else:
                        stage.run(self, unit)
                    world.barrier()
            self.show(bar)

        phase: list[Stage] = []
        for stage in (s for s in stages if s.per_unit):
            if stage.dealt:
                phase.append(stage)
                continue
            if phase:
                mine(phase)
                phase = []
            together(stage)
        if phase:
            mine(phase)
        ran = any_rank(world, ran)
        if world.is_main:
            self.stages = read_stages(self.out)
            for stage in (s for s in stages if not s.per_unit):
                if ran or self.stages.get(("", stage.name), StageRecord("", "", "")).status != "done":
                    with alone():
                        self.run_stage("", stage.name)
        world.barrier()
        self.show(bar)
        bar.close()
        self.stages = read_stages(self.out)
        return self.stages

    def show(self, bar) -> None:
        """The one progress display (rank 0's): the stages every rank has finished."""
        done = sum(1 for r in read_stages(self.out).values() if r.status == "done")
        bar.update(done - bar.n)

    def failure(self, unit: str, stage: str, error: Exception) -> str:
        """What a failed stage's record says: bad input its one sentence; a fault its first line and where its
        traceback is kept (the stage's error.txt), the traceback also logged."""
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, BadInput):
            log.error("%s · %s failed: %s (the other units go on)", unit, stage, first)
            return first
        path = self.directory(unit, stage) / "error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_write(path, lambda p: p.write_text("".join(traceback.format_exception(error))))
        log.error("%s · %s failed (the other units go on)", unit, stage, exc_info=error)
        return f"{type(error).__name__}: {first} (traceback in {path.relative_to(self.out)})"


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
        study.groups = {s.name: max(r.groups for r in plan[0] if r.stage == s.name)
                        for s in ordered() if s.grouped and any(r.stage == s.name for r in plan[0])}
    if ranks_here() == 1:
        begin()
        study.run()
        return study
    with joined_world(resolve_device(settings.device)) as world:
        if world.is_main:  # rank 0 records the study; the others start once it has
            begin()
        world.barrier()
        study.run_dealt(world)
    return study
