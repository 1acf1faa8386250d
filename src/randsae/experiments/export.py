"""`randsae export`: SAEs written by randsae (an `lm train` run, or any single SAE directory) in the layout
another tool opens unchanged — sparsify's (which delphi loads through) or SAELens's (randsae's own; export
rewrites checkpoints from older randsae versions into it)."""

import logging
from pathlib import Path

from randsae.errors import BadInput
from randsae.io import read_json, write_json
from randsae.lm.sae_run import trained_layers
from randsae.sae import ARCHITECTURES, ReluSAE, TopKSAE
from randsae.sae.files import read_sae_files

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("sparsify", "saelens")


def sae_directories(run: Path) -> dict[str, Path]:
    """{name: directory} of the SAEs in `run`: its layer.<i> folders, or `run` itself when it is one SAE."""
    if (run / "cfg.json").is_file():
        return {run.name: run}
    layers = trained_layers(run)
    if not layers:
        raise BadInput(f"{run} holds no SAE (no cfg.json, no layer.<i>/ folders of an `lm train` run).")
    return {f"layer.{layer}": path for layer, path in layers.items()}


def export(run: str | Path, out: Path, fmt: str) -> list[Path]:
    """Write every SAE of `run` into OUT in format `fmt`; returns the folders written."""
    if fmt not in EXPORT_FORMATS:
        raise BadInput(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}.")
    run = Path(run)
    directories = sae_directories(run)
    source = read_json(run / "config.json").get("source", {}) if (run / "config.json").is_file() else {}
    written = []
    saes = {}
    for name, directory in directories.items():
        cfg, tensors = read_sae_files(directory)
        saes[name] = (ARCHITECTURES[cfg["architecture"]].from_files(cfg, tensors), cfg["extra"], directory)
    if fmt == "sparsify":
        blocks = str(source.get("blocks_module") or "model.layers").split(".")[-1]
        hookpoints = []
        for name, (sae, _, directory) in saes.items():
            if not isinstance(sae, TopKSAE):
                raise BadInput(f"{directory} is a {type(sae).__name__}; sparsify reads TopK SAEs only (export it "
                               "as saelens).")
            hookpoint = f"{blocks}.{name.split('.', 1)[1]}" if name.startswith("layer.") else name
            written.append(sae.save_sparsify(out / hookpoint))
            hookpoints.append(hookpoint)
        write_json(out / "config.json", {
            "sae": {"activation": "topk", "num_latents": sae.num_latents, "k": sae.k, "normalize_decoder": True,
                    "multi_topk": False, "skip_connection": False, "transcode": False},
            "hookpoints": hookpoints, "model": source.get("model"), "randsae_source": source or None})
    else:
        for name, (sae, extra, directory) in saes.items():
            if isinstance(sae, ReluSAE):
                written.append(sae.save(out / name, 0, extra=extra))
            else:
                metadata = read_json(directory / "cfg.json").get("metadata")
                written.append(sae.save(out / name, metadata if isinstance(metadata, dict) else None, extra))
    for path in written:
        log.info("wrote %s", path)
    return written
