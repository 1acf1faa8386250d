"""The eval stage: each unit's SAEs on held-out text beside their baselines fitted on their training tokens, by
`lm eval` (in the plan's layer groups). Reads OUT/<unit>/sae, writes OUT/<unit>/eval."""

from randsae.study.records import Stage, StudyState


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_eval import evaluate

    out = study.directory(unit, "eval")
    out.mkdir(parents=True, exist_ok=True)
    evaluate(study.directory(unit, "sae"), out, max_tokens=study.settings.eval_tokens,
             device=study.settings.device, progress=False, fit_tokens=study.settings.fit_tokens,
             group_layers=study.group_layers("eval"))


STAGE = Stage("eval", run, reads=("train",))
