"""SAELens's run-time normalisation of each activation (`normalize_activations`), for SAEs trained on
normalised inputs: the input is normalised before encoding and the reconstruction mapped back after decoding,
as SAELens's `SAE.forward` does — so reconstruction metrics and the spliced-in activations stay in the model's
units, and the latents are those the SAE was trained to give.

- `layer_norm`: each activation less its mean, over its standard deviation (+1e-5).
- `constant_norm_rescale`: each activation scaled to norm sqrt(d).
- `expected_average_only_in` (one factor for all activations) is folded into the weights where it is read
  (`randsae.sae.files`), as SAELens folds it.
"""

import torch

PER_TOKEN = ("layer_norm", "constant_norm_rescale")


class InputNormalization:
    """Mixed into an SAE class: `input_normalization` ("none" or one of PER_TOKEN) applied by `normalised`
    (at encoding) and undone by `restored` (on the reconstruction of the tokens last encoded)."""

    input_normalization: str = "none"
    _undo: tuple[torch.Tensor, torch.Tensor] | None = None

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_normalization == "none":
            return x
        if self.input_normalization == "constant_norm_rescale":
            scale = x.norm(dim=-1, keepdim=True).clamp(min=1e-12) / x.shape[-1] ** 0.5
            self._undo = (scale, torch.zeros_like(scale))
            return x / scale
        mean = x.mean(dim=-1, keepdim=True)
        std = (x - mean).std(dim=-1, keepdim=True) + 1e-5
        self._undo = (std, mean)
        return (x - mean) / std

    def restored(self, reconstruction: torch.Tensor) -> torch.Tensor:
        if self.input_normalization == "none":
            return reconstruction
        if self._undo is None or self._undo[0].shape[:-1] != reconstruction.shape[:-1]:
            raise RuntimeError("an input-normalised SAE decodes the tokens it last encoded; encode them first.")
        (scale, shift), self._undo = self._undo, None
        return reconstruction * scale + shift
