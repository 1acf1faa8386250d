"""`randsae lm eval`: every trained layer's SAE on held-out contexts (PAPER.md §2.2).

Per batch of contexts: one clean forward pass gives the next-token losses and every layer's block output;
each layer's SAE reconstructs its output (quality metrics), then two more passes splice in the
reconstruction and a zero vector. Every pass starts from the same input embeddings, so the control
variant's noise is the same in all three. OUT/results.csv has one row per (model, variant, layer).
"""

import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from randsae import io
from randsae.config import resolve_device
from randsae.experiments.lm_train import read_source, trained_layers
from randsae.lm.activations import open_cache
from randsae.lm.source import check_same_source, load_variant, read_held_out
from randsae.lm.splice import kl_from_clean, log_probs, logits_and_outputs, next_token_loss, replaced_block_output
from randsae.metrics import TokenQuality
from randsae.sae import TopKSAE, load

log = logging.getLogger(__name__)

COLUMNS = ["model", "variant", "layer", "k", "latents", "tokens", "explained_variance", "fvu", "cosine_sim",
           "l1", "l0", "dead_fraction", "ce_clean", "ce_sae", "ce_zero", "ce_loss_score", "kl",
           "pca_explained_variance"]


def read_run(sae_dir: Path, acts: str | Path | None) -> tuple[dict, torch.Tensor]:
    """The source the SAEs were trained on, and the held-out contexts to evaluate on."""
    source = read_source(sae_dir)
    if acts is None:
        return source, read_held_out(sae_dir)
    check_same_source(source, open_cache(acts).manifest, sae_dir, acts)
    return source, read_held_out(acts)


def evaluate(sae_dir: str | Path, out: Path, acts: str | Path | None = None, max_tokens: int = 64_000,
             batch_size: int = 4, device: str = "auto", progress: bool = True) -> list[dict]:
    """Evaluate every layer of `sae_dir` not yet in OUT/results.csv; returns the whole table."""
    sae_dir = Path(sae_dir)
    source, held_out = read_run(sae_dir, acts)
    layers = trained_layers(sae_dir)
    if not layers:
        raise ValueError(f"{sae_dir} holds no trained SAE (no layer.<i>/sae_weights.safetensors).")
    model_name, variant = source["model"], source["variant"]["variant"]
    table = out / "results.csv"
    rows = read_eval_rows(table)
    done = {int(r["layer"]) for r in rows if r["model"] == model_name and r["variant"] == variant}
    todo = [layer for layer in layers if layer not in done]
    if not todo:
        log.info("every layer of %s is already in %s", sae_dir, table)
        return rows
    torch_device = resolve_device(device)
    model, _ = load_variant(model_name, source.get("revision"), source["variant"], torch_device)
    saes: dict[int, TopKSAE] = {}
    for layer in todo:
        sae = load(layers[layer])
        if not isinstance(sae, TopKSAE):
            raise ValueError(f"{layers[layer]} is not a TopK SAE.")
        saes[layer] = sae.to(torch_device).eval()
    contexts = held_out[:max(1, math.ceil(max_tokens / held_out.shape[1]))]
    quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k) for layer, sae in saes.items()}
    losses = {layer: {"ce_sae": 0.0, "ce_zero": 0.0, "kl": 0.0} for layer in todo}
    ce_clean = 0.0
    predicted = positions = 0
    bar = tqdm(total=contexts.numel(), unit="tok", unit_scale=True, disable=not progress, desc="eval")
    for batch in contexts.split(batch_size):
        ids = batch.to(torch_device)
        ce_clean += evaluate_batch(model, saes, ids, quality, losses)
        predicted += ids[:, 1:].numel()
        positions += ids.numel()
        bar.update(ids.numel())
    bar.close()
    for layer, sae in saes.items():
        ce = {"ce_clean": ce_clean / predicted, "ce_sae": losses[layer]["ce_sae"] / predicted,
              "ce_zero": losses[layer]["ce_zero"] / predicted}
        rows.append({"model": model_name, "variant": variant, "layer": layer, "k": sae.k,
                     "latents": sae.num_latents, "tokens": positions, **quality[layer].result(), **ce,
                     "ce_loss_score": ce_score(**ce), "kl": losses[layer]["kl"] / positions})
    rows.sort(key=lambda r: (r["model"], r["variant"], int(r["layer"])))
    io.write_rows(table, COLUMNS, rows)
    log.info("wrote %s", table)
    return rows


def evaluate_batch(model, saes: dict[int, TopKSAE], ids: torch.Tensor, quality: dict[int, TokenQuality],
                   losses: dict[int, dict[str, float]]) -> float:
    """One batch of contexts: each SAE's reconstruction quality added to `quality`, its spliced and zeroed
    next-token losses and KL added to `losses`; returns the clean next-token loss summed over the batch."""
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    clean, outputs = logits_and_outputs(model, embeds, list(saes))
    for layer, sae in saes.items():
        x = outputs[layer].reshape(-1, sae.num_inputs).float()
        with torch.no_grad():
            values, indices = sae.encode(x)
            x_hat = sae.decode(values, indices)
        quality[layer].add(x, x_hat, values, indices)
        reconstruction = x_hat.view_as(outputs[layer]).to(outputs[layer].dtype)
        with replaced_block_output(model, layer, lambda h, r=reconstruction: r):
            spliced = log_probs(model, embeds)
        with replaced_block_output(model, layer, torch.zeros_like):
            zeroed = log_probs(model, embeds)
        losses[layer]["ce_sae"] += next_token_loss(spliced, ids).sum().item()
        losses[layer]["kl"] += kl_from_clean(clean, spliced).sum().item()
        losses[layer]["ce_zero"] += next_token_loss(zeroed, ids).sum().item()
    return next_token_loss(clean, ids).sum().item()


def read_eval_rows(path: str | Path) -> list[dict]:
    """The rows of an `lm eval` results.csv, checked (one sentence naming the file and row otherwise)."""
    rows = io.read_rows(path)
    io.check_columns(path, rows, COLUMNS[:3], numeric=COLUMNS[2:])
    return rows


def ce_score(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """(L_zero − L_SAE) / (L_zero − L_clean): 1 when splicing in the SAE costs nothing, 0 when it is as
    bad as zeroing the activation. NaN when zeroing does not hurt."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if gap != 0 else float("nan")
