"""The probing stage: each unit's SAEs probed with no judge — k-sparse probing on tasks from the text (and the
user's --probe-data) and first-letter absorption — by `lm probe`, fitted on the SAEs' training sample and tested on
held-out contexts; run when --scorers names probing or absorption. Reads OUT/<unit>/sae, writes
OUT/<unit>/probing."""

from randsae.study.records import Stage, StudyState
from randsae.study.settings import probe_settings, probes_wanted
from randsae.study.stages.common import seed_of


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_probe import probe

    s = study.settings
    out = study.directory(unit, "probing")
    out.mkdir(parents=True, exist_ok=True)
    probe(study.directory(unit, "sae"), out, probe_settings(s, seed_of(study, unit)), device=s.device,
          progress=False, group_layers=study.group_layers("eval"))


STAGE = Stage("probing", run, reads=("train",), wanted=probes_wanted)
