"""SAEs measured on a model's own forward passes: quality metrics, the CE loss score's three losses, the
baselines fitted where the SAE was fitted (a sample of its training tokens: the cache, or the contexts an
on-the-fly run trained on), and the held-out check `lm train` makes on the way out (is the SAE better than PCA
with k components fitted on its training tokens?).

Tokens a `TokenFilter` leaves out are left out of every metric, and the splices leave them as they were
(the SAE's reconstruction and the zero vector replace only the kept tokens)."""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from randsae.lm.activations import ActivationCache, open_cache, residual_stream
from randsae.lm.source import TRAIN_SAMPLE_FILE, check_token_ids, read_train_sample
from randsae.lm.splice import kl_from_clean, log_probs, logits_and_outputs, next_token_loss, replaced_block_output
from randsae.lm.token_filter import TokenFilter
from randsae.metrics import FittedBaselines, TokenQuality, TrainingFit
from randsae.sae import LanguageSAE

EVERY_TOKEN = TokenFilter()


def spliced(original: torch.Tensor, keep: torch.Tensor | None, replacement: torch.Tensor) -> torch.Tensor:
    """`replacement` at the kept tokens, `original` elsewhere (batch × context × d)."""
    if keep is None:
        return replacement
    return torch.where(keep[..., None], replacement, original)


def measure(sae: LanguageSAE, x: torch.Tensor, quality: TokenQuality, token_ids: torch.Tensor | None = None,
            contexts: torch.Tensor | None = None) -> torch.Tensor:
    """Encode and decode `x` (tokens × d, float), add the result to `quality` (with each token's id and
    context number, where known); returns the reconstruction."""
    x = x.to(next(sae.parameters()).device)  # a block of a model split across devices may lie elsewhere
    with torch.no_grad():
        values, indices = sae.encode(x)
        x_hat = sae.decode(values, indices)
    quality.add(x, x_hat, values, indices, token_ids, contexts)
    return x_hat


def kept_tokens(hidden: torch.Tensor, ids: torch.Tensor, token_filter: TokenFilter,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the kept tokens' activations as float rows, their ids, their context's number in the batch) of `hidden`
    (contexts × length × d) and `ids` (contexts × length); `keep`: the filter's mask, where the caller has it."""
    contexts = torch.arange(len(ids), device=ids.device)[:, None].expand_as(ids)
    if not token_filter.active:
        return hidden.reshape(-1, hidden.shape[-1]).float(), ids.reshape(-1), contexts.reshape(-1)
    keep = token_filter.mask(hidden) if keep is None else keep
    return hidden[keep].float(), ids[keep.to(ids.device)], contexts[keep.to(ids.device)]


# A sample of training tokens: batches of (token ids: contexts × length, {layer: its block output: contexts ×
# length × d})
Sample = Iterator[tuple[torch.Tensor, dict[int, torch.Tensor]]]


def cache_sample(cache: ActivationCache, layers: list[int], tokens: int) -> Sample:
    """The first contexts of an activation cache holding at least `tokens` tokens (fewer where it holds fewer),
    shard by shard: what SAEs trained on the cache were fitted on."""
    length, seen = cache.context_length, 0
    for index in range(len(cache.manifest["shards"])):
        if seen >= tokens:
            return
        ids = cache.read_shard(index, "tokens")
        take = min(len(ids), math.ceil((tokens - seen) / length))
        hidden = {layer: cache.read_shard(index, f"layer.{layer}")[:take * length].view(take, length, -1)
                  for layer in layers}
        seen += take * length
        yield ids[:take], hidden


def model_sample(model, contexts: torch.Tensor, layers: list[int], device: torch.device, tokens: int,
                 batch_size: int = 4) -> Sample:
    """The model's block outputs on the first of `contexts` holding at least `tokens` tokens: what SAEs trained
    on the fly from those contexts were fitted on."""
    contexts = contexts[:max(1, math.ceil(tokens / contexts.shape[1]))]
    for batch in contexts.split(batch_size):
        yield batch, residual_stream(model, batch.to(device), layers)


def fit_baselines(saes: dict[int, LanguageSAE], sample: Sample,
                  token_filter: TokenFilter) -> tuple[dict[int, TokenQuality], dict[int, FittedBaselines]]:
    """Each SAE measured on a sample of its training tokens, and its baselines fitted there with k = the SAE's
    k, or its L0 on that sample, rounded: ({layer: the SAE's quality on the sample}, {layer: the baselines})."""
    fits = {layer: TrainingFit(sae.num_inputs) for layer, sae in saes.items()}
    quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k) for layer, sae in saes.items()}
    for ids, hidden in sample:
        for layer, output in hidden.items():
            x, token_ids, contexts = kept_tokens(output, ids.to(output.device), token_filter)
            if not len(x):
                continue
            fits[layer].add(x, token_ids)
            measure(saes[layer], x, quality[layer], token_ids, contexts)
    fitted = {layer: fit.fitted(quality[layer].components) for layer, fit in fits.items() if fit.tokens}
    return {layer: q for layer, q in quality.items() if q.tokens}, fitted


def evaluate_batch(model, saes: dict[int, LanguageSAE], ids: torch.Tensor,
                   quality: dict[int, TokenQuality],
                   losses: dict[int, dict[str, float]] | None, token_filter: TokenFilter = EVERY_TOKEN) -> float:
    """One batch of contexts: each SAE's reconstruction quality added to `quality` and, unless `losses` is
    None, its spliced and zeroed next-token losses and KL added to `losses`; returns the clean next-token
    loss summed over the batch."""
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    clean, outputs = logits_and_outputs(model, embeds, list(saes))
    for layer, sae in saes.items():
        output = outputs[layer]
        keep = token_filter.mask(output) if token_filter.active else None
        x, token_ids, contexts = kept_tokens(output, ids.to(output.device), token_filter, keep)
        x_hat = measure(sae, x, quality[layer], token_ids, contexts)
        if losses is None:
            continue
        if keep is None:
            reconstruction = x_hat.view_as(output).to(output.device, output.dtype)
        else:
            reconstruction = output.clone()
            reconstruction[keep] = x_hat.to(output.device, output.dtype)
        with replaced_block_output(model, layer, lambda h, r=reconstruction: r):
            with_sae = log_probs(model, embeds)
        with replaced_block_output(model, layer, lambda h, k=keep: spliced(h, k, torch.zeros_like(h))):
            zeroed = log_probs(model, embeds)
        losses[layer]["ce_sae"] += next_token_loss(with_sae, ids).sum().item()
        losses[layer]["kl"] += kl_from_clean(clean, with_sae).sum().item()
        losses[layer]["ce_zero"] += next_token_loss(zeroed, ids).sum().item()
    return next_token_loss(clean, ids).sum().item()


@dataclass
class HeldOutCheck:
    """An SAE against PCA with k components on held-out tokens: PCA fitted on a sample of the SAE's training
    tokens (the baseline), and fitted on the held-out tokens themselves (a bound no code fitted elsewhere meets
    there), with the SAE's FVU on that training sample."""
    layer: int
    tokens: int
    fvu: float
    pca_fvu: float
    bound_fvu: float
    train_fvu: float | None
    components: int

    @property
    def below_pca(self) -> bool:
        return self.fvu > self.pca_fvu


def held_out_checks(model, saes: dict[int, LanguageSAE], contexts: torch.Tensor, token_filter: TokenFilter,
                    device: torch.device, sample: Sample, batch_size: int = 4) -> list[HeldOutCheck]:
    """Each SAE against PCA-k fitted on `sample` (its training tokens), on held-out `contexts` (one forward pass
    per batch that stops after the last layer)."""
    trained_on, fitted = fit_baselines(saes, sample, token_filter)
    if set(fitted) != set(saes):
        raise ValueError("the training sample holds no token of some layer to fit its baselines on.")
    quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k, fitted[layer])
               for layer, sae in saes.items()}
    for batch in contexts.split(batch_size):
        ids = batch.to(device)
        for layer, output in residual_stream(model, ids, list(saes)).items():
            x, token_ids, numbers = kept_tokens(output, ids.to(output.device), token_filter)
            measure(saes[layer], x, quality[layer], token_ids, numbers)
    checks = []
    for layer in saes:
        result = quality[layer].result()
        train = trained_on[layer].result()["fvu"] if layer in trained_on else None
        bound = 1 - result["pca_in_sample_explained_variance"]
        fitted_pca = 1 - result["pca_explained_variance"]
        checks.append(HeldOutCheck(layer, quality[layer].tokens, result["fvu"], fitted_pca, bound, train,
                                   quality[layer].components))
    return checks


def below_baselines(row) -> str:
    """What an `lm eval` row fails of the simplest baselines, with both numbers: "EV 0.28 < PCA-32's 0.37" when
    its explained variance is below that of PCA with k components fitted on the same training tokens (scored on
    the same held-out tokens), "CE loss score -0.1 < 0" when splicing it in is worse than zeroing the block.
    `row`: an `EvalRow` or its CSV cells (anything with `.get(column)`)."""
    def number(column: str) -> float:
        value = row.get(column)
        return float(value) if value not in (None, "") else float("nan")

    flags = []
    explained, pca = number("explained_variance"), number("pca_explained_variance")
    if explained < pca:
        components = number("pca_components") if row.get("pca_components") not in (None, "") else number("k")
        name = f"PCA-{int(components)}" if math.isfinite(components) else "PCA"
        flags.append(f"EV {explained:.3f} < {name}'s {pca:.3f}")
    if number("ce_loss_score") < 0:
        flags.append(f"CE loss score {number('ce_loss_score'):.3f} < 0")
    return "; ".join(flags)


def training_sample(sae_dir: Path, source: dict, acts: str | Path | None, model, layers: list[int],
                    tokens: int, device: torch.device) -> tuple[Sample | None, str]:
    """(a sample of what the SAEs were fitted on, what it is): the first `tokens` tokens of the cache they
    trained on (or `acts`, checked to be of the same source), or the first contexts an on-the-fly run trained
    on through the model; None where neither is at hand."""
    cache_dir = acts or source.get("acts")
    if cache_dir and (Path(cache_dir) / "manifest.json").is_file():
        cache = open_cache(cache_dir)
        if set(layers) <= set(cache.layers):
            return cache_sample(cache, layers, tokens), f"the first of the cache {cache_dir}"
    contexts = read_train_sample(sae_dir)
    if contexts is None:
        return None, "no sample of the training tokens"
    check_token_ids(contexts, model, sae_dir / TRAIN_SAMPLE_FILE)
    return (model_sample(model, contexts, layers, device, tokens),
            f"the first training contexts of {sae_dir}, through the model")
