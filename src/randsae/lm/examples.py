"""Windows, per-latent summaries and example sets (docs/paper.md §2.3, §2.4), from a layer's latent index.

Contexts are cut into windows of `window` tokens (a context whose length is not a multiple keeps a short
last window); a window activates a latent when any of its tokens does, with the largest activation there as
its strength. Per latent, from its activating windows (the strongest `max_examples` kept):
- the explainer set: `explainer_examples` drawn at random;
- the test set: `test_examples` drawn by activation quantile (`quantiles` equal strata of the kept windows
  that are not in the explainer set, the same number from each);
- the non-activating set: `non_activating` random windows where the latent never fires.
Every draw is seeded by (seed, layer, latent), so a latent's sets do not depend on which others are drawn.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from randsae.errors import BadInput, check_seed
from randsae.io import atomic_write
from randsae.metrics import token_entropy, token_mass
from randsae.seeding import derive_seed
from randsae.settings import setting


@dataclass
class ExampleSettings:
    window: int = setting(32, help="tokens per example window")
    max_examples: int = setting(10_000, help="activating windows kept per latent, the strongest")
    min_examples: int = setting(200, help="activating windows a latent needs to be eligible")
    sample: int = setting(100, help="eligible latents drawn per layer")
    explainer_examples: int = setting(40, help="windows in the explainer set")
    test_examples: int = setting(100, help="activating windows in the test set")
    quantiles: int = setting(10, help="activation strata the test set is drawn from")
    non_activating: int = setting(100, help="windows where the latent is silent")
    top_tokens: int = 5
    seed: int = 0

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        self.validate()

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if name == "seed":
                check_seed(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be a positive integer, not {value!r}.")
        if self.test_examples % self.quantiles:
            raise BadInput(f"test_examples ({self.test_examples}) must be a multiple of quantiles "
                             f"({self.quantiles}).")


@dataclass(frozen=True)
class Windows:
    """Window numbering of a cache: window w of context c covers positions [start, stop)."""

    context_length: int
    window: int
    num_contexts: int

    @property
    def per_context(self) -> int:
        return math.ceil(self.context_length / self.window)

    @property
    def count(self) -> int:
        return self.num_contexts * self.per_context

    def of(self, positions: np.ndarray) -> np.ndarray:
        context, offset = np.divmod(positions, self.context_length)
        return context * self.per_context + offset // self.window

    def span(self, w: int) -> tuple[int, int]:
        context, j = divmod(int(w), self.per_context)
        start = context * self.context_length + j * self.window
        return start, min(start + self.window, (context + 1) * self.context_length)


@dataclass
class Window:
    """One window shown to an explainer or scorer: its tokens and this latent's activation on each."""

    window: int
    start: int  # position of its first token in the latent cache
    tokens: list[int]
    activations: list[float]
    max_activation: float
    quantile: int | None = None  # test windows: the activation stratum it was drawn from (0 = weakest)


NEGATIVES = ("random", "similar-tokens", "neighbours")
HARD_NEGATIVES = {"similar-tokens": "similar_tokens", "neighbours": "neighbours"}  # kind → ExampleSets field
NEIGHBOURS = 5  # nearest latents by decoder cosine whose windows make the `neighbours` negatives


@dataclass
class ExampleSets:
    """The three example sets of one sampled latent (one JSON line of OUT/examples/layer.<i>.jsonl)."""

    layer: int
    latent: int
    max_activation: float  # over all its activations in the cache
    explainer: list[Window] = field(default_factory=list)
    test: list[Window] = field(default_factory=list)
    non_activating: list[Window] = field(default_factory=list)  # silent windows drawn at random (the paper's)
    # hard negatives, silent too: windows holding the latent's top tokens, and windows where its nearest
    # neighbours (decoder cosine) fire (empty in records written before they were drawn)
    similar_tokens: list[Window] = field(default_factory=list)
    neighbours: list[Window] = field(default_factory=list)

    def negatives(self, kind: str) -> list[Window]:
        """The silent windows of one kind: random, similar-tokens or neighbours."""
        return self.non_activating if kind == "random" else getattr(self, kind.replace("-", "_"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "ExampleSets":
        data = json.loads(line)
        sets = {name: [Window(**w) for w in data.pop(name)] for name in ("explainer", "test", "non_activating")}
        hard = {name: [Window(**w) for w in data.pop(name, [])] for name in HARD_NEGATIVES.values()}
        return cls(**data, **sets, **hard)  # pyright: ignore[reportArgumentType] (data: the scalar fields)


@dataclass
class LatentSummary:
    """One row of OUT/latents.csv: a latent that fires at least once."""

    model: str
    variant: str
    layer: int
    latent: int
    firing_rate: float  # share of tokens where it fires
    activations: int  # tokens where it fires
    activating_windows: int
    max_activation: float
    entropy_explainer: float  # nats, over its explainer set (the paper's definition)
    entropy_all: float  # nats, over all its activations in the cache
    eligible: bool
    sampled: bool
    top_token_ids: list[int]
    top_token_shares: list[float]  # share of the latent's whole activation mass
    top_tokens: list[str]


class LatentExamples:
    """One latent's activations grouped by window, and the seeded draws of its example sets."""

    def __init__(self, positions: np.ndarray, values: np.ndarray, windows: Windows, settings: ExampleSettings,
                 layer: int, latent: int):
        self.positions, self.values, self.windows, self.settings = positions, values, windows, settings
        ids = windows.of(positions)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])  # positions ascend, so windows do too
        self.window_ids, self.window_max = ids[starts], np.maximum.reduceat(values, starts)
        self.token_windows = ids
        n = len(self.window_ids)
        keep = settings.max_examples
        self.kept = np.argpartition(-self.window_max, keep)[:keep] if n > keep else np.arange(n)
        self.layer, self.latent = layer, latent
        self.rng = np.random.default_rng(derive_seed(settings.seed, "latent-examples", layer, latent))
        self.explainer = np.sort(self.rng.choice(self.kept, size=min(settings.explainer_examples, len(self.kept)),
                                                 replace=False))

    def explainer_entropy(self, tokens: np.ndarray) -> float:
        chosen = np.isin(self.token_windows, self.window_ids[self.explainer])
        return token_entropy(tokens[self.positions[chosen]], self.values[chosen])

    def test_set(self) -> list[tuple[int, int]]:
        """(window index into window_ids, quantile) of the test windows, weakest stratum first."""
        rest = np.setdiff1d(self.kept, self.explainer)
        rest = rest[np.argsort(self.window_max[rest], kind="stable")]
        per = self.settings.test_examples // self.settings.quantiles
        chosen = []
        for q, stratum in enumerate(np.array_split(rest, self.settings.quantiles)):
            picks = self.rng.choice(stratum, size=min(per, len(stratum)), replace=False) if len(stratum) else []
            chosen += [(int(i), q) for i in sorted(picks)]
        return chosen

    def non_activating_set(self) -> list[int]:
        """Window ids where the latent never fires, drawn uniformly (all of them if there are few)."""
        total, wanted = self.windows.count, self.settings.non_activating
        silent = total - len(self.window_ids)
        if silent <= wanted:
            return np.setdiff1d(np.arange(total), self.window_ids).tolist()
        chosen: set[int] = set()
        active = set(self.window_ids.tolist())
        while len(chosen) < wanted:
            for w in self.rng.integers(0, total, size=2 * wanted).tolist():
                if w not in active and len(chosen) < wanted:
                    chosen.add(w)
        return sorted(chosen)

    def silent_among(self, candidates: np.ndarray, kind: str) -> list[int]:
        """Up to `non_activating` of the candidate window ids where the latent never fires, drawn under the
        seed (each kind its own draw, so adding one changes no other)."""
        silent = np.setdiff1d(np.unique(candidates), self.window_ids)
        rng = np.random.default_rng(derive_seed(self.settings.seed, kind, self.layer, self.latent))
        wanted = self.settings.non_activating
        chosen = silent if len(silent) <= wanted else rng.choice(silent, wanted, replace=False)
        return sorted(chosen.tolist())

    def similar_token_windows(self, tokens: np.ndarray, top_ids: list[int]) -> list[int]:
        """Silent windows that hold one of the latent's top tokens."""
        return self.silent_among(self.windows.of(np.flatnonzero(np.isin(tokens, top_ids))), "similar-tokens")

    def neighbour_windows(self, neighbour_positions: list[np.ndarray]) -> list[int]:
        """Silent windows where one of the latent's nearest neighbours fires."""
        found = [self.windows.of(p) for p in neighbour_positions if len(p)]
        return self.silent_among(np.concatenate(found) if found else np.empty(0, dtype=np.int64), "neighbours")

    def window(self, w: int, tokens: np.ndarray, quantile: int | None = None) -> Window:
        start, stop = self.windows.span(w)
        lo, hi = np.searchsorted(self.positions, [start, stop])
        activations = np.zeros(stop - start, dtype=np.float32)
        activations[self.positions[lo:hi] - start] = self.values[lo:hi]
        return Window(int(w), start, tokens[start:stop].tolist(), activations.tolist(),
                      float(activations.max(initial=0.0)), quantile)

    def example_sets(self, tokens: np.ndarray, layer: int, latent: int, top_ids: list[int] | None = None,
                     neighbour_positions: list[np.ndarray] | None = None) -> ExampleSets:
        """Call once, after the summary: the test and non-activating draws follow the explainer's. With
        `top_ids` (its top tokens) and `neighbour_positions` (where its nearest latents fire) it also draws
        the hard negatives."""
        return ExampleSets(
            layer, latent, float(self.values.max()),
            explainer=[self.window(int(self.window_ids[i]), tokens) for i in self.explainer],
            test=[self.window(int(self.window_ids[i]), tokens, q) for i, q in self.test_set()],
            non_activating=[self.window(w, tokens) for w in self.non_activating_set()],
            similar_tokens=[self.window(w, tokens) for w in self.similar_token_windows(tokens, top_ids)]
            if top_ids else [],
            neighbours=[self.window(w, tokens) for w in self.neighbour_windows(neighbour_positions)]
            if neighbour_positions is not None else [])


def summarise(examples: LatentExamples, tokens: np.ndarray, num_tokens: int, top: int) -> dict:
    """The numbers of a latent's summary row (everything but its identity and the sampled flag)."""
    ids, mass = token_mass(tokens[examples.positions], examples.values)
    order = np.argsort(-mass, kind="stable")[:top]
    return {"firing_rate": len(examples.positions) / num_tokens, "activations": len(examples.positions),
            "activating_windows": len(examples.window_ids), "max_activation": float(examples.values.max()),
            "entropy_explainer": examples.explainer_entropy(tokens),
            "entropy_all": token_entropy(tokens[examples.positions], examples.values),
            "eligible": len(examples.window_ids) >= examples.settings.min_examples,
            "top_token_ids": ids[order].tolist(), "top_token_shares": (mass[order] / mass.sum()).tolist()}


def write_examples(path: Path, sets: list[ExampleSets]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text("".join(s.to_json() + "\n" for s in sets)))


def read_examples(path: Path) -> dict[int, ExampleSets]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            sets = ExampleSets.from_json(line)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise BadInput(f"{path} line {number} is not a set of examples ({e}).") from None
        out[sets.latent] = sets
    return out
