"""The probing stage: each unit's SAEs probed with no judge — k-sparse probing on tasks from the text (and the
user's --probe-data) and first-letter absorption — by `lm probe`, fitted on the SAEs' training sample and tested on
held-out contexts; run when --scorers names probing or absorption. Reads OUT/<unit>/sae, writes
OUT/<unit>/probing."""

import numpy as np

from randsae.metrics import mean_draws
from randsae.probing import MIN_PROBE_F1
from randsae.resources import FLOAT_BYTES
from randsae.seeding import derive_seed
from randsae.study.evidence import RESAMPLES
from randsae.study.plan import Unit, layer_groups, sae_encode_flops
from randsae.study.records import Stage, StudyState, group_size
from randsae.study.settings import BaselineSettings, parse_unit, probe_settings, probes_wanted
from randsae.study.stages.common import seed_of
from randsae.study.verdict import Measure
from randsae.tables import PlanRow


def run(study: StudyState, unit: str) -> None:
    from randsae.experiments.lm_probe import probe

    s = study.settings
    out = study.directory(unit, "probing")
    out.mkdir(parents=True, exist_ok=True)
    probe(study.directory(unit, "sae"), out, probe_settings(s, seed_of(study, unit)), device=s.device,
          progress=False, group_layers=study.group_layers("eval"))


PROBE_FITS = 200  # logistic regressions a layer fits: ~40 tasks × (3 values of k, the input, the tokens)
PROBE_FIT_SECONDS = 0.05  # one, on a few thousand examples (measured on 2 cores: 0.002–0.04 s)


def cost(u: Unit) -> PlanRow:
    """Per group of layers (eval's): the training sample (its cache, or through the model) and the held-out
    contexts through the model; every layer's SAE encodes both; then the probes' fits, a fixed time each."""
    s, r = u.s, u.r
    train = min(s.train_tokens, s.probe_train_tokens)
    test = min(s.drawn_tokens - s.train_tokens, s.probe_test_tokens)
    per_layer = u.layer_sae_bytes + (train + test) * (u.d * FLOAT_BYTES + s.k * 8)
    batch = 4 * s.context_length * u.d * FLOAT_BYTES * s.layers
    groups = layer_groups(s.layers, u.weights + batch, per_layer, u.memory)
    through = (test + (0 if s.cache else train)) * groups
    encode = (train + test) * s.layers * sae_encode_flops(u.d, s.latents) / r.sae_encode_flops
    return PlanRow(u.name, "probing", through, 0, u.weights + batch + group_size(s.layers, groups) * per_layer,
                   r.load_seconds + through * u.forward + encode + s.layers * PROBE_FITS * PROBE_FIT_SECONDS,
                   r.basis, groups)


def check(settings: BaselineSettings, _: bool = False) -> None:
    """--probe-data read and checked as the probing stage will split it at each seed: now, not after every
    variant has trained (a hub data set is read then)."""
    from randsae.experiments.lm_probe import check_probe_data
    from randsae.study.settings import probe_settings

    data = settings.probing.probe_data
    if not probes_wanted(settings) or data is None or str(data).startswith("hf:"):
        return
    check_probe_data(probe_settings(settings, settings.seed), seeds=range(settings.seed,
                                                                          settings.seed + settings.seeds))


def measures(study: StudyState, unit: str, draws: bool) -> list[Measure]:
    """Each layer's mean accuracy per task family of the probes on the smallest k latents (its draws over the
    tasks, by task name: paired across arms, which are probed on the same tasks), and the mean absorption fraction
    over the letters probed (its draws over them; none under --no-absorption)."""
    from randsae.tables import AbsorptionRow, ProbeRow, read_table

    variant, seed = parse_unit(unit)
    directory = study.directory(unit, "probing")
    rows = read_table(directory / "probing.csv", ProbeRow)
    path = directory / "absorption.csv"
    absorbed = read_table(path, AbsorptionRow) if path.is_file() else None
    out = []
    for layer in study.checked.layers:
        probes = [r for r in rows if r.layer == layer and r.probe == "sae"]
        k = min((r.k for r in probes), default=0)
        for family in ("token", "context", "data"):
            tasks = sorted((r.task, r.accuracy) for r in probes if r.family == family and r.k == k)
            if tasks:
                values = np.array([a for _, a in tasks])
                out.append(Measure(variant, seed, layer, f"probing_{family}", float(values.mean()),
                                   mean_draws(values, RESAMPLES, derive_seed(seed, "verdict", layer, family))
                                   if draws else None))
        if absorbed is not None:
            out.append(absorption(variant, seed, layer, [r for r in absorbed if r.layer == layer], draws))
    return out


def absorption(variant: str, seed: int, layer: int, letters: list, draws: bool) -> Measure:
    """The mean absorption fraction over the letters probed at one layer; none measured where no letter's
    ground-truth probe could be read."""
    if not letters:
        return Measure(variant, seed, layer, "absorption", None, latents=0,
                       unmeasured=f"no letter's ground-truth probe reaches F1 {MIN_PROBE_F1}")
    values = np.array([r.absorption_fraction for r in letters])
    return Measure(variant, seed, layer, "absorption", float(values.mean()),
                   mean_draws(values, RESAMPLES, derive_seed(seed, "verdict", variant, layer, "absorption"))
                   if draws else None, len(values))


STAGE = Stage("probing", run, directory="probing", reads=("train",), wanted=probes_wanted, cost=cost,
              loads_model=True, measures=measures, check=check)
