"""`randsae lm latents`: every layer's SAE over a token set, every latent's examples and token-distribution
entropy (docs/paper.md §2.3, §2.4). Composes the latent cache (`lm.latent_cache`), the example sets
(`lm.examples`) and the records (`lm.latents`); see `randsae.lm.latents` for what OUT holds.

A rerun into the same directory resumes: finished latent shards are kept, a layer's index is built once,
and layers whose records are written are skipped. Other settings are refused.
"""

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from randsae import io, runs
from randsae.config import resolve_device
from randsae.errors import BadInput
from randsae.lm.activations import SHARD_BYTES, open_cache, parse_layers
from randsae.lm.examples import ExampleSettings, write_examples
from randsae.lm.latent_cache import Chunk, cache_chunks, encode_cache, model_chunks, open_latent_cache
from randsae.lm.latents import COLUMNS, examples_path, layer_records, read_summaries, summary_row
from randsae.lm.models import load_tokenizer
from randsae.lm.sae_run import arm_of, foreign_layers, read_source, trained_layers
from randsae.lm.source import Source, check_same_source, later_contexts
from randsae.lm.variants import restart_draws
from randsae.sae import load_language_sae
from randsae.sae.names import resolve

log = logging.getLogger(__name__)


def check_cache_tokens(cache, vocabulary: int, where) -> None:
    """Every token id of an activation cache is one of the tokenizer's `vocabulary` ids: one sentence otherwise."""
    for index in range(len(cache.manifest["shards"])):
        ids = cache.read_shard(index, "tokens")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocabulary):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise BadInput(f"the cache {where} holds token id {bad}, outside the tokenizer's {vocabulary:,} ids; "
                           "it is corrupt or was made with another model.")


def build_latents(sae_dir: str | Path, out: Path, acts: str | Path | None = None, layers: str = "all",
                  max_tokens: int | None = None, settings: ExampleSettings | None = None, batch_size: int = 4096,
                  device: str = "auto", progress: bool = True, model: tuple[str, str] | None = None,
                  group_layers: int | None = None) -> list:
    """Latent records of the SAEs in `sae_dir` over a token set: an activation cache of the same model and
    variant (`acts`; default: the cache they were trained on, as recorded), or, with `model` = (model,
    variant) as the run recorded them, the model itself on `max_tokens` (default 1M) tokens of the run's
    text drawn after every context the run used. `group_layers`: hold at most this many layers' SAEs at once,
    one pass over the token set per group (the same records as one group). Returns every summary row in OUT."""
    sae_dir, settings = resolve(str(sae_dir)), settings or ExampleSettings()
    settings.validate()
    if group_layers is not None and group_layers < 1:
        raise BadInput(f"--group-layers must be a positive integer, not {group_layers}.")
    if (sae_dir / "config.json").is_file() and "source" in io.read_json(sae_dir / "config.json"):
        source, trained = read_source(sae_dir), trained_layers(sae_dir)
    else:  # SAEs from elsewhere (SAELens, sparsify): the activation cache says what they read
        trained = foreign_layers(sae_dir, layers)
        if acts is None or model is not None:
            raise BadInput(f"the SAEs in {sae_dir} carry no record of the activations they were trained on; "
                             "give --acts, an activation cache of the model and blocks they read.")
        source = {k: v for k, v in open_cache(acts).manifest.items() if k != "shards"}
        source["acts"] = None
    if not trained:
        raise BadInput(f"{sae_dir} holds no trained SAE (no layer.<i>/sae_weights.safetensors).")
    chosen = list(trained) if layers == "all" else parse_layers(layers, max(trained) + 1)
    for layer in chosen:
        if layer not in trained:
            raise BadInput(f"{sae_dir} holds no SAE of layer {layer} (it holds {list(trained)}).")
    if model is not None:
        if acts is not None:
            raise BadInput("give --acts (an activation cache) or --model (on the fly), not both.")
        recorded = (source["model"], source["variant"]["variant"])
        if tuple(model) != recorded:
            raise BadInput(f"the SAEs in {sae_dir} were trained on {recorded[0]} ({recorded[1]}), not "
                             f"{model[0]} ({model[1]}).")
        cache, origin = None, {"on_the_fly": True, "tokens_asked": max_tokens or 1_000_000}
    else:
        acts = acts or source.get("acts")
        if acts is None:
            raise BadInput(f"the SAEs in {sae_dir} were trained on the fly; give --acts (an activation cache "
                             "of the same model and variant) or --model and --variant to run the model.")
        cache = open_cache(acts)
        check_same_source(source, cache.manifest, sae_dir, acts)
        for layer in chosen:
            if layer not in cache.layers:
                raise BadInput(f"the cache {acts} does not hold layer {layer} (it holds {cache.layers}).")
        origin = {"acts": str(Path(acts).resolve()), "max_tokens": max_tokens}
    length = cache.context_length if cache is not None else source.get("context_length")
    if isinstance(length, int) and settings.window > length:
        raise BadInput(f"--window {settings.window} is longer than the {length}-token contexts the latents are "
                       f"read from; give at most {length}.")
    record = {"sae": str(sae_dir.resolve()), **origin, "examples": asdict(settings),
              "source": {key: value for key, value in (cache.manifest if cache else source).items()
                         if key != "shards"}}
    path = out / "config.json"
    previous = runs.previous_record(out, "lm latents")
    if previous is not None and runs.settings_of(previous) != io.json_round_trip(record):
        raise BadInput(f"{out} holds latents made with other settings (see {path}); choose another --out.")

    tokenizer = load_tokenizer(source["model"], source.get("revision"))
    if cache is not None:
        check_cache_tokens(cache, len(tokenizer), acts)
    torch_device = resolve_device(device)
    if cache is not None:
        context_length = cache.context_length
        total = min(max_tokens or cache.num_tokens, cache.num_tokens) // context_length * context_length

        def chunks_of(group: list[int]) -> Iterable[Chunk]:
            return cache_chunks(cache, group, max_tokens)
    else:
        fields = {k: v for k, v in source.items() if k in Source.__dataclass_fields__}
        wanted = Source(**{**fields, "variant": source["variant"]["variant"], "tokens": origin["tokens_asked"]})
        lm, _, drawn = later_contexts(wanted, source, torch_device)
        context_length, total = wanted.context_length, drawn.numel()

        def chunks_of(group: list[int]) -> Iterable[Chunk]:
            restart_draws(lm)  # every group sees the control's noise a single pass would
            width = lm.config.hidden_size * context_length * 4 * len(group)
            return model_chunks(lm, drawn, group, chunk_contexts=max(8, SHARD_BYTES // width), batch_size=8)

    def decode(ids: list[int]) -> list[str]:
        return [tokenizer.decode([i]) for i in ids]

    identity = {"model": source["model"], "variant": arm_of(sae_dir, source)}
    table = out / "latents.csv"
    rows = read_summaries(table) if table.exists() else []
    size = group_layers or len(chosen)
    for first in range(0, len(chosen), size):
        group = chosen[first:first + size]
        todo = [layer for layer in group
                if not (any(r.layer == layer for r in rows) and examples_path(out, layer).is_file())]
        if not todo:
            continue
        if len(chosen) > size:
            log.info("layers %s: group %d of %d", group, first // size + 1, math.ceil(len(chosen) / size))
        saes = {layer: load_language_sae(trained[layer]).to(torch_device).eval() for layer in group}
        directory = out / ("cache" if len(group) == len(chosen) else "cache." + "-".join(map(str, group)))
        recorded = {k: v for k, v in record.items() if k not in ("examples",)}
        encode_cache(chunks_of(group), saes, directory, recorded, context_length, total, batch_size=batch_size,
                     device=torch_device, progress=progress)
        latent_cache = open_latent_cache(directory)
        tokens = latent_cache.tokens().numpy().ravel()
        for layer in todo:
            with tqdm(total=saes[layer].num_latents, unit="latent", disable=not progress,
                      desc=f"layer {layer} records") as bar:
                decoder = saes[layer].W_dec.detach().float().cpu().numpy()
                summaries, sets = layer_records(latent_cache, layer, tokens, settings, identity, decode,
                                                bar.update, decoder)
            if not path.exists():
                runs.write_record(out, "lm latents", record)
            write_examples(examples_path(out, layer), sets)
            rows = [r for r in rows if r.layer != layer] + summaries
            io.write_rows(table, COLUMNS, [summary_row(r) for r in rows])
            eligible = sum(s.eligible for s in summaries)
            sampled = [s.entropy_explainer for s in summaries if s.sampled]
            log.info("layer %d: %d of %d latents fire, %d eligible, %d sampled, mean explainer-set entropy %.2f "
                     "nats", layer, len(summaries), saes[layer].num_latents, eligible, len(sampled),
                     sum(sampled) / max(1, len(sampled)))
    if record.get("acts") is not None and record["acts"] == source.get("acts"):
        log.info("the examples came from the cache the SAEs were trained on (%s); give --acts with a "
                 "separate cache for held-out examples, as the paper does", acts)
    return rows
