"""Language models: loading (models.py) and their random twins (variants.py)."""

from randsae.lm.models import load_model
from randsae.lm.variants import VARIANTS, make_variant

__all__ = ["VARIANTS", "load_model", "make_variant"]
