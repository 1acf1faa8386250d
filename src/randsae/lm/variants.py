"""A model's random twins (docs/paper.md §2.1): re-randomised, re-randomised but for the embeddings, step 0,
and the control whose every token occurrence gets a fresh random input embedding."""

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from randsae.errors import BadInput
from randsae.lm.activations import LanguageModel
from randsae.seeding import generator

log = logging.getLogger(__name__)

VARIANTS = ("trained", "rerandomized", "rerandomized-no-embed", "step0", "control")


def make_variant(model: LanguageModel, variant: str, seed: int = 0, rerandomize_norms: bool = False,
                 control_std: float = 1.0, revision: str | None = None) -> LanguageModel:
    """A new model for `variant`; `model` is left untouched. Deterministic under `seed`.

    The result carries `randsae_variant`, a dict saying what was done (for step 0: where the weights came
    from). `revision` is the trained model's revision, for the record only.
    """
    if variant not in VARIANTS:
        raise BadInput(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
    record = {"variant": variant, "seed": seed, "revision": revision}
    if variant == "step0":
        out, record["step0_source"] = step0_model(model, seed)
    else:
        out = copy.deepcopy(model)
    if variant in ("rerandomized", "rerandomized-no-embed"):
        keep_embeddings = variant == "rerandomized-no-embed"
        record["rerandomize_norms"] = rerandomize_norms
        rerandomize(out, seed, keep_embeddings=keep_embeddings, keep_norms=not rerandomize_norms)
    elif variant == "control":
        record["control_std"] = control_std
        embedding = out.get_input_embeddings()
        out.set_input_embeddings(NoiseEmbedding(embedding.weight, control_std, seed))
    out.randsae_variant = record
    return out.eval()


def norm_parameters(model: LanguageModel) -> set[int]:
    """ids of the parameters of normalisation layers (LayerNorm, RMSNorm and the like)."""
    return {id(p) for module in model.modules() if "norm" in type(module).__name__.lower()
            for p in module.parameters(recurse=False)}


@torch.no_grad()
def rerandomize(model: LanguageModel, seed: int, keep_embeddings: bool = False, keep_norms: bool = True) -> None:
    """Overwrite every parameter tensor with i.i.d. N(its own mean, its own std), in place.

    Tied tensors (an unembedding that is the embedding) are one tensor and are drawn once.
    """
    kept = norm_parameters(model) if keep_norms else set()
    if keep_embeddings:
        kept |= {id(model.get_input_embeddings().weight)}
        output = model.get_output_embeddings()
        if output is not None:
            kept.add(id(output.weight))
    for name, p in model.named_parameters():  # each shared tensor once
        if id(p) in kept:
            continue
        values = p.detach().double()
        std = values.std().item() if p.numel() > 1 else 0.0
        gen = generator(seed, "rerandomize", name)
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        p.copy_(noise * std + values.mean().item())


def step0_model(model: LanguageModel, seed: int) -> tuple[LanguageModel, str]:
    """The model at initialisation: the hub's `step0` revision where the model came from the hub and has
    one (Pythia), otherwise a fresh model from the trained one's config under `seed`. Returns it and
    where it came from. A local model (a directory, a .gguf file, the embedded one) is never looked up on
    the hub, whatever its path looks like; hub weights that equal the trained ones are refused."""
    from transformers import AutoModelForCausalLM

    from randsae.lm.models import is_hub_name

    origin = getattr(model, "randsae_origin", None)
    name = origin["name"] if origin else getattr(model, "name_or_path", None) or model.config.name_or_path
    from_hub = origin["hub"] if origin else bool(name) and is_hub_name(name)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    if from_hub:
        try:
            fresh = AutoModelForCausalLM.from_pretrained(name, revision="step0", dtype=dtype)
        except (OSError, ValueError) as e:
            log.warning("no step0 revision of %s on the hub (%s); initialising from the config under seed %d",
                        name, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, seed)
        else:
            if same_weights(fresh, model):
                raise BadInput(f"the hub's step0 revision of {name} has the trained model's weights; "
                                 "refusing to use it as the step-0 variant.")
            commit = getattr(fresh.config, "_commit_hash", None)
            return fresh.to(device), f"hub revision step0 of {name}" + (f" (commit {commit})" if commit else "")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(copy.deepcopy(model.config), dtype=dtype)
    if same_weights(fresh, model):
        raise BadInput(f"the step-0 initialisation under seed {seed} has the 'trained' model's weights (was it "
                         "never trained?); the step-0 variant would be the trained model: choose another --seed.")
    return fresh.to(device), f"initialisation from the model's config under seed {seed}"


@torch.no_grad()
def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same parameter names, shapes and values."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(
        pa[k].shape == pb[k].shape and torch.equal(pa[k].cpu(), pb[k].cpu()) for k in pa)


class NoiseEmbedding(nn.Module):
    """An input embedding that ignores the token: every occurrence gets fresh N(0, std²) noise.

    Keeps the trained matrix as `weight` (unused in forward) so that tied unembeddings and library code
    that reads the embedding's weight keep working.
    """

    def __init__(self, weight: nn.Parameter, std: float, seed: int):
        super().__init__()
        if not std > 0:
            raise BadInput(f"control_std must be positive, not {std!r}.")
        self.weight, self.std, self.seed = weight, std, seed
        self.generator = generator(seed, "control-noise", device=weight.device)
        self.window: tuple[int, int] | None = None  # (first row, rows of the whole batch): see `batch_share`

    def on_its_device(self) -> None:
        """Draw on the device the embedding was moved to (a model dispatched across devices)."""
        if self.generator.device != self.weight.device:
            self.generator = generator(self.seed, "control-noise", device=self.weight.device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        shape = (*input_ids.shape, self.weight.shape[1])
        if self.window is not None:  # the whole batch's noise drawn, this share's rows kept
            first, rows = self.window
            noise = torch.randn((rows, *shape[1:]), generator=self.generator, device=self.weight.device)
            noise = noise[first:first + shape[0]]
        else:
            noise = torch.randn(shape, generator=self.generator, device=self.weight.device)
        return (noise * self.std).to(self.weight.dtype)


@contextmanager
def batch_share(model: LanguageModel, first: int, rows: int) -> Iterator[None]:
    """Inside the block, a forward pass on rows first … of a batch of `rows` contexts (a rank's share) draws
    what the whole batch would (the control's noise), so that the ranks together see one process's batch."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, NoiseEmbedding):
        yield
        return
    embedding.window = (first, rows)
    try:
        yield
    finally:
        embedding.window = None


def restart_draws(model: LanguageModel) -> None:
    """Start the model's draws (the control's noise) again from the first, as a freshly made model's: each pass
    over the same text then sees the same noise (eval and latents make a pass per group of layers)."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, NoiseEmbedding):
        embedding.generator = generator(embedding.seed, "control-noise", device=embedding.weight.device)


def draw_unseen(model: LanguageModel, rows: int, context_length: int) -> None:
    """Advance the model's draws past a batch of `rows` contexts this rank has no share of."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, NoiseEmbedding):
        with batch_share(model, rows, rows):
            embedding(torch.zeros(0, context_length, dtype=torch.long))
