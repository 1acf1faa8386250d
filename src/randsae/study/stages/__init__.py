"""The study's stages, one module each, in the order they run: activations, train, eval, probing, latents and
autointerp per unit; compare and report once across the units. Each module declares its `STAGE`
(`randsae.study.records.Stage`): its name, what it does for one unit, the stages whose outputs it reads, whether it
runs per unit, whether the settings ask for it; where it writes is OUT/<unit>/<`STAGE_DIRECTORIES`>. The runner
(`randsae.study.runner`) deals these out and records them; nothing here imports it."""

from randsae.study.records import Stage
from randsae.study.stages import activations, autointerp, compare, evaluation, latents, probing, report, train

UNIT_STAGES: tuple[Stage, ...] = tuple(m.STAGE for m in (activations, train, evaluation, probing, latents,
                                                          autointerp))
STUDY_STAGES: tuple[Stage, ...] = (compare.STAGE, report.STAGE)
STAGES: dict[str, Stage] = {s.name: s for s in (*UNIT_STAGES, *STUDY_STAGES)}
