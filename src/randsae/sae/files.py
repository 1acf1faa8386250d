"""Reading an SAE directory in the SAELens layout: `cfg.json` + `sae_weights.safetensors`, both checked."""

from pathlib import Path

import torch

from randsae.io import check_fields, load_safetensors, read_json

WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


def read_sae_files(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(cfg, tensors) of an SAE directory. The cfg must give `d_in` and `d_sae` as integers and the weights
    must have the shapes they imply (W_enc d_in × d_sae, b_enc d_sae, W_dec d_sae × d_in, b_dec d_in)."""
    directory = Path(directory)
    for name in ("cfg.json", "sae_weights.safetensors"):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} does not exist; is {directory} an SAE directory?")
    cfg = read_json(directory / "cfg.json", {"d_in": int, "d_sae": int})
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    if cfg.get("architecture") == "topk":
        check_fields(cfg, {"k": int}, directory / "cfg.json")
        if not 0 < cfg["k"] <= d_sae:
            raise ValueError(f"{directory / 'cfg.json'}: k must lie in 1 … d_sae ({d_sae}), not {cfg['k']}.")
    if d_in < 1 or d_sae < 1:
        raise ValueError(f"{directory / 'cfg.json'}: d_in and d_sae must be positive, not {d_in} and {d_sae}.")
    path = directory / "sae_weights.safetensors"
    tensors = load_safetensors(path, list(WEIGHTS))
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path} holds {name} of shape {tuple(tensors[name].shape)}, but "
                             f"{directory / 'cfg.json'} (d_in {d_in}, d_sae {d_sae}) implies {shape}.")
    return cfg, tensors
