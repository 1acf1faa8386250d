"""The report's latent browser: every sampled latent of every unit and layer as a card — its explanation,
scores, entropy, top tokens and strongest explainer windows shaded by activation — the variants side by side."""

import html
import math
from dataclasses import dataclass
from pathlib import Path

WINDOWS_SHOWN = 6  # explainer windows per latent card


@dataclass
class LatentCard:
    variant: str
    layer: int
    latent: int
    entropy: float | None
    explanation: str | None
    scores: dict[str, float]
    top_tokens: list[str]
    windows: list[tuple[list[str], list[float]]]  # (token texts, activations)


def fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.{digits}f}" if math.isfinite(number) else "–"


def read_cards(out: Path, model: str, revision: str | None, variants: list[str]) -> list[LatentCard]:
    """A card per sampled latent of each variant's latent records (with its scores where autointerp ran)."""
    from randsae.autointerp.prompts import TokenTexts
    from randsae.autointerp.records import read_latents
    from randsae.lm.latents import open_latents
    from randsae.lm.models import load_tokenizer

    decode = None  # the tokenizer, loaded where a variant has latent records to show
    cards = []
    for variant in variants:
        scored = {}
        autointerp = out / variant / "autointerp"
        if (autointerp / "latents").is_dir():
            scored = {(r.layer, r.latent): r for r in read_latents(autointerp)}
        latents = out / variant / "latents"
        if not (latents / "config.json").is_file():
            continue
        records = open_latents(latents)
        decode = decode or TokenTexts(load_tokenizer(model, revision))
        for layer in records.layers:
            for summary in sorted(records.sampled(layer), key=lambda s: s.latent):
                result = scored.get((layer, summary.latent))
                sets = records.examples(layer, summary.latent)
                windows = [(decode(w.tokens), w.activations) for w in sets.explainer[:WINDOWS_SHOWN]]
                scores = {r.scorer: r.auroc for r in result.results} if result else {}
                cards.append(LatentCard(variant, layer, summary.latent, summary.entropy_explainer,
                                        result.explanation if result else None, scores,
                                        result.top_tokens if result else [], windows))
    return cards


def shaded(tokens: list[str], activations: list[float]) -> str:
    top = max(activations, default=0.0) or 1.0
    spans = []
    for text, a in zip(tokens, activations, strict=True):
        alpha = max(0.0, min(1.0, a / top))
        style = f' style="background:rgba(255,120,0,{alpha:.2f})"' if alpha > 0 else ""
        shown = html.escape(text).replace("\n", "↵\n")  # a shaded newline stays visible
        spans.append(f'<span class="tok"{style} title="{a:.3g}">{shown}</span>')
    return "".join(spans)


def card_html(card: LatentCard) -> str:
    e = html.escape
    scores = ", ".join(f"{k} {fmt(v, 2)}" for k, v in card.scores.items()) or "not scored"
    windows = "".join(f'<div class="window">{shaded(t, a)}</div>' for t, a in card.windows)
    return (f'<details class="latent-card" data-variant="{e(card.variant)}" data-layer="{card.layer}" '
            f'data-latent="{card.latent}"><summary>latent {card.latent} · entropy {fmt(card.entropy, 2)} · '
            f'{e(scores)}</summary><div class="explanation">{e(card.explanation or "(no explanation)")}</div>'
            f'<div class="meta">top tokens: {e(" · ".join(repr(t) for t in card.top_tokens[:10])) or "–"}</div>'
            f'{windows}</details>')


def browser_html(cards: list[LatentCard], order: list[str]) -> str:
    """The browser's section: per layer, a column per variant (in `order`) of its cards."""
    e = html.escape
    variants = [v for v in order if any(c.variant == v for c in cards)]
    browser = ["<section id='latents'><h2>Latent browser</h2><p>Each sampled latent: its explanation, AUROC "
               "per scorer, token-distribution entropy, top tokens, and its strongest explainer windows with each "
               "token shaded by its activation (hover for the value). Variants side by side.</p>"]
    for layer in sorted({c.layer for c in cards}):
        browser.append(f"<h3>Layer {layer}</h3><div class='side' style='--n:{len(variants)}'>")
        for variant in variants:
            column = [c for c in cards if c.variant == variant and c.layer == layer]
            browser.append(f"<div class='variant-column'><h4>{e(variant)}</h4>" + "".join(map(card_html, column))
                           + "</div>")
        browser.append("</div>")
    return "".join(browser) + "</section>"
