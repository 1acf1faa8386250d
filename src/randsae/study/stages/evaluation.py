"""The eval stage: each unit's SAEs on held-out text beside their baselines fitted on their training tokens, by
`lm eval` (in the plan's layer groups). Reads OUT/<unit>/sae, writes OUT/<unit>/eval."""

from randsae.metrics import chunk_bootstrap, chunk_weights, context_sums
from randsae.resources import FLOAT_BYTES
from randsae.seeding import derive_seed
from randsae.study.evidence import RECONSTRUCTION, RESAMPLES
from randsae.study.plan import Unit, layer_groups, sae_encode_flops
from randsae.study.records import Stage, StudyState, group_size
from randsae.study.settings import parse_unit
from randsae.study.verdict import Measure
from randsae.tables import PlanRow


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_eval import evaluate

    out = study.directory(unit, "eval")
    out.mkdir(parents=True, exist_ok=True)
    evaluate(study.directory(unit, "sae"), out, max_tokens=study.settings.eval_tokens,
             device=study.settings.device, progress=False, fit_tokens=study.settings.fit_tokens,
             group_layers=study.group_layers("eval"))


def cost(u: Unit) -> PlanRow:
    """Per group of layers: a clean pass over the held-out text, then one with each layer's SAE spliced in and
    one with it zeroed; each layer's SAE also encodes its training sample (its baselines' fit). A layer holds its
    SAE and the fit's sums: two d × d Gram matrices and a d-vector per token id seen (float64)."""
    s, r = u.s, u.r
    fit_tokens = min(s.train_tokens, s.fit_tokens)
    per_layer = u.layer_sae_bytes + 8 * (2 * u.d * u.d + min(fit_tokens, 50_000) * u.d)
    batch = 4 * s.context_length * u.d * FLOAT_BYTES * (s.layers + 2)
    groups = layer_groups(s.layers, u.weights + batch, per_layer, u.memory)
    passes = groups + 2 * s.layers
    encode = 2 * s.layers * sae_encode_flops(u.d, s.latents) / r.sae_encode_flops
    fit = fit_tokens * s.layers * sae_encode_flops(u.d, s.latents) / r.sae_encode_flops
    if not s.cache:  # the training sample through the model, once per group
        fit += groups * fit_tokens * u.forward
    return PlanRow(u.name, "eval", s.eval_tokens * passes, 0,
                   u.weights + batch + group_size(s.layers, groups) * per_layer,
                   r.load_seconds + s.eval_tokens * (passes * u.whole + encode) + fit, r.basis, groups)


def measures(study: StudyState, unit: str, draws: bool) -> list[Measure]:
    """Each evaluated layer's reconstruction metrics (`RECONSTRUCTION`), with the SAE's place against its fitted
    baselines; `draws`: their bootstrap draws over whole held-out contexts (`lm eval`'s chunks, added up per
    context: tokens of one context are not independent)."""
    from randsae.experiments.lm_eval import read_chunks, read_eval_rows

    variant, seed = parse_unit(unit)
    eval_dir = study.directory(unit, "eval")
    out = []
    for row in read_eval_rows(eval_dir / "results.csv"):
        sampled = None
        if draws and (chunks := read_chunks(eval_dir, row.layer)) is not None:
            sums = context_sums(chunks)
            weights = chunk_weights(len(sums["tokens"]), RESAMPLES, derive_seed(0, "verdict", row.layer))
            sampled = chunk_bootstrap(sums, weights)
        out += [Measure(variant, seed, row.layer, name, getattr(row, name), None if sampled is None else
                        sampled[name], below_baseline=row.below_baseline or "") for name in RECONSTRUCTION]
    return out


STAGE = Stage("eval", run, directory="eval", reads=("train",), cost=cost, loads_model=True, grouped=True,
              measures=measures)
