"""Sources of vectors: the toy generator, matched controls, the 2-D demo."""
