"""`randsae lm eval`: every trained layer's SAE on held-out contexts (docs/paper.md §2.2), beside its baselines
fitted on a sample of its training tokens (docs/choices.md "Baselines fitted where the SAE was fitted").

First the training sample (the cache the SAEs trained on, or the first contexts an on-the-fly run trained on,
through the model): each SAE's explained variance there, and PCA-k and the token lookup fitted there. Then per
batch of held-out contexts: one clean forward pass gives the next-token losses and every layer's block output;
each layer's SAE reconstructs its output (quality metrics), then two more passes splice in the
reconstruction and a zero vector. Every pass starts from the same input embeddings, so the control
variant's noise is the same in all three. OUT/results.csv has one row per (model, variant, layer).
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from randsae import io, runs
from randsae.config import EVAL_TOKENS, FIT_TOKENS, resolve_device
from randsae.errors import BadInput
from randsae.lm.activations import open_cache
from randsae.lm.quality import below_baselines, evaluate_batch, fit_baselines, training_sample
from randsae.lm.sae_run import arm_of, read_source, read_train_settings, trained_layers
from randsae.lm.source import (
    HELD_OUT_FILE,
    check_same_source,
    check_token_ids,
    load_variant,
    read_held_out,
)
from randsae.lm.token_filter import TokenFilter
from randsae.lm.variants import restart_draws
from randsae.metrics import TokenQuality
from randsae.sae import LanguageSAE, architecture_of, load_language_sae
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


def evaluate(sae_dir: str | Path, out: Path, acts: str | Path | None = None, max_tokens: int = EVAL_TOKENS,
             batch_size: int = 4, device: str = "auto", progress: bool = True,
             fit_tokens: int = FIT_TOKENS, group_layers: int | None = None) -> list[EvalRow]:
    """Evaluate every layer of `sae_dir` not yet in OUT/results.csv, with its baselines fitted on `fit_tokens`
    of its training tokens; returns the whole table. `group_layers`: hold at most this many layers' SAEs at
    once, one pass over the held-out text per group, each group's rows written when it is done (the same
    numbers as one group). OUT holds one SAE run's evaluation: another run, or other tokens, into the same OUT is
    refused in one sentence."""
    sae_dir = Path(sae_dir)
    source, held_out = read_run(sae_dir, acts)
    record = {"sae": str(sae_dir.resolve()), "acts": str(Path(acts).resolve()) if acts else None,
              "max_tokens": max_tokens, "fit_tokens": fit_tokens}
    runs.same_settings(out, COMMAND, record, "an evaluation")
    if group_layers is not None and group_layers < 1:
        raise BadInput(f"--group-layers must be a positive integer, not {group_layers}.")
    layers = trained_layers(sae_dir)
    if not layers:
        raise BadInput(f"{sae_dir} holds no trained SAE (no layer.<i>/sae_weights.safetensors).")
    model_name, variant = source["model"], arm_of(sae_dir, source)
    table = out / "results.csv"
    rows = read_eval_rows(table)
    done = {r.layer for r in rows if r.model == model_name and r.variant == variant}
    todo = [layer for layer in layers if layer not in done]
    if not todo:
        log.info("every layer of %s is already in %s", sae_dir, table)
        return rows
    torch_device = resolve_device(device)
    model, _ = load_variant(model_name, source.get("revision"), source["variant"], torch_device)
    contexts = held_out[:max(1, math.ceil(max_tokens / held_out.shape[1]))]
    check_token_ids(contexts, model, Path(acts or sae_dir) / HELD_OUT_FILE)
    run = EvalRun(sae_dir, source, acts, model, contexts, TokenFilter.of(read_train_settings(sae_dir)), fit_tokens,
                  batch_size, torch_device, progress)
    size = group_layers or len(todo)
    for first in range(0, len(todo), size):
        group = todo[first:first + size]
        if len(todo) > size:
            log.info("layers %s: group %d of %d", group, first // size + 1, math.ceil(len(todo) / size))
        rows = sorted(rows + run.group({layer: layers[layer] for layer in group}, out), key=lambda r: r.key)
        if runs.previous_record(out, COMMAND) is None:
            runs.write_record(out, COMMAND, record)
        write_table(table, rows, EvalRow)
        log.info("wrote %s%s", table, "" if not run.token_filter.active else f" ({run.token_filter.describe()})")
    return rows


@dataclass
class EvalRun:
    """What every group of layers of one evaluation shares: the SAEs' run, the model, the held-out contexts."""
    sae_dir: Path
    source: dict
    acts: str | Path | None
    model: Any
    contexts: torch.Tensor
    token_filter: TokenFilter
    fit_tokens: int
    batch_size: int
    device: torch.device
    progress: bool

    def group(self, paths: dict[int, Path], out: Path) -> list[EvalRow]:
        """The rows of a group of layers (their SAEs' directories): its baselines fitted, one pass over the
        held-out contexts, each layer's per-chunk sums written."""
        saes = {layer: load_language_sae(path).to(self.device).eval() for layer, path in paths.items()}
        restart_draws(self.model)  # every group sees the control's noise a single pass would
        trained_on, fitted = self.baselines(saes)
        quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k, fitted.get(layer))
                   for layer, sae in saes.items()}
        losses = {layer: {"ce_sae": 0.0, "ce_zero": 0.0, "kl": 0.0} for layer in saes}
        ce_clean = 0.0
        predicted = positions = 0
        bar = tqdm(total=self.contexts.numel(), unit="tok", unit_scale=True, disable=not self.progress,
                   desc="eval")
        for batch in self.contexts.split(self.batch_size):
            ids = batch.to(self.device)
            ce_clean += evaluate_batch(self.model, saes, ids, quality, losses, self.token_filter)
            predicted += ids[:, 1:].numel()
            positions += ids.numel()
            bar.update(ids.numel())
        bar.close()
        rows = []
        for layer, sae in saes.items():
            ce: dict[str, Any] = {"ce_clean": ce_clean / predicted, "ce_sae": losses[layer]["ce_sae"] / predicted,
                                  "ce_zero": losses[layer]["ce_zero"] / predicted}
            train = trained_on[layer].result()["explained_variance"] if layer in trained_on else None
            row = EvalRow(self.source["model"], arm_of(self.sae_dir, self.source), layer, sae.k, sae.num_latents,
                          quality[layer].tokens, **quality[layer].result(), **ce, ce_loss_score=ce_score(**ce),
                          kl=losses[layer]["kl"] / positions, architecture=architecture_of(sae),
                          pca_components=quality[layer].components, train_explained_variance=train)
            row.below_baseline = below_baselines(row)
            warn_of(row)
            rows.append(row)
            write_chunks(out, layer, quality[layer].chunk_sums())
        return rows

    def baselines(self, saes: dict[int, LanguageSAE]) -> tuple[dict[int, TokenQuality], dict]:
        """Each SAE on its training sample, and its baselines fitted there ({} and {} where none is kept)."""
        sample, what = training_sample(self.sae_dir, self.source, self.acts, self.model, list(saes),
                                       self.fit_tokens, self.device)
        if sample is None:
            log.warning("%s keeps no sample of its training tokens (an older run): the baselines fitted where the "
                        "SAEs were fitted are left empty, and no SAE is held to PCA-k", self.sae_dir)
            return {}, {}
        trained_on, fitted = fit_baselines(saes, sample, self.token_filter)
        if fitted:
            log.info("baselines fitted on %s training tokens (%s)", f"{max(f.tokens for f in fitted.values()):,}",
                     what)
        return trained_on, fitted


def warn_of(row: EvalRow) -> None:
    """A warning for an SAE below its simplest baselines, and for one far better on its training tokens."""
    if row.below_baseline:
        log.warning("%s %s layer %d is below its simplest baselines: %s", row.model, row.variant, row.layer,
                    row.below_baseline)
    if generalises_poorly(row):
        log.warning("%s %s layer %d explains %.3f of the variance of its training tokens and %.3f of the held-out "
                    "tokens (%.1f%% of whose ids its training sample never held): it fits what it saw far better "
                    "than new text", row.model, row.variant, row.layer, row.train_explained_variance,
                    row.explained_variance, 100 * (row.unseen_token_share or 0))


GENERALISATION_GAP = 0.1  # explained variance on the training sample above the held-out one by more: said


def generalises_poorly(row: EvalRow) -> bool:
    """Whether an SAE explains its training tokens far better (by GENERALISATION_GAP) than the held-out ones."""
    train, held_out = row.train_explained_variance, row.explained_variance
    return train is not None and held_out is not None and train - held_out > GENERALISATION_GAP


def read_eval_rows(path: str | Path) -> list[EvalRow]:
    """The rows of an `lm eval` results.csv, checked (one sentence naming the file and row otherwise). A table
    from before the baselines were fitted on training tokens held PCA fitted on the evaluated tokens as
    `pca_explained_variance`: it is read as the bound it was, and its gate is worked out anew."""
    rows = read_table(path, EvalRow)
    for row in rows:
        if row.fit_tokens is None and row.pca_in_sample_explained_variance is None:
            row.pca_in_sample_explained_variance, row.pca_explained_variance = row.pca_explained_variance, None
            row.below_baseline = None
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
