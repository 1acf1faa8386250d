"""Training one TopK SAE a batch at a time (docs/paper.md §2.2), alone or data-parallel under torchrun.

The loss is FVU: squared error summed over the batch over its total variance Σ (x − mean(x))². Under DDP
each rank holds a share of the global batch; the total variance is summed across ranks and each rank's
loss is multiplied by the number of ranks, so DDP's gradient average is exactly the global batch's
gradient and the weights follow a single-process run on the same global batches.
"""

import math
from collections.abc import Set
from dataclasses import dataclass, field, replace

import torch
from torch.nn.parallel import DistributedDataParallel

from randsae.config import FIT_TOKENS, parse_count
from randsae.distributed import World
from randsae.errors import BadInput, check_seed, check_terminated
from randsae.sae import dictionaries as D
from randsae.sae.dictionaries import DEFAULT_CONE, check_dictionary
from randsae.sae.normalised import PER_TOKEN
from randsae.sae.topk import TopKSAE, UnitDecoder
from randsae.seeding import generator
from randsae.settings import setting
from randsae.training import recipes
from randsae.training.forms import BatchTopKTraining, JumpReLUTraining
from randsae.training.recipes import RECIPE_HELP, Hyperparameters, effective_warmup

AUTOCAST = {"none": None, "bf16": torch.bfloat16}
ARCHITECTURES = ("topk", "jumprelu", "batchtopk", "matryoshka")


def default_lr(num_latents: int) -> float:
    """2e-4 / sqrt(num_latents / 2^14), the EleutherAI trainer's scaling (the paper's rate)."""
    return recipes.width_lr(num_latents)


# the training settings a recipe fills when they are not given (randsae.training.recipes)
RECIPE_FIELDS = ("lr", "adam_beta1", "adam_beta2", "warmup_steps", "decay_fraction", "auxk_alpha", "k_aux",
                 "dead_tokens", "resample_every")


@dataclass
class TopKTrainConfig:
    k: int = setting(32, help="latents kept per token")
    expansion: int = setting(64, help="latents per input dimension")
    batch_size: int = setting(4096, help="tokens per optimiser step, over all ranks")
    recipe: str = setting("randsae", help=RECIPE_HELP)
    lr: float | None = setting(None, shown="the recipe's (randsae: 3 × 2e-4 / sqrt(latents / 2^14))",
                               help="Adam learning rate")
    adam_beta1: float | None = setting(None, shown="the recipe's (0.9)", help="Adam's β1")
    adam_beta2: float | None = setting(None, shown="the recipe's (randsae 0.999, bussmann 0.99)", help="Adam's β2")
    warmup_steps: int | None = setting(None, shown="the recipe's (randsae 1,000)",
                                       help="linear learning-rate warm-up, capped at a tenth of a short run")
    decay_fraction: float | None = setting(None, shown="the recipe's (randsae 0.2)",
                                           help="the learning rate decays linearly to 0 over this last share of "
                                                "the run (0: no decay)")
    auxk_alpha: float | None = setting(None, shown="the recipe's (randsae 1/32, sparsify 0)",
                                       help="weight of the AuxK loss on dead latents (0: off); topk, batchtopk "
                                            "and matryoshka")
    k_aux: int | None = setting(None, shown="the recipe's (randsae d/2, bussmann 512)",
                                help="AuxK: dead latents each token reconstructs its residual from")
    dead_tokens: int | None = setting(None, parse=parse_count, shown="the recipe's (randsae 20 batches)",
                                      help="tokens without firing before a latent counts as dead (AuxK's and "
                                           "resampling's window)")
    resample_every: int | None = setting(None, shown="the recipe's (0: never)",
                                         help="every N steps, dead latents restart on the directions of inputs "
                                              "the SAE reconstructs worst (none in the decay)")
    autocast: str = setting("none", help="none, or bf16 (bfloat16 autocast of the forward pass, for GPUs)")
    seed: int = 0
    skip_positions: int = setting(0, help="leave out the first N positions of each context, in training and "
                                          "every metric (0: none, the paper's)")
    max_norm_ratio: float | None = setting(None, shown="none, the paper's",
                                           help="leave out tokens whose norm is above this × their batch's median")
    fit_tokens: int = setting(FIT_TOKENS, parse=parse_count, help=(
        "training tokens kept beside an on-the-fly run's SAEs, on which `lm eval` fits their baselines and "
        "measures their training explained variance (a cached run reads its cache)"), shown="64k")
    input_normalization: str = setting("none", help=(
        "none, layer_norm or constant_norm_rescale: each activation normalised before the SAE sees it and its "
        "reconstruction mapped back (SAELens's normalize_activations; a study sets it from a released SAE's)"))
    curve_points: int = setting(8, help="points of each SAE's learning curve (OUT/curve.csv): measured after the "
                                        "last step and halving back from it (0: none)")
    curve_tokens: int = setting(8192, parse=parse_count, help="held-out tokens, and training tokens, each point "
                                                              "of the learning curve is measured on")
    dictionary: str = setting("trained", help="trained (the paper's), or a random dictionary: frozen-decoder, "
                                              "frozen-decoder-cov, soft-frozen-decoder, frozen-encoder "
                                              "(docs/choices.md \"Random dictionaries\")")
    dictionary_cone: float = setting(DEFAULT_CONE, help="soft-frozen-decoder: the smallest cosine a decoder "
                                                        "direction keeps to its initial one")
    architecture: str = setting("topk", help="topk (the paper's), jumprelu, batchtopk or matryoshka "
                                             "(randsae.training.forms; docs/choices.md \"Twins trained like your "
                                             "SAE\")")
    target_l0: float | None = setting(None, shown="k", help="jumprelu: the active latents per token it is trained "
                                                            "to (its L0 penalty follows the measured L0)")
    jumprelu_bandwidth: float = setting(0.001, help="jumprelu: the straight-through kernel's width, × the "
                                                    "activations' RMS per dimension")
    matryoshka_widths: list[int] | None = setting(None, parse=lambda text: [int(w) for w in text.split(",")],
                                                  shown="an eighth, a quarter, half, all of the latents",
                                                  help="matryoshka: comma list of the nested prefixes' widths")
    # per layer, what the twins of a user's SAE match (its L0 measured on the trained model): the target L0 of
    # a JumpReLU SAE, the k (rounded) of the others; a layer not named takes k / target_l0
    layer_l0: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        self.validate()

    def validate(self) -> None:
        check_seed(self.seed)
        if self.curve_points < 0:
            raise BadInput(f"curve_points must not be negative, not {self.curve_points}.")
        for name in ("k", "expansion", "batch_size", "curve_tokens"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be a positive integer, not {getattr(self, name)}.")
        recipes.recipe(self.recipe)
        recipes.check_training_values({name: getattr(self, name) for name in RECIPE_FIELDS})
        if self.skip_positions < 0:
            raise BadInput(f"skip_positions must not be negative, not {self.skip_positions}.")
        if self.input_normalization not in ("none", *PER_TOKEN):
            raise BadInput(f"input_normalization must be one of none, {', '.join(PER_TOKEN)}, not "
                           f"{self.input_normalization!r}.")
        ratio = self.max_norm_ratio
        if ratio is not None and not (ratio > 0 and math.isfinite(ratio)):
            raise BadInput(f"max_norm_ratio must be positive and finite, not {self.max_norm_ratio}.")
        if self.autocast not in AUTOCAST:
            raise BadInput(f"autocast must be one of {', '.join(AUTOCAST)}, not {self.autocast!r}.")
        check_dictionary(self.dictionary, self.dictionary_cone)
        if self.architecture not in ARCHITECTURES:
            raise BadInput(f"architecture must be one of {', '.join(ARCHITECTURES)}, not {self.architecture!r}.")
        if self.auxk_alpha and self.architecture == "jumprelu":
            raise BadInput("auxk_alpha is the AuxK loss of TopK-style SAEs (topk, batchtopk, matryoshka); a "
                           "JumpReLU SAE has none: leave it at 0.")
        if self.target_l0 is not None and not (self.target_l0 > 0 and math.isfinite(self.target_l0)):
            raise BadInput(f"target_l0 must be positive and finite, not {self.target_l0}.")
        if not (self.jumprelu_bandwidth > 0 and math.isfinite(self.jumprelu_bandwidth)):
            raise BadInput(f"jumprelu_bandwidth must be positive and finite, not {self.jumprelu_bandwidth}.")
        widths = self.matryoshka_widths
        if widths is not None and (not widths or sorted(set(widths)) != list(widths) or widths[0] < 1):
            raise BadInput(f"matryoshka_widths must rise from 1 or more, each width once, not {widths}.")
        for layer, l0 in self.layer_l0.items():
            if not (l0 > 0 and math.isfinite(l0)):
                raise BadInput(f"the L0 to match at layer {layer} must be positive and finite, not {l0}.")

    def hyperparameters(self, num_inputs: int, num_latents: int, total_steps: int | None) -> Hyperparameters:
        """What one SAE of this config trains with: the settings given, the recipe's for the rest (a JumpReLU
        SAE has no AuxK)."""
        values = recipes.resolve(self.recipe, {name: getattr(self, name) for name in RECIPE_FIELDS}, num_inputs,
                                 num_latents, self.batch_size, total_steps)
        return replace(values, auxk_alpha=0.0) if self.architecture == "jumprelu" else values

    def sparsity(self, layer: int) -> float:
        """The L0 an SAE of `layer` is trained to: the user's SAE's where the twins match one, else k (or
        target_l0 for JumpReLU)."""
        if str(layer) in self.layer_l0:
            return self.layer_l0[str(layer)]
        return self.target_l0 if self.architecture == "jumprelu" and self.target_l0 is not None else self.k

    def new_sae(self, d_model: int, layer: int, seed: int, latents: int | None = None):
        """An untrained SAE of this architecture for `layer` (`expansion` × d_model latents, or `latents`),
        normalising its inputs as `input_normalization` says."""
        sae = self.untrained_sae(d_model, layer, seed, latents)
        sae.input_normalization = self.input_normalization
        return sae

    def untrained_sae(self, d_model: int, layer: int, seed: int, latents: int | None = None):
        latents, sparsity = latents or self.expansion * d_model, self.sparsity(layer)
        if self.architecture == "jumprelu":
            return JumpReLUTraining(d_model, latents, sparsity, seed=seed, bandwidth=self.jumprelu_bandwidth)
        k = max(1, min(latents, round(sparsity)))
        if self.architecture == "topk":
            return TopKSAE(d_model, latents, k, seed=seed)
        widths = None
        if self.architecture == "matryoshka":
            widths = self.matryoshka_widths or [latents // 8, latents // 4, latents // 2, latents]
        return BatchTopKTraining(d_model, latents, k, seed=seed, widths=widths)


# The schedule chosen from the budget. The paper's batch and learning rate are made for 100M tokens
# (24,414 steps); at 100k tokens they give 24 steps and an SAE worse than PCA. The rule: keep the paper's batch
# while it gives at least MIN_STEPS steps, else halve it (not below SMALLEST_BATCH) until it does; raise the
# learning rate by sqrt(REFERENCE_STEPS / steps), at most MAX_LR_BOOST×, when a run has fewer than
# REFERENCE_STEPS steps. At 100M tokens both are exactly the paper's. Measured in docs/results.md "Budgets".
MIN_STEPS = 1000
SMALLEST_BATCH = 256
REFERENCE_STEPS = 5000
MAX_LR_BOOST = 4.0


# how the schedule is chosen: from the token budget (randsae's rule) or the paper's settings as given
SCHEDULES = ("budget", "paper")


@dataclass
class Schedule:
    """The batch, learning rate and warm-up a run trains with, and why (OUT/config.json "schedule")."""
    tokens: int
    batch_size: int
    lr: float
    warmup_steps: int
    steps: int
    rule: str  # "recipe", "budget" or "flags"
    reason: str
    # every value the SAEs train with, the recipe's where not given (randsae.training.recipes.Hyperparameters)
    hyperparameters: dict = field(default_factory=dict)

    def applied_to(self, config: TopKTrainConfig) -> TopKTrainConfig:
        return replace(config, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps)


def plan_schedule(config: TopKTrainConfig, tokens: int, num_latents: int, fixed: Set[str] = frozenset(),
                  auto: bool = True) -> Schedule:
    """The schedule for `tokens` tokens: the rule above for what the user did not fix (`fixed` holds the
    config fields given as flags); `auto=False` keeps the config's values (the recipe's unless given)."""
    batch = config.batch_size
    if auto and "batch_size" not in fixed:
        while batch > SMALLEST_BATCH and math.ceil(tokens / batch) < MIN_STEPS:
            batch //= 2
    steps = max(1, math.ceil(tokens / batch))
    recipe = recipes.recipe(config.recipe)
    base = recipe.learning_rate(num_latents)
    boost = min(MAX_LR_BOOST, math.sqrt(REFERENCE_STEPS / steps)) if steps < REFERENCE_STEPS and auto else 1.0
    if recipe.lr is None:  # a width-scaled rate: the recipe's multiple of it, or the budget's where that is higher
        raised = recipes.width_lr(num_latents) * max(recipe.lr_scale, boost)
    else:
        raised = base * boost
    lr = config.lr if config.lr is not None else raised
    warmup = effective_warmup(recipe.warmup_steps if config.warmup_steps is None else config.warmup_steps, steps)
    paper_steps = math.ceil(tokens / TopKTrainConfig.batch_size)
    if batch == TopKTrainConfig.batch_size and lr == base and config.lr is None:
        rule, reason = "recipe", f"the {config.recipe} recipe's batch and learning rate ({steps:,} steps)"
    elif not auto or {"batch_size", "lr"} <= set(fixed) | ({"lr"} if config.lr is not None else set()):
        rule, reason = "flags", f"as given ({steps:,} steps)"
    else:
        rule = "budget"
        steps_text = f"{paper_steps:,} step{'s' if paper_steps > 1 else ''}"
        reason = (f"{tokens:,} tokens give {steps_text} at the paper's batch of {TopKTrainConfig.batch_size:,}; "
                  f"batch {batch:,} gives {steps:,}, and the learning rate is {lr / base:.2f} × the "
                  f"{config.recipe} recipe's {base:.2e} for a run that short")
    run = replace(config, batch_size=batch, lr=lr, warmup_steps=warmup)
    hyper = run.hyperparameters(max(1, num_latents // config.expansion), num_latents, steps).record()
    return Schedule(tokens, batch, lr, warmup, steps, rule, reason, hyper)


class TopKTrainer:
    """Owns one SAE's optimiser and schedule; `step(x)` trains on this rank's share of a global batch."""

    def __init__(self, sae: UnitDecoder, config: TopKTrainConfig, world: World | None = None,
                 total_steps: int | None = None):
        config.validate()
        world = world or World(device=sae.W_enc.device)
        self.sae, self.config, self.world = sae.to(world.device), config, world
        if world.distributed:
            device_ids = [world.device.index] if world.device.type == "cuda" else None
            self.model = DistributedDataParallel(sae, device_ids=device_ids)
        else:
            self.model = sae
        self.hyper = config.hyperparameters(sae.num_inputs, sae.num_latents, total_steps)
        self.total_steps = total_steps
        fused = world.device.type in ("cpu", "cuda")
        self.initial: torch.Tensor | None = None  # a soft-frozen decoder's initial directions
        sae.W_dec.requires_grad_(not D.decoder_frozen(config.dictionary))
        sae.W_enc.requires_grad_(not D.encoder_frozen(config.dictionary))
        if config.dictionary != "trained" and not D.needs_data(config.dictionary):
            self.draw_dictionary(None)
        trained = [p for p in sae.parameters() if p.requires_grad]
        hyper = self.hyper
        self.optimizer = torch.optim.Adam(trained, lr=hyper.lr, betas=(hyper.adam_beta1, hyper.adam_beta2),
                                          fused=fused)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: hyper.lr_factor(step, total_steps))
        self.tokens_since_fired = torch.zeros(sae.num_latents, dtype=torch.long, device=world.device)
        self.steps = self.tokens = 0

    @torch.enable_grad()  # also when called from a no-grad forward hook (training on the fly)
    def step(self, x: torch.Tensor) -> float:
        """One optimiser step on `x` (this rank's tokens × d, float); returns the global batch's FVU."""
        x = x.to(self.world.device, torch.float32)
        if not torch.isfinite(x).all():
            raise BadInput("the activations hold NaN or infinite values; an SAE cannot be trained on them.")
        x = self.sae.normalised(x)  # what it is trained on: its inputs as it will see them (none: as they are)
        with torch.no_grad():  # the global batch's mean and Σ (x − mean)², from per-rank sums
            stats = self.world.all_sum(torch.cat([x.sum(0), x.square().sum(0), x.new_tensor([len(x)])]))
            d = x.shape[1]
            total_tokens = int(stats[-1])
            mean = stats[:d] / stats[-1]
            total_variance = (stats[d:2 * d] - stats[:d] * mean).sum().clamp_min(1e-12)
            if self.steps == 0:
                self.sae.b_dec.copy_(mean)  # the decoder bias starts at the first batch's mean
                if D.needs_data(self.config.dictionary):  # the global first batch's covariance
                    squares = self.world.all_sum(x.T.double() @ x.double())
                    self.draw_dictionary(D.covariance(stats[:d].double(), squares, float(stats[-1])))
                for tensor in self.sae.first_batch(x):  # what each rank set from its share, made one
                    tensor.copy_(self.world.all_sum(tensor.clone()) / self.world.size)
        dead = self.dead() if self.hyper.auxk_alpha > 0 else None
        dtype = AUTOCAST[self.config.autocast]
        with torch.autocast(self.world.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(x, dead, self.hyper.k_aux)
        error = out.reconstruction.float() - x
        squared_error = error.square().sum()
        loss = squared_error / total_variance * self.world.size
        for prefix in out.prefixes:  # Matryoshka: each nested prefix reconstructs the input too
            loss = loss + (prefix.float() - x).square().sum() / total_variance * self.world.size
        if out.penalty is not None:  # a mean over this rank's tokens; DDP's average makes it the global mean
            loss = loss + out.penalty
        if out.aux_reconstruction is not None:
            assert dead is not None  # the auxiliary loss is computed only with dead latents tracked
            num_dead = int(dead.sum())
            scale = min(num_dead / self.hyper.k_aux, 1.0)
            aux_error = (out.aux_reconstruction.float() + error.detach()).square().sum()
            loss = loss + self.hyper.auxk_alpha * scale * aux_error / total_variance * self.world.size
        check_terminated()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        unit = D.unit_decoder(self.config.dictionary)
        if unit:
            self.sae.remove_parallel_gradient()
        self.optimizer.step()
        self.schedule.step()
        if unit:
            self.sae.normalize_decoder()
        if self.initial is not None:
            D.project_to_cone(self.sae.W_dec.data, self.initial, self.config.dictionary_cone)
        self.sae.after_step(out)
        with torch.no_grad():
            fired = torch.zeros_like(self.tokens_since_fired)
            fired.index_fill_(0, out.indices[out.values > 0], 1)
            fired = self.world.all_sum(fired)
            self.tokens_since_fired.add_(total_tokens).masked_fill_(fired > 0, 0)
            fvu = (self.world.all_sum(squared_error.detach().clone()) / total_variance).item()
        if not math.isfinite(fvu):
            raise BadInput(f"the SAE diverged at step {self.steps + 1} (its loss is not finite); nothing of it "
                             "was saved: lower --lr and rerun.")
        self.steps += 1
        self.tokens += total_tokens
        if self.config.dictionary == "trained" and self.hyper.resamples_at(self.steps, self.total_steps):
            self.resample(x, error.detach())
        return fvu

    def dead(self) -> torch.Tensor:
        """The latents that fired on none of the last `dead_tokens` tokens."""
        return self.tokens_since_fired >= self.hyper.dead_tokens

    @torch.no_grad()
    def resample(self, x: torch.Tensor, error: torch.Tensor) -> int:
        """Restart each dead latent on the residual x − x̂ of an input drawn with probability ∝ its squared error
        (Bricken et al. 2023): decoder row that direction, encoder row the same at the living rows'
        mean norm, encoder bias 0, their Adam moments cleared. Drawn on the main rank and shared. Returns how
        many were restarted."""
        sae, dead = self.sae, self.dead()
        count = int(dead.sum())
        if count == 0:
            return 0
        directions = torch.zeros(count, sae.num_inputs, device=x.device)
        if self.world.is_main:
            weights = error.square().sum(1).double().cpu() + 1e-30
            picks = torch.multinomial(weights, count, replacement=count > len(x),
                                      generator=generator(sae.seed, "resample", self.steps)).to(x.device)
            directions = -error[picks]
            directions /= torch.linalg.vector_norm(directions, dim=1, keepdim=True).clamp_min(1e-12)
        directions = self.world.all_sum(directions)
        alive = torch.linalg.vector_norm(sae.W_enc[~dead], dim=1).mean() if bool((~dead).any()) else 1.0
        sae.W_dec[dead] = directions.to(sae.W_dec.dtype)
        sae.W_enc[dead] = (directions * alive).to(sae.W_enc.dtype)
        sae.b_enc[dead] = 0.0
        sae.restarted(dead)
        for parameter in (sae.W_dec, sae.W_enc, sae.b_enc):
            for moment in self.optimizer.state.get(parameter, {}).values():
                if isinstance(moment, torch.Tensor) and moment.shape[:1] == dead.shape:
                    moment[dead] = 0.0
        self.tokens_since_fired[dead] = 0
        return count

    def state(self) -> dict:
        """What `restore` needs to go on exactly where this trainer is (torch.save-able, tensors and numbers)."""
        return {"sae": self.sae.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "tokens_since_fired": self.tokens_since_fired,
                "initial": self.initial, "steps": self.steps, "tokens": self.tokens}

    def restore(self, state: dict) -> None:
        """Go on from `state()` of a trainer made with the same SAE shape and settings."""
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.tokens_since_fired.copy_(state["tokens_since_fired"])
        self.initial = state["initial"]
        self.steps, self.tokens = int(state["steps"]), int(state["tokens"])

    @torch.no_grad()
    def draw_dictionary(self, covariance: torch.Tensor | None) -> None:
        """The random directions of the frozen (or cone-held) part, seeded by the SAE's own seed: the decoder's
        (the encoder starting tied to them at the usual scale), or the encoder's (the decoder starting as
        them)."""
        sae, name = self.sae, self.config.dictionary
        directions = D.draw(name, sae.num_latents, sae.num_inputs, sae.seed, covariance).to(sae.W_dec.device)
        sae.W_dec.copy_(directions)
        sae.W_enc.copy_(directions if D.encoder_frozen(name) else directions / math.sqrt(3))
        if name == "soft-frozen-decoder":
            self.initial = directions.clone()
