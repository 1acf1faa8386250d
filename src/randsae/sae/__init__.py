"""SAE modules: relu.py (ReLU + L1, toy experiments)."""

from randsae.sae.relu import ReluSAE

__all__ = ["ReluSAE"]
