"""Training recipes: named sets of the optimiser's and the dead-latent remedy's settings, one for every
architecture, shared by `lm train`, the study and `randsae recovery` (docs/choices.md "Training recipes").

A recipe fills every training setting the user left unset (`None`); a setting given as a flag or in a config
file wins. The values a run trained with — the recipe's name and each value it set — are recorded in the run's
config.json ("recipe") and shown in the report.

- `randsae` (the default): the learning rate scaled with width as sparsify and dictionary_learning scale it,
  ×3 (measured on the independent-feature toy, docs/choices.md), batch 1,024 on the toy, Adam β (0.9, 0.999),
  warm-up then a linear decay to 0 over the last fifth of the run, and AuxK (α 1/32, k_aux d/2) on latents
  that fired on none of the last `DEAD_BATCHES` batches — a dead window sized to the run, so that the remedy
  acts within a short one too.
- `bussmann`: Bussmann et al.'s BatchTopK code, which Korznikov et al.'s experiments most likely used: Adam β
  (0.9, 0.99), lr 3e-4, batch 4,096, no warm-up or decay, AuxK 1/32 with k_aux 512, dead after 20 batches.
- `sparsify`: EleutherAI's trainer as Heap et al. used it (docs/paper.md §2.2): lr 2e-4 / sqrt(latents / 2^14),
  batch 4,096, Adam's defaults, 1,000 warm-up steps, no decay, no AuxK (sparsify's `auxk_alpha` is 0), dead
  after 10M tokens (counted, unused).
"""

import math
from dataclasses import asdict, dataclass

from randsae.errors import BadInput

WIDTH_LR = 2e-4  # sparsify's and dictionary_learning's rate at 2^14 latents, scaled by 1 / sqrt(latents / 2^14)
WIDTH_REFERENCE = 2**14


def width_lr(num_latents: int, scale: float = 1.0) -> float:
    """2e-4 / sqrt(num_latents / 2^14) × scale, the EleutherAI trainer's scaling."""
    return scale * WIDTH_LR / math.sqrt(num_latents / WIDTH_REFERENCE)


@dataclass(frozen=True)
class Recipe:
    """What a recipe sets. None where it leaves the command's own value (a toy's batch, …)."""

    name: str
    summary: str
    lr: float | None  # None: width-scaled (`width_lr`) × lr_scale
    lr_scale: float
    batch_size: int | None
    adam_beta1: float
    adam_beta2: float
    warmup_steps: int  # capped at a tenth of a short run
    decay_fraction: float  # linear decay to 0 over this last share of the run
    auxk_alpha: float
    k_aux: int | None  # None: half the input dimension (the OpenAI recipe)
    dead_batches: int | None  # dead after this many batches without firing; None: after `dead_tokens`
    dead_tokens: int
    resample_every: int  # steps between resamplings of dead latents (0: never); none in the decay

    def learning_rate(self, num_latents: int) -> float:
        return self.lr if self.lr is not None else width_lr(num_latents, self.lr_scale)


DEAD_BATCHES = 20

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("randsae", "width-scaled lr ×3, warm-up and decay to 0 over the last 20%, AuxK 1/32 on latents dead "
           "for 20 batches", lr=None, lr_scale=3.0, batch_size=1024, adam_beta1=0.9, adam_beta2=0.999,
           warmup_steps=1000, decay_fraction=0.2, auxk_alpha=1 / 32, k_aux=None, dead_batches=DEAD_BATCHES,
           dead_tokens=10_000_000, resample_every=0),
    Recipe("bussmann", "Bussmann et al.'s BatchTopK code: Adam β 0.9/0.99, lr 3e-4, batch 4,096, AuxK 1/32 with "
           "k_aux 512, dead after 20 batches", lr=3e-4, lr_scale=1.0, batch_size=4096, adam_beta1=0.9,
           adam_beta2=0.99, warmup_steps=0, decay_fraction=0.0, auxk_alpha=1 / 32, k_aux=512, dead_batches=20,
           dead_tokens=10_000_000, resample_every=0),
    Recipe("sparsify", "EleutherAI's sparsify as Heap et al. used it: width-scaled lr, batch 4,096, 1,000 warm-up "
           "steps, no decay, no AuxK", lr=None, lr_scale=1.0, batch_size=4096, adam_beta1=0.9, adam_beta2=0.999,
           warmup_steps=1000, decay_fraction=0.0, auxk_alpha=0.0, k_aux=None, dead_batches=None,
           dead_tokens=10_000_000, resample_every=0),
)}


def recipe(name: str) -> Recipe:
    """The recipe called `name`, or one sentence naming those there are."""
    if name not in RECIPES:
        raise BadInput(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)} (docs/choices.md \"Training "
                       "recipes\").")
    return RECIPES[name]


RECIPE_HELP = ("training recipe: " + "; ".join(f"{r.name} ({r.summary})" for r in RECIPES.values())
               + ". Any setting given beside it wins")


@dataclass(frozen=True)
class Hyperparameters:
    """Every value one SAE trains with, after the recipe filled what the user left unset (config.json
    "recipe")."""

    recipe: str
    lr: float
    batch_size: int
    adam_beta1: float
    adam_beta2: float
    warmup_steps: int
    decay_steps: int
    auxk_alpha: float
    k_aux: int
    dead_tokens: int
    resample_every: int

    def record(self) -> dict:
        return asdict(self)

    def resamples_at(self, step: int, total_steps: int | None) -> bool:
        """Whether dead latents are resampled after step `step` (1-based): every `resample_every` steps, never
        within the decay (the run's end settles what the last resampling began)."""
        if not self.resample_every or step % self.resample_every:
            return False
        return total_steps is None or step <= total_steps - max(self.decay_steps, self.resample_every)

    def lr_factor(self, step: int, total_steps: int | None) -> float:
        """The learning rate's multiplier at `step` (0-based): a linear warm-up, then 1, then a linear decay
        to 0 at the last step (where the run's length is known)."""
        factor = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if total_steps is not None and self.decay_steps > 0:
            left = total_steps - step
            factor = min(factor, max(0.0, left / self.decay_steps))
        return factor


def effective_warmup(warmup_steps: int, total_steps: int | None) -> int:
    """The warm-up a run of `total_steps` uses: capped at a tenth of a run shorter than 10 × the warm-up."""
    if warmup_steps > 0 and total_steps is not None and total_steps < 10 * warmup_steps:
        return max(1, total_steps // 10)
    return warmup_steps


def resolve(name: str, given: dict, num_inputs: int, num_latents: int, batch_size: int,
            total_steps: int | None) -> Hyperparameters:
    """The values one SAE trains with: `given` (setting → value, None where unset: lr, adam_beta1, adam_beta2,
    warmup_steps, decay_fraction, auxk_alpha, k_aux, dead_tokens) over recipe `name`'s."""
    r = recipe(name)

    def pick(field: str, default):
        value = given.get(field)
        return default if value is None else value

    decay_fraction = pick("decay_fraction", r.decay_fraction)
    dead_default = r.dead_tokens if r.dead_batches is None else r.dead_batches * batch_size
    return Hyperparameters(
        recipe=name, lr=pick("lr", r.learning_rate(num_latents)), batch_size=batch_size,
        adam_beta1=pick("adam_beta1", r.adam_beta1), adam_beta2=pick("adam_beta2", r.adam_beta2),
        warmup_steps=effective_warmup(pick("warmup_steps", r.warmup_steps), total_steps),
        decay_steps=round(decay_fraction * total_steps) if total_steps is not None else 0,
        auxk_alpha=pick("auxk_alpha", r.auxk_alpha),
        k_aux=min(num_latents, pick("k_aux", r.k_aux if r.k_aux is not None else max(1, num_inputs // 2))),
        dead_tokens=pick("dead_tokens", dead_default), resample_every=pick("resample_every", r.resample_every))


def check_training_values(values: dict) -> None:
    """One sentence for a training setting out of its range (None: the recipe's)."""
    checks = {"lr": lambda v: v > 0 and math.isfinite(v), "adam_beta1": lambda v: 0 <= v < 1,
              "adam_beta2": lambda v: 0 <= v < 1, "warmup_steps": lambda v: v >= 0,
              "decay_fraction": lambda v: 0 <= v <= 1, "auxk_alpha": lambda v: v >= 0 and math.isfinite(v),
              "k_aux": lambda v: v >= 1, "dead_tokens": lambda v: v >= 1,
              "resample_every": lambda v: v >= 0}
    ranges = {"lr": "positive and finite", "adam_beta1": "in [0, 1)", "adam_beta2": "in [0, 1)",
              "warmup_steps": "0 or more", "decay_fraction": "in [0, 1]", "auxk_alpha": "finite and not negative",
              "k_aux": "a positive integer", "dead_tokens": "a positive integer",
              "resample_every": "0 or more"}
    for name, ok in checks.items():
        value = values.get(name)
        if value is not None and not ok(value):
            raise BadInput(f"{name} must be {ranges[name]}, not {value!r}.")
