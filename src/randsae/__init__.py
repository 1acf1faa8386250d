"""randsae: sparse autoencoders on trained and random networks (Heap et al.)."""

__version__ = "0.1.0"
