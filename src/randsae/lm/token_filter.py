"""Which tokens an SAE is trained and measured on (massive activations).

Many language models give a few tokens a residual norm hundreds of times the rest: SmolLM2's blocks 11–27 the
first token of every context (~26,000 against a median of ~170), Pythia its attention-sink tokens. One direction
then holds nearly all the variance, and explained variance is near 1 for anything that reconstructs it. Recent
trainers can leave such tokens out; so can randsae, in training and in every metric, with the paper's behaviour
(every token) as the default:

- `skip_positions` = n: the first n positions of each context are left out;
- `max_norm_ratio` = r: tokens whose norm is above r × the median norm of their batch are left out.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenFilter:
    skip_positions: int = 0
    max_norm_ratio: float | None = None

    @classmethod
    def of(cls, settings: dict) -> "TokenFilter":
        """The filter recorded in a training run's settings (runs from before it was recorded: none)."""
        return cls(settings.get("skip_positions", 0) or 0, settings.get("max_norm_ratio"))

    @property
    def active(self) -> bool:
        return self.skip_positions > 0 or self.max_norm_ratio is not None

    def describe(self) -> str:
        parts = []
        if self.skip_positions:
            parts.append(f"first {self.skip_positions} position{'s' if self.skip_positions > 1 else ''} "
                         "of each context left out")
        if self.max_norm_ratio is not None:
            parts.append(f"tokens above {self.max_norm_ratio:g} × the median norm left out")
        return "; ".join(parts) or "every token"

    def mask(self, hidden: torch.Tensor) -> torch.Tensor:
        """Which tokens of `hidden` (contexts × context length × d) are kept: a (contexts × length) bool."""
        keep = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        keep[:, :self.skip_positions] = False
        if self.max_norm_ratio is not None:
            norms = hidden.float().norm(dim=-1)
            keep &= norms <= self.max_norm_ratio * norms.median()
        return keep

    def apply(self, hidden: torch.Tensor) -> torch.Tensor:
        """The kept tokens of `hidden` (contexts × length × d) as rows (kept tokens × d)."""
        if not self.active:
            return hidden.reshape(-1, hidden.shape[-1])
        return hidden[self.mask(hidden)]
