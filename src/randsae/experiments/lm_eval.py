"""`randsae lm eval`: every trained layer's SAE on held-out contexts (docs/paper.md §2.2).

Per batch of contexts: one clean forward pass gives the next-token losses and every layer's block output;
each layer's SAE reconstructs its output (quality metrics), then two more passes splice in the
reconstruction and a zero vector. Every pass starts from the same input embeddings, so the control
variant's noise is the same in all three. OUT/results.csv has one row per (model, variant, layer).
"""

import logging
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from randsae import io, runs
from randsae.config import resolve_device
from randsae.errors import BadInput
from randsae.experiments.lm_train import arm_of, read_source, read_train_settings, trained_layers
from randsae.lm.activations import open_cache
from randsae.lm.quality import below_baselines, evaluate_batch
from randsae.lm.source import HELD_OUT_FILE, check_same_source, check_token_ids, load_variant, read_held_out
from randsae.lm.token_filter import TokenFilter
from randsae.metrics import TokenQuality
from randsae.sae import architecture_of, load_language_sae
from randsae.tables import EvalRow, read_table, write_table

log = logging.getLogger(__name__)

COMMAND = "lm eval"
CHUNKS = "chunks"  # OUT/chunks/layer.<i>.safetensors: the sums per chunk of held-out tokens a bootstrap resamples

def read_run(sae_dir: Path, acts: str | Path | None) -> tuple[dict, torch.Tensor]:
    """The source the SAEs were trained on, and the held-out contexts to evaluate on."""
    source = read_source(sae_dir)
    if acts is None:
        return source, read_held_out(sae_dir)
    check_same_source(source, open_cache(acts).manifest, sae_dir, acts)
    return source, read_held_out(acts)


def evaluate(sae_dir: str | Path, out: Path, acts: str | Path | None = None, max_tokens: int = 64_000,
             batch_size: int = 4, device: str = "auto", progress: bool = True) -> list[EvalRow]:
    """Evaluate every layer of `sae_dir` not yet in OUT/results.csv; returns the whole table. OUT holds one SAE
    run's evaluation: another run, or other tokens, into the same OUT is refused in one sentence."""
    sae_dir = Path(sae_dir)
    source, held_out = read_run(sae_dir, acts)
    record = {"sae": str(sae_dir.resolve()), "acts": str(Path(acts).resolve()) if acts else None,
              "max_tokens": max_tokens}
    previous = runs.previous_record(out, COMMAND)
    if previous is not None and runs.settings_of(previous) != record:
        changed = ", ".join(k for k in record if previous.get(k) != record[k])
        raise BadInput(f"{out} holds an evaluation with other settings ({changed}: see {out / 'config.json'}); "
                       "choose another --out.")
    layers = trained_layers(sae_dir)
    if not layers:
        raise BadInput(f"{sae_dir} holds no trained SAE (no layer.<i>/sae_weights.safetensors).")
    model_name, variant = source["model"], arm_of(sae_dir, source)
    token_filter = TokenFilter.of(read_train_settings(sae_dir))
    table = out / "results.csv"
    rows = read_eval_rows(table)
    done = {r.layer for r in rows if r.model == model_name and r.variant == variant}
    todo = [layer for layer in layers if layer not in done]
    if not todo:
        log.info("every layer of %s is already in %s", sae_dir, table)
        return rows
    torch_device = resolve_device(device)
    model, _ = load_variant(model_name, source.get("revision"), source["variant"], torch_device)
    saes = {layer: load_language_sae(layers[layer]).to(torch_device).eval() for layer in todo}
    contexts = held_out[:max(1, math.ceil(max_tokens / held_out.shape[1]))]
    check_token_ids(contexts, model, Path(acts or sae_dir) / HELD_OUT_FILE)
    quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k) for layer, sae in saes.items()}
    losses = {layer: {"ce_sae": 0.0, "ce_zero": 0.0, "kl": 0.0} for layer in todo}
    ce_clean = 0.0
    predicted = positions = 0
    bar = tqdm(total=contexts.numel(), unit="tok", unit_scale=True, disable=not progress, desc="eval")
    for batch in contexts.split(batch_size):
        ids = batch.to(torch_device)
        ce_clean += evaluate_batch(model, saes, ids, quality, losses, token_filter)
        predicted += ids[:, 1:].numel()
        positions += ids.numel()
        bar.update(ids.numel())
    bar.close()
    for layer, sae in saes.items():
        ce: dict[str, Any] = {"ce_clean": ce_clean / predicted, "ce_sae": losses[layer]["ce_sae"] / predicted,
              "ce_zero": losses[layer]["ce_zero"] / predicted}
        row = EvalRow(model_name, variant, layer, sae.k, sae.num_latents, quality[layer].tokens,
                      **quality[layer].result(), **ce, ce_loss_score=ce_score(**ce),
                      kl=losses[layer]["kl"] / positions, architecture=architecture_of(sae),
                      pca_components=quality[layer].components)
        row.below_baseline = below_baselines(row)
        if row.below_baseline:
            log.warning("%s %s layer %d is below its simplest baselines (%s): explained variance %.3f against "
                        "PCA-%d's %.3f, CE loss score %.3f", model_name, variant, layer, row.below_baseline,
                        row.explained_variance, row.pca_components, row.pca_explained_variance, row.ce_loss_score)
        rows.append(row)
        write_chunks(out, layer, quality[layer].chunk_sums())
    rows.sort(key=lambda r: r.key)
    if previous is None:
        runs.write_record(out, COMMAND, record)
    write_table(table, rows, EvalRow)
    log.info("wrote %s%s", table, "" if not token_filter.active else f" ({token_filter.describe()})")
    return rows


def read_eval_rows(path: str | Path) -> list[EvalRow]:
    """The rows of an `lm eval` results.csv, checked (one sentence naming the file and row otherwise)."""
    rows = read_table(path, EvalRow)
    for row in rows:  # tables from before the column was written
        if row.below_baseline is None:
            row.below_baseline = below_baselines(row)
    return rows


def ce_score(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """(L_zero − L_SAE) / (L_zero − L_clean): 1 when splicing in the SAE costs nothing, 0 when it is as
    bad as zeroing the activation. NaN when zeroing does not hurt."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if gap != 0 else float("nan")


def write_chunks(out: Path, layer: int, sums: dict[str, torch.Tensor]) -> Path:
    path = out / CHUNKS / f"layer.{layer}.safetensors"
    path.parent.mkdir(exist_ok=True)
    return io.atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in sums.items()}, str(p)))


def read_chunks(eval_dir: str | Path, layer: int) -> dict | None:
    """A layer's per-chunk quality sums (numpy, float64), or None where the evaluation kept none (written
    before they were kept)."""
    path = Path(eval_dir) / CHUNKS / f"layer.{layer}.safetensors"
    if not path.is_file():
        return None
    return {k: v.double().numpy() for k, v in io.load_safetensors(path).items()}
