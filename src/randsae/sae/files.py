"""SAE directories on disk, in the layouts the field's tools use, read into one canonical form.

- SAELens (randsae's own layout): `cfg.json` + `sae_weights.safetensors` with W_enc (d_in × d_sae), b_enc,
  W_dec (d_sae × d_in), b_dec. Architectures read: `topk`, `standard` (ReLU; `normalize_activations`
  `none` or `layer_norm`, SAELens's per-sample standardisation), randsae's older `relu`, `jumprelu`
  (+ threshold), `gated` (b_gate, b_mag, r_mag instead of b_enc) and the training checkpoints `batchtopk` and
  `matryoshka_batchtopk` (+ topk_threshold: read as the JumpReLU SAE SAELens saves for inference).
- sparsify (EleutherAI; delphi loads through it): `cfg.json` (`d_in`, `num_latents`, `k`, `activation`) +
  `sae.safetensors` with `encoder.weight` (num_latents × d_in), `encoder.bias`, `W_dec`, `b_dec`.

`read_sae_files` returns (cfg, tensors) with cfg = {"architecture": "topk" | "relu", "d_in", "d_sae", "k"
(TopK), "standardize" (ReLU), "extra": what randsae recorded beside the weights} and the tensors in the
SAELens orientation. Whatever cannot be represented exactly is refused in one sentence naming it.
"""

import json
from pathlib import Path

import torch

from randsae.errors import BadInput
from randsae.io import atomic_write, check_fields, load_safetensors, read_json

SAELENS_WEIGHTS, SPARSIFY_WEIGHTS = "sae_weights.safetensors", "sae.safetensors"
WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")
# each canonical architecture's encoder tensors besides W_enc (one value per latent)
ENCODER_TENSORS = {"topk": ("b_enc",), "relu": ("b_enc",), "jumprelu": ("b_enc", "threshold"),
                   "gated": ("b_gate", "b_mag", "r_mag")}
# SAELens's training-time names whose inference form is a JumpReLU SAE (the batch threshold per latent)
BATCH_TOPK = ("batchtopk", "matryoshka_batchtopk")
SAELENS_FORMAT = "6.0.0"  # the SAELens config format randsae writes (sae_lens_version in metadata)
SAELENS_FIELDS = {"architecture", "d_in", "d_sae", "k", "standardize", "dtype", "device", "apply_b_dec_to_input",
                  "normalize_activations", "reshape_activations", "rescale_acts_by_decoder_norm",
                  "activation_fn_kwargs", "metadata"}
SAELENS_NORMALIZATIONS = {"none": False, "layer_norm": True}  # → randsae's per-sample standardisation


def saelens_cfg(architecture: str, d_in: int, d_sae: int, *, apply_b_dec_to_input: bool,
                normalize_activations: str = "none", metadata: dict | None = None, extra: dict | None = None,
                **fields) -> dict:
    """A complete SAELens ≥ 6 cfg.json. `metadata` holds SAELens's metadata fields (model_name, hook_name,
    context_size, prepend_bos, …); `extra`, everything randsae records that SAELens has no field for, goes
    under the key "randsae", which no SAELens field uses."""
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": normalize_activations,
           "reshape_activations": "none", **fields,
           "metadata": {"sae_lens_version": SAELENS_FORMAT,
                        **{k: v for k, v in (metadata or {}).items() if v is not None}}}
    if extra:
        cfg["randsae"] = extra
    return cfg


def write_sae_files(directory: str | Path, cfg: dict, tensors: dict[str, torch.Tensor],
                    weights_file: str = SAELENS_WEIGHTS) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().float().cpu().contiguous() for name, t in tensors.items()}
    # cfg first: the weights file is what marks a saved SAE (a run killed between the two redoes it)
    atomic_write(directory / "cfg.json", lambda p: p.write_text(json.dumps(cfg, indent=2) + "\n"))
    atomic_write(directory / weights_file, lambda p: save_file(tensors, str(p)))
    return directory


def read_sae_files(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(canonical cfg, tensors) of an SAE directory in the SAELens or the sparsify layout."""
    directory = Path(directory)
    if not (directory / "cfg.json").is_file():
        raise FileNotFoundError(f"{directory / 'cfg.json'} does not exist; is {directory} an SAE directory?")
    if (directory / SAELENS_WEIGHTS).is_file():
        cfg, tensors = _read_saelens(directory)
    elif (directory / SPARSIFY_WEIGHTS).is_file():
        cfg, tensors = _read_sparsify(directory)
    else:
        raise FileNotFoundError(f"{directory} holds no {SAELENS_WEIGHTS} (SAELens, randsae) or {SPARSIFY_WEIGHTS} "
                                "(sparsify); is it an SAE directory?")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,),
                **{name: (d_sae,) for name in ENCODER_TENSORS[cfg["architecture"]]}}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise BadInput(f"{directory}: {name} has shape {tuple(tensors[name].shape)}, but its cfg.json "
                             f"(d_in {d_in}, d_sae {d_sae}) implies {shape}.")
        if not tensors[name].is_floating_point() or not torch.isfinite(tensors[name]).all():
            raise BadInput(f"{directory}: {name} holds values that are not finite numbers (nan or inf); the SAE "
                           "is corrupt or its training diverged.")
    return cfg, {name: tensors[name] for name in expected}


def _read_saelens(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    path = directory / "cfg.json"
    raw = read_json(path, {"d_in": int, "d_sae": int})
    architecture = raw.get("architecture")
    if architecture in ("jumprelu", "gated", *BATCH_TOPK):
        return _read_thresholded(path, raw, architecture)
    tensors = load_safetensors(directory / SAELENS_WEIGHTS, list(WEIGHTS))
    if isinstance(raw.get("randsae"), dict):
        extra = raw["randsae"]
    elif "metadata" not in raw:  # randsae before the SAELens layout kept its own fields at the top level
        extra = {k: v for k, v in raw.items() if k not in SAELENS_FIELDS}
    else:  # a checkpoint SAELens wrote
        extra = {}
    cfg = {"d_in": raw["d_in"], "d_sae": raw["d_sae"], "extra": extra}
    if raw["d_in"] < 1 or raw["d_sae"] < 1:
        raise BadInput(f"{path}: d_in and d_sae must be positive, not {raw['d_in']} and {raw['d_sae']}.")
    if architecture == "topk":
        check_fields(raw, {"k": int}, path)
        if not 0 < raw["k"] <= raw["d_sae"]:
            raise BadInput(f"{path}: k must lie in 1 … d_sae ({raw['d_sae']}), not {raw['k']}.")
        for key, plain in (("rescale_acts_by_decoder_norm", False), ("apply_b_dec_to_input", True)):
            if raw.get(key, plain) != plain:
                raise BadInput(f"{path}: a TopK SAE with {key} = {raw[key]!r} is not supported (randsae's "
                                 f"TopK SAE has {key} = {plain!r}).")
        norm = normalization(raw, path, tensors)
        return {**cfg, "architecture": "topk", "k": raw["k"], "normalization": norm}, tensors
    if architecture == "relu":  # randsae before the SAELens names
        return {**cfg, "architecture": "relu", "standardize": bool(raw.get("standardize", True))}, tensors
    if architecture == "standard":
        norm = raw.get("normalize_activations", "none")
        if norm not in SAELENS_NORMALIZATIONS:
            raise BadInput(f"{path}: normalize_activations {norm!r} is not supported; randsae reads "
                             f"{', '.join(SAELENS_NORMALIZATIONS)}.")
        if tensors["b_dec"].abs().max() > 0:
            raise BadInput(f"{path}: this standard (ReLU) SAE has a non-zero decoder bias b_dec, which "
                             "randsae's ReLU SAE does not have; it cannot be read exactly.")
        return {**cfg, "architecture": "relu", "standardize": SAELENS_NORMALIZATIONS[norm]}, tensors
    raise BadInput(f"{path} holds an SAE of architecture {architecture!r}; randsae reads topk, standard (ReLU), "
                   f"jumprelu, gated, {' and '.join(BATCH_TOPK)} SAEs.")


def normalization(raw: dict, path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """How a SAELens SAE's inputs are normalised (`normalize_activations`), honoured as SAELens honours it:
    the per-token forms (`randsae.sae.normalised`) are returned to be applied around encoding and decoding;
    one factor for all activations (`expected_average_only_in`) is folded into `tensors` here, from the
    `norm_scaling_factor` its cfg.json holds (SAELens's registry lists it; SAELens folds it on loading)."""
    from randsae.sae.normalised import PER_TOKEN

    norm = raw.get("normalize_activations") or "none"
    if norm == "none" or norm in PER_TOKEN:
        return norm
    if norm != "expected_average_only_in":
        raise BadInput(f"{path}: normalize_activations {norm!r} is not supported; randsae reads none, "
                       f"{', '.join(PER_TOKEN)} and expected_average_only_in.")
    factor = raw.get("norm_scaling_factor")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor < float("inf"):
        raise BadInput(f"{path}: normalize_activations is expected_average_only_in, and its cfg.json holds no "
                       "norm_scaling_factor (a positive number) to undo it; add the factor it was trained with "
                       "(SAELens's registry lists it), or fold it in with SAELens's "
                       "fold_activation_norm_scaling_factor.")
    # SAELens's fold: encoding factor × x equals encoding x with W_enc × factor and b_dec / factor
    tensors["W_enc"] = tensors["W_enc"] * factor
    tensors["W_dec"] = tensors["W_dec"] / factor
    tensors["b_dec"] = tensors["b_dec"] / factor
    return "none"


def _extra(raw: dict) -> dict:
    return raw["randsae"] if isinstance(raw.get("randsae"), dict) else {}


def _read_thresholded(path: Path, raw: dict, architecture: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A JumpReLU or Gated SAE (a BatchTopK or Matryoshka training checkpoint becomes the JumpReLU SAE SAELens
    would save for inference: its batch threshold for every latent). Settings that change the numbers are
    honoured (`apply_b_dec_to_input`) or refused in one sentence, never dropped."""
    batch = architecture in BATCH_TOPK
    for key, plain in (("reshape_activations", "none"), ("rescale_acts_by_decoder_norm", False),
                       ("apply_finetuning_scaling_factor", False)):
        if key == "rescale_acts_by_decoder_norm" and batch:
            continue  # folded into the weights below, as SAELens does when it saves the checkpoint for inference
        if raw.get(key, plain) not in (plain, None):
            raise BadInput(f"{path}: a {architecture} SAE with {key} = {raw[key]!r} is not supported (randsae "
                           f"reads {key} = {plain!r}); its numbers would differ from SAELens's.")
    if not isinstance(raw.get("apply_b_dec_to_input", True), bool):
        raise BadInput(f"{path}: 'apply_b_dec_to_input' must be true or false, not "
                       f"{raw['apply_b_dec_to_input']!r}.")
    weights = path.parent / SAELENS_WEIGHTS
    if architecture in BATCH_TOPK:
        tensors = load_safetensors(weights, ["W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"])
        threshold = tensors.pop("topk_threshold").reshape(-1)
        if threshold.numel() != 1:
            raise BadInput(f"{path}: topk_threshold must hold one number, not {threshold.numel()}.")
        tensors["threshold"] = threshold.to(tensors["b_enc"].dtype).expand_as(tensors["b_enc"]).clone()
        if raw.get("rescale_acts_by_decoder_norm"):  # the threshold is already in these folded units
            norms = tensors["W_dec"].norm(dim=-1).clamp(min=1e-8)
            tensors["b_enc"] = tensors["b_enc"] * norms
            tensors["W_dec"] = tensors["W_dec"] / norms.unsqueeze(1)
            tensors["W_enc"] = tensors["W_enc"] * norms.unsqueeze(0)
        kind = "jumprelu"
    else:
        kind = architecture
        tensors = load_safetensors(weights, ["W_enc", "W_dec", "b_dec", *ENCODER_TENSORS[kind]])
    norm = normalization(raw, path, tensors)
    # what twins trained like it need: a BatchTopK SAE's k, a Matryoshka SAE's nested widths
    trained_like = {"batch_k": raw.get("k"), "matryoshka_widths": raw.get("matryoshka_widths")} if batch else {}
    cfg = {"architecture": kind, "d_in": raw["d_in"], "d_sae": raw["d_sae"], "extra": _extra(raw),
           **{key: value for key, value in trained_like.items() if value is not None},
           "apply_b_dec_to_input": raw.get("apply_b_dec_to_input", True), "normalization": norm,
           # what it was trained as: a BatchTopK SAE randsae saved in its inference form says so
           "saved_as": _extra(raw).get("saved_as", architecture) if kind == "jumprelu" else architecture}
    return cfg, tensors


def _read_sparsify(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    path = directory / "cfg.json"
    raw = read_json(path, {"d_in": int, "k": int})
    if raw.get("activation", "topk") != "topk":
        raise BadInput(f"{path}: sparsify activation {raw['activation']!r} is not supported; randsae reads "
                         "topk.")
    for key in ("transcode", "skip_connection"):
        if raw.get(key):
            raise BadInput(f"{path}: a sparsify {key.replace('_', ' ')} is not an SAE randsae can read.")
    tensors = load_safetensors(directory / SPARSIFY_WEIGHTS, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"])
    d_sae = raw.get("num_latents") or raw.get("expansion_factor", 0) * raw["d_in"]
    if not 0 < raw["k"] <= d_sae:
        raise BadInput(f"{path}: k must lie in 1 … num_latents ({d_sae}), not {raw['k']}.")
    canonical = {"W_enc": tensors["encoder.weight"].T, "b_enc": tensors["encoder.bias"],
                 "W_dec": tensors["W_dec"], "b_dec": tensors["b_dec"]}
    return {"architecture": "topk", "d_in": raw["d_in"], "d_sae": d_sae, "k": raw["k"], "extra": {}}, canonical


def write_sparsify(directory: str | Path, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                   b_dec: torch.Tensor, k: int) -> Path:
    """One TopK SAE in sparsify's layout (`SparseCoder.load_from_disk` reads it unchanged); `W_enc` is
    num_latents × d_in, sparsify's `encoder.weight`."""
    num_latents, d_in = W_enc.shape
    cfg = {"activation": "topk", "expansion_factor": max(1, num_latents // d_in), "normalize_decoder": True,
           "num_latents": num_latents, "k": k, "multi_topk": False, "skip_connection": False, "transcode": False,
           "d_in": d_in}
    return write_sae_files(directory, cfg, {"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec,
                                            "b_dec": b_dec}, SPARSIFY_WEIGHTS)
