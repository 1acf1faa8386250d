"""The study's stages, one module each: activations, train, eval, probing, latents and autointerp per unit;
compare and report once across the units. Each module declares its `STAGE` (`randsae.study.records.Stage`):
its name, its directory, what it does for one unit, the stages whose outputs it reads, whether every rank runs
it together, whether the settings ask for it, its row of the plan, its measures for the verdict, its checks before
the run. Registered here, they run in the order their reads give (`randsae.study.records.ordered`); the runner
(`randsae.study.runner`), the plan, the evidence and the preflight read them from the registry and name none.
Adding a stage: a module declaring its `STAGE`, and its `register` (docs/layout.md)."""

from randsae.study.records import REGISTRY, Stage, ordered, register
from randsae.study.stages import activations, autointerp, compare, evaluation, latents, probing, report, train

for _module in (activations, train, evaluation, probing, latents, autointerp, compare, report):
    register(_module.STAGE)


def unit_stages() -> list[Stage]:
    """The registered stages each unit runs, in order."""
    return [s for s in ordered() if s.per_unit]


def study_stages() -> list[Stage]:
    """The registered stages across the units, in order."""
    return [s for s in ordered() if not s.per_unit]


__all__ = ["REGISTRY", "Stage", "ordered", "register", "study_stages", "unit_stages"]
