"""SAEs measured on a model's own forward passes: quality metrics, the CE loss score's three losses, and the
held-out check `lm train` makes on the way out (is the SAE better than PCA with k components?).

Tokens a `TokenFilter` leaves out are left out of every metric, and the splices leave them as they were
(the SAE's reconstruction and the zero vector replace only the kept tokens)."""

import math
from dataclasses import dataclass

import torch

from randsae.lm.activations import residual_stream
from randsae.lm.splice import kl_from_clean, log_probs, logits_and_outputs, next_token_loss, replaced_block_output
from randsae.lm.token_filter import TokenFilter
from randsae.metrics import TokenQuality
from randsae.sae import LanguageSAE

EVERY_TOKEN = TokenFilter()


def spliced(original: torch.Tensor, keep: torch.Tensor | None, replacement: torch.Tensor) -> torch.Tensor:
    """`replacement` at the kept tokens, `original` elsewhere (batch × context × d)."""
    if keep is None:
        return replacement
    return torch.where(keep[..., None], replacement, original)


def measure(sae: LanguageSAE, x: torch.Tensor, quality: TokenQuality) -> torch.Tensor:
    """Encode and decode `x` (tokens × d, float), add the result to `quality`; returns the reconstruction."""
    x = x.to(next(sae.parameters()).device)  # a block of a model split across devices may lie elsewhere
    with torch.no_grad():
        values, indices = sae.encode(x)
        x_hat = sae.decode(values, indices)
    quality.add(x, x_hat, values, indices)
    return x_hat


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
        x = (output[keep] if keep is not None else output.reshape(-1, sae.num_inputs)).float()
        x_hat = measure(sae, x, quality[layer])
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
    """An SAE against PCA with k components on held-out tokens (PCA fitted on those same tokens: a bound no
    rank-k linear code beats there)."""
    layer: int
    tokens: int
    fvu: float
    pca_fvu: float
    components: int

    @property
    def below_pca(self) -> bool:
        return self.fvu > self.pca_fvu


def held_out_checks(model, saes: dict[int, LanguageSAE], contexts: torch.Tensor, token_filter: TokenFilter,
                    device: torch.device, batch_size: int = 4) -> list[HeldOutCheck]:
    """Each SAE against PCA-k on `contexts` (one forward pass per batch that stops after the last layer)."""
    quality = {layer: TokenQuality(sae.num_inputs, sae.num_latents, sae.k) for layer, sae in saes.items()}
    for batch in contexts.split(batch_size):
        for layer, output in residual_stream(model, batch.to(device), list(saes)).items():
            measure(saes[layer], token_filter.apply(output).float(), quality[layer])
    checks = []
    for layer in saes:
        result = quality[layer].result()
        checks.append(HeldOutCheck(layer, quality[layer].tokens, result["fvu"],
                                   1 - result["pca_explained_variance"], quality[layer].components))
    return checks


def below_baselines(row) -> str:
    """What an `lm eval` row fails of the simplest baselines: "EV<PCA-k" when its explained variance is below
    PCA's with k components on the same tokens, "CE<0" when splicing it in is worse than zeroing the block.
    `row`: an `EvalRow` or its CSV cells (anything with `.get(column)`)."""
    def number(column: str) -> float:
        value = row.get(column)
        return float(value) if value not in (None, "") else float("nan")

    flags = []
    if number("explained_variance") < number("pca_explained_variance"):
        components = number("pca_components") if row.get("pca_components") not in (None, "") else number("k")
        flags.append(f"EV<PCA-{int(components)}" if math.isfinite(components) else "EV<PCA")
    if number("ce_loss_score") < 0:
        flags.append("CE<0")
    return " ".join(flags)
