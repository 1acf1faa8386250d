"""Random dictionaries: the second random baseline, a random SAE on the trained model (docs/choices.md
"Random dictionaries"). An SAE whose decoder or encoder stays at (or near) its random initialisation while
the rest trains, with the same data order, seed and schedule as the trained SAE, so that the arms differ in
the frozen part only. If such an SAE comes close to a trained one, the trained SAE's numbers say little about
what its dictionary learned.

- `trained`: every parameter trained (the SAE of the paper).
- `frozen-decoder`: the decoder's directions fixed at random unit vectors, uniform on the sphere ("iso");
  encoder and biases trained.
- `frozen-decoder-cov`: the same, the directions drawn from a Gaussian with the covariance of the training
  activations (the first batch's) and then unit-normalised.
- `soft-frozen-decoder`: every decoder direction kept within a cone of its random initial direction (cosine
  ≥ τ, `--dictionary-cone`, default 0.8) by a projection after each optimiser step; the rest trained.
- `frozen-encoder`: the encoder's directions fixed at random unit vectors; the decoder (its norms free) and
  the encoder bias trained.

Directions are rows (latents × inputs) here; a ReLU stack's are `[stack, latents, inputs]` and its encoder
columns, which `encoder_rows` handles.
"""

import torch

from randsae.errors import BadInput
from randsae.seeding import derive_seed, generator

DICTIONARIES = {
    "trained": "every parameter trained",
    "frozen-decoder": "decoder fixed at random unit directions (uniform on the sphere)",
    "frozen-decoder-cov": "decoder fixed at random directions with the activations' covariance",
    "soft-frozen-decoder": "decoder kept within a cone of its random initial directions",
    "frozen-encoder": "encoder fixed at random unit directions",
}
DEFAULT_CONE = 0.8


def check_dictionary(name: str, cone: float = DEFAULT_CONE) -> None:
    if name not in DICTIONARIES:
        raise BadInput(f"unknown dictionary {name!r}; choose from {', '.join(DICTIONARIES)}.")
    if not 0 < cone < 1:
        raise BadInput(f"the dictionary cone (cosine to the initial direction) must lie in (0, 1), not {cone}.")


def decoder_frozen(name: str) -> bool:
    return name in ("frozen-decoder", "frozen-decoder-cov")


def encoder_frozen(name: str) -> bool:
    return name == "frozen-encoder"


def unit_decoder(name: str) -> bool:
    """Whether the decoder's rows are kept at unit norm (the paper's constraint): trained and soft-frozen. A
    frozen decoder is never touched; behind a frozen encoder the decoder's norms set the latents' scale."""
    return name in ("trained", "soft-frozen-decoder")


def needs_data(name: str) -> bool:
    """Whether the dictionary is drawn from the training activations (at the first batch)."""
    return name == "frozen-decoder-cov"


def random_directions(count: int, dim: int, seed: int, covariance: torch.Tensor | None = None) -> torch.Tensor:
    """`count` unit vectors in `dim` dimensions (rows): Gaussian draws, isotropic or with `covariance`, then
    normalised. Seeded, the same on every device and rank."""
    draws = torch.randn(count, dim, generator=generator(seed, "random-dictionary"), dtype=torch.float64)
    if covariance is not None:
        values, vectors = torch.linalg.eigh(covariance.double())
        draws = draws @ (vectors * values.clamp_min(0).sqrt()).T
    return torch.nn.functional.normalize(draws, dim=-1).float()


def draw(name: str, count: int, dim: int, seed: int, covariance: torch.Tensor | None = None) -> torch.Tensor:
    """The directions of dictionary `name` for an SAE seeded `seed` (`random_directions` under a seed of its
    own, so each dictionary draws apart)."""
    return random_directions(count, dim, derive_seed(seed, "dictionary", name), covariance)


def covariance(sums: torch.Tensor, squares: torch.Tensor, count: float) -> torch.Tensor:
    """The covariance matrix from Σx (d) and Σxxᵀ (d × d) over `count` vectors."""
    mean = sums / count
    return squares / count - torch.outer(mean, mean)


@torch.no_grad()
def project_to_cone(directions: torch.Tensor, initial: torch.Tensor, cone: float) -> None:
    """Move every unit row of `directions` that left the cone cos ≥ `cone` around its row of `initial` back to
    the cone's edge, in the plane of the two (in place; rows stay unit)."""
    cosine = (directions * initial).sum(-1, keepdim=True)
    outside = cosine < cone
    if not outside.any():
        return
    orthogonal = torch.nn.functional.normalize(directions - cosine * initial, dim=-1)
    edge = cone * initial + (1 - cone**2) ** 0.5 * orthogonal
    directions.copy_(torch.where(outside, edge, directions))


def min_cosine(directions: torch.Tensor, initial: torch.Tensor) -> float:
    """The smallest cosine of a row of `directions` to its row of `initial`."""
    cosine = torch.nn.functional.cosine_similarity(directions.double(), initial.double(), dim=-1)
    return float(cosine.min())


def arm_name(variant: str, dictionary: str) -> str:
    """How the tables name an SAE arm: its model's variant, and the random dictionary after a `+`
    (`trained+frozen-decoder`); the trained dictionary is the variant alone."""
    return variant if dictionary == "trained" else f"{variant}+{dictionary}"


def split_arm(name: str) -> tuple[str, str]:
    """(variant, dictionary) of an arm's name."""
    variant, _, dictionary = name.partition("+")
    return variant, dictionary or "trained"
