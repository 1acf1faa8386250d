"""TopK SAEs on the residual stream, one per layer (docs/paper.md §2.2): from an activation cache, a layer at a
time, or on the fly from a model, one forward pass feeding every layer's SAE.

OUT/config.json    training settings and the activations' source (the cache's manifest or the model's)
OUT/layer.<i>/     cfg.json + sae_weights.safetensors (SAELens layout), read back by randsae.sae.load
OUT/held_out.safetensors   the held-out contexts, for `randsae lm eval`
OUT/curve.csv      each layer's learning curve (`CurveRow`; OUT/layer.<i>/curve.csv, written with the layer)
A rerun into the same directory skips the layers already saved; other settings are refused.
"""

import logging
import math
from collections.abc import Set
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from randsae import runs
from randsae.config import resolve_device
from randsae.distributed import World, joined_world
from randsae.errors import BadInput
from randsae.io import check_fields, json_round_trip
from randsae.lm.activations import check_activations, open_cache, parse_layers, residual_stream
from randsae.lm.quality import Sample, cache_sample, held_out_checks, kept_tokens, model_sample
from randsae.lm.sae_run import layer_directory, trained_layers
from randsae.lm.source import (
    HELD_OUT_FILE,
    RECORDED_BEFORE,
    TRAIN_SAMPLE_FILE,
    Source,
    check_token_ids,
    load_variant,
    open_source,
    read_held_out,
    record,
    write_held_out,
    write_train_sample,
)
from randsae.lm.token_filter import TokenFilter
from randsae.lm.variants import batch_share, draw_unseen
from randsae.resources import FLOAT_BYTES, check_memory
from randsae.sae.topk import UnitDecoder
from randsae.seeding import derive_seed
from randsae.tables import CurveRow, read_table, write_table
from randsae.training.curves import doubling_steps, reconstruction
from randsae.training.trainer import Schedule, TopKTrainConfig, TopKTrainer, plan_schedule

FAR_WORSE = 10.0  # a held-out FVU above this, with a training FVU below 1: a cache unlike the model's activations
# held-out contexts the SAE is checked on against PCA-k when it is saved
COMMAND = "lm train"
CHECK_CONTEXTS = 16

log = logging.getLogger(__name__)


def prepare_output(out: Path, config: TopKTrainConfig, source: dict, layers: list[int]) -> list[int]:
    """Check OUT/config.json against this run's settings (refusing others); return the layers not trained yet.
    Nothing is written until a layer is saved (`write_record`)."""
    settings = json_round_trip({"train": asdict(config), "source": source})
    previous = runs.previous_record(out, COMMAND)
    if previous is not None:
        check_fields(previous, {"train": dict, "source": dict}, out / "config.json")
        # a setting an older run did not record had its default then (the dictionary: trained)
        previous = {**previous, "train": {**json_round_trip(asdict(TopKTrainConfig())), **previous["train"]},
                    "source": {**RECORDED_BEFORE, **previous["source"]}}
        for part in ("train", "source"):
            if previous.get(part) != settings[part]:
                raise BadInput(f"{out} holds SAEs trained with other {part} settings; choose another --out.")
    return [layer for layer in layers if not (layer_directory(out, layer) / "sae_weights.safetensors").exists()]


def write_record(out: Path, config: TopKTrainConfig, source: dict, held_out: torch.Tensor, world: World,
                 schedule: Schedule, train: torch.Tensor | None = None) -> None:
    """OUT/config.json (settings as given, the schedule chosen from them, the source), the held-out contexts and
    (on the fly: `train`) the first training contexts, written with the run's first saved layer (so that a run
    that fails before it finishes one leaves OUT as it found it)."""
    if not world.is_main:
        return
    if not (out / "config.json").exists():
        runs.write_record(out, COMMAND, {"train": asdict(config), "schedule": asdict(schedule), "source": source})
    if not (out / HELD_OUT_FILE).exists():
        write_held_out(out, held_out)
    if train is not None and not (out / TRAIN_SAMPLE_FILE).exists():
        write_train_sample(out, train, config.fit_tokens)


class Progress:
    """A token-counting bar (main rank only) with the running FVU of the layer in training."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, disable=not enabled)
        self.fvu: dict[int, float] = {}

    def update(self, layer: int, tokens: int, fvu: float) -> None:
        previous = self.fvu.get(layer)
        self.fvu[layer] = fvu if previous is None else 0.95 * previous + 0.05 * fvu
        self.bar.update(tokens)
        self.bar.set_postfix(layer=layer, fvu=f"{self.fvu[layer]:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def check_training_memory(d_model: int, config: TopKTrainConfig, count: int, device) -> None:
    """Refuse SAEs that cannot fit before any is built: per SAE, both weight matrices with their gradients
    and two Adam moments (8 × latents × d floats) and the encoder's dense product on one batch."""
    latents = config.expansion * d_model
    need = count * FLOAT_BYTES * (8 * latents * d_model + config.batch_size * latents)
    check_memory(need, f"{count} TopK SAE{'s' if count > 1 else ''} of {latents:,} latents on {d_model} inputs "
                       f"(batch {config.batch_size:,})", device)


def check_sparsity(config: TopKTrainConfig, d_model: int) -> None:
    """Refuse a k (or a target L0) above the number of latents the SAE will have."""
    latents = config.expansion * d_model
    for layer, sparsity in [(None, config.k), *config.layer_l0.items()]:
        if sparsity > latents:
            what = f"--k {config.k}" if layer is None else f"the target L0 {sparsity:g} of layer {layer}"
            raise BadInput(f"{what} is above the SAE's {latents:,} latents (--expansion {config.expansion} × "
                           f"{d_model} dimensions); give a smaller k or a larger --expansion.")


def new_sae(d_model: int, config: TopKTrainConfig, layer: int) -> UnitDecoder:
    return config.new_sae(d_model, layer, seed=derive_seed(config.seed, "layer", layer))


def choose_schedule(config: TopKTrainConfig, tokens: int, d_model: int, fixed: Set[str], auto: bool,
                    world: World, count: int, progress: bool = True) -> tuple[TopKTrainConfig, Schedule]:
    """The schedule for this budget, checked to fit in memory, then said in one line when the rule changed
    the paper's (a warning; under -q, where only what went wrong is said, a note: config.json records it)."""
    check_sparsity(config, d_model)
    schedule = plan_schedule(config, tokens, config.expansion * d_model, fixed, auto)
    run = schedule.applied_to(config)
    check_training_memory(d_model, run, count, world.device)
    if schedule.rule == "budget" and world.is_main:
        say = log.warning if progress else log.info
        say("schedule: %s (the recipe's batch and rate at any budget: --schedule paper)", schedule.reason)
    return run, schedule


def check_against_pca(model, saes: dict[int, UnitDecoder], held_out: torch.Tensor, token_filter: TokenFilter,
                      device: torch.device, schedule: Schedule, sample: Sample,
                      running: dict[int, float | None] | None = None) -> dict[int, dict]:
    """Each SAE against PCA-k fitted on `sample` (a sample of its training tokens), both scored on held-out
    contexts; a warning for each that is worse. {layer: record}. `running`: each layer's FVU on what it trained on
    (a cache), to tell a cache unlike the model apart."""
    if model is None:
        return {}
    records = {}
    inference = {layer: sae.inference() for layer, sae in saes.items()}
    for check in held_out_checks(model, inference, held_out[:CHECK_CONTEXTS], token_filter, device, sample):
        records[check.layer] = {"held_out_tokens": check.tokens, "held_out_fvu": check.fvu,
                                "pca_fvu": check.pca_fvu, "pca_bound_fvu": check.bound_fvu,
                                "train_sample_fvu": check.train_fvu, "below_pca": check.below_pca}
        if check.below_pca:
            log.warning("layer %d: held-out FVU %.4f is above that of PCA-%d fitted on its training tokens (%.4f) "
                        "on the same %d held-out tokens — this SAE is worse than its simplest baseline. %s",
                        check.layer, check.fvu, check.components, check.pca_fvu, check.tokens,
                        why_below(schedule, check.pca_fvu, check.fvu, (running or {}).get(check.layer),
                                  check.train_fvu))
    return records


def why_below(schedule: Schedule, pca_fvu: float, fvu: float = 0.0, running: float | None = None,
              train_fvu: float | None = None) -> str:
    """What to change, in one or two sentences."""
    if fvu > FAR_WORSE and running is not None and running < 1:
        return (f"It reconstructs the cache it trained on (FVU {running:.3f}) but not the model's own activations "
                "on the held-out text: the cache does not look like this model's activations — is it corrupt or "
                "of another model?")
    if train_fvu is not None and train_fvu < pca_fvu < fvu:
        return (f"On its own training tokens its FVU is {train_fvu:.4f}, better than PCA's: it fits what it saw "
                "and does not generalise — give it more, and more varied, training text (--tokens).")
    if schedule.steps < 1000:
        advice = (f"It trained for {schedule.steps:,} steps; give it more tokens (--tokens) or a smaller "
                  "--batch-size.")
    else:
        advice = "Try a higher --lr, a larger --expansion or more tokens."
    if pca_fvu < 0.01:
        advice += (f" PCA explains {1 - pca_fvu:.1%} of the variance here: a few directions hold nearly all of it "
                   "(massive activations?); --skip-positions 1 or --max-norm-ratio compares on the other tokens.")
    return advice


def checking_model(source: dict, device: torch.device, d_model: int):
    """The model a cache was made from, for the held-out check and the learning curves; one sentence when it does
    not load or is not the model whose activations the cache holds (`--no-check --curve-points 0` trains
    without either)."""
    try:
        model, _ = load_variant(source["model"], source.get("revision"), source["variant"], device)
    except (OSError, ValueError, KeyError, BadInput) as error:
        raise BadInput(f"the cache names the model {source['model']!r}, which does not load here ({error}); "
                       "give --no-check --curve-points 0 to train without the held-out check and the learning "
                       "curves, which run it.") from None
    if model.config.hidden_size != d_model:
        raise BadInput(f"the cache names the model {source['model']!r}, whose {model.config.hidden_size} "
                       f"dimensions are not the cache's {d_model}: it was made with another model.")
    return model


CURVE_FILE = "curve.csv"


def sample_rows(sample: Sample, layers: list[int], token_filter: TokenFilter,
                tokens: int) -> dict[int, torch.Tensor]:
    """{layer: the first `tokens` kept tokens of `sample` at that layer, as float rows on the CPU}."""
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for ids, hidden in sample:
        for layer in layers:
            x, _, _ = kept_tokens(hidden[layer], ids.to(hidden[layer].device), token_filter)
            parts[layer].append(x.cpu())
        if min(sum(len(p) for p in chunks) for chunks in parts.values()) >= tokens:
            break
    return {layer: torch.cat(chunks)[:tokens] for layer, chunks in parts.items()}


class Curves:
    """Each layer's learning curve in one run (randsae.training.curves): the steps it is measured after, its fixed
    held-out and training samples, its rows; written with the layer's SAE."""

    def __init__(self, steps: int, points: int, held_out: dict[int, torch.Tensor], train: dict[int, torch.Tensor]):
        self.points = set(doubling_steps(steps, points))
        self.held_out, self.train = held_out, train
        self.rows: dict[int, list[CurveRow]] = {}

    def after_step(self, layer: int, trainer: TopKTrainer) -> None:
        if trainer.steps not in self.points or layer not in self.held_out:
            return
        device = trainer.sae.W_enc.device
        held = reconstruction(trainer.sae, self.held_out[layer].to(device))
        train = reconstruction(trainer.sae, self.train[layer].to(device))
        self.rows.setdefault(layer, []).append(CurveRow(
            layer, trainer.steps, trainer.tokens, held["explained_variance"], train["explained_variance"],
            held["l0"], held["dead_fraction"]))

    def finish(self, layer: int, trainer: TopKTrainer) -> None:
        """The run's last point, where the run ended off the planned steps (a cache's last batch short)."""
        if self.rows.get(layer) and self.rows[layer][-1].steps != trainer.steps:
            self.points.add(trainer.steps)
            self.after_step(layer, trainer)

    def write(self, out: Path, layer: int) -> None:
        if layer in self.rows:
            layer_directory(out, layer).mkdir(parents=True, exist_ok=True)
            write_table(layer_directory(out, layer) / CURVE_FILE, self.rows[layer], CurveRow)


def new_curves(config: TopKTrainConfig, steps: int, layers: list[int], model, held_out: torch.Tensor,
               train_sample: Sample, token_filter: TokenFilter, device: torch.device) -> Curves | None:
    """The learning curves of `layers` (None with --curve-points 0 or without a model to run the held-out text):
    the first --curve-tokens kept tokens of the held-out contexts and of the training sample."""
    if not config.curve_points or model is None or not layers:
        return None
    tokens = config.curve_tokens
    held = sample_rows(model_sample(model, held_out, layers, device, tokens), layers, token_filter, tokens)
    return Curves(steps, config.curve_points, held, sample_rows(train_sample, layers, token_filter, tokens))


def gather_curves(out: Path) -> None:
    """OUT/curve.csv: every saved layer's curve, in layer order."""
    rows = [row for layer, path in trained_layers(out).items() if (path / CURVE_FILE).is_file()
            for row in read_table(path / CURVE_FILE, CurveRow)]
    if rows:
        write_table(out / CURVE_FILE, rows, CurveRow)


def save_layer(out: Path, layer: int, trainer: TopKTrainer, source: dict, fvu: float | None,
               check: dict | None = None, curves: Curves | None = None) -> None:
    if not trainer.world.is_main:
        return
    if curves is not None:  # before the weights: a layer is done when its weights are
        curves.write(out, layer)
    blocks = source.get("blocks_module")  # caches from before it was recorded lack it
    metadata = {"model_name": source["model"], "hook_name": f"{blocks}.{layer}" if blocks else None,
                "context_size": source.get("context_length"), "prepend_bos": bool(source.get("prepend_bos")),
                "dataset_path": source.get("dataset"), "model_from_pretrained_kwargs":
                    {"revision": source["revision"]} if source.get("revision") else None}
    extra = {"layer": layer, "model": source["model"], "variant": source["variant"]["variant"],
             "tokens_trained": trainer.tokens, "steps": trainer.steps, "ranks": trainer.world.size,
             "final_fvu": fvu, "lr": trainer.hyper.lr, "batch_size": trainer.config.batch_size,
             "recipe": trainer.hyper.record(), **(check or {})}
    path = trainer.sae.save(layer_directory(out, layer), metadata, extra)
    log.info("layer %d: %d tokens, running FVU %.4f → %s", layer, trainer.tokens, fvu or float("nan"), path)


def dealt(todo: list[int], world: World) -> list[int]:
    """This rank's share of the layers when the layers are dealt across the ranks: every size-th from its rank."""
    return todo[world.rank::world.size]


def train_from_cache(acts: str | Path, layers: str, config: TopKTrainConfig, out: Path, device: str = "auto",
                     max_tokens: int | None = None, progress: bool = True, fixed: Set[str] = frozenset(),
                     auto: bool = True, check: bool = True, deal: bool = False) -> list[int]:
    """One SAE per cached layer, trained on (at most `max_tokens` of) the cache in a seeded shuffle, with
    the schedule chosen from the budget (`plan_schedule`: `fixed` are the settings given, `auto=False`
    keeps the paper's); each checked against PCA-k on held-out text. Returns the layers trained. Under
    torchrun the ranks share each SAE's batches (data parallel), or with `deal` each rank trains its share of
    the layers by itself (`dealt`), as one process would."""
    with joined_world(resolve_device(device)) as world:
        cache = open_cache(acts)
        chosen = cache.layers if layers == "all" else parse_layers(layers, max(cache.layers) + 1)
        missing = sorted(set(chosen) - set(cache.layers))
        if missing:
            raise BadInput(f"the cache {acts} does not hold layer {missing[0]} (it holds {cache.layers}).")
        source = {**{k: v for k, v in cache.manifest.items() if k != "shards"}, "acts": str(Path(acts).resolve())}
        held_out = read_held_out(acts)
        todo = prepare_output(out, config, source, chosen)
        for layer in todo:  # a look at each layer's first shard, before the schedule is chosen and said
            check_activations(cache.read_shard(0, f"layer.{layer}").float(),
                              f"{Path(acts) / cache.manifest['shards'][0]['file']} (layer {layer})")
        share, ranks = (dealt(todo, world), world) if deal else (todo, None)
        if deal:  # each rank its own layers, alone; rank 0 writes the run's record first
            world = World(device=world.device)
        wanted = (check or config.curve_points > 0) and share and world.is_main  # the check and the curves run it
        model = checking_model(source, world.device, cache.d_model) if wanted else None
        if model is not None:
            check_token_ids(held_out, model, Path(acts) / HELD_OUT_FILE)
        tokens = min(cache.num_tokens, max_tokens or cache.num_tokens)
        run, schedule = choose_schedule(config, tokens, cache.d_model, fixed, auto, world, 1, progress)
        if ranks is not None:
            if ranks.is_main:
                write_record(out, config, source, held_out, world, schedule)
            ranks.barrier()
        token_filter = TokenFilter(config.skip_positions, config.max_norm_ratio)
        bar = Progress(tokens * len(share), progress and world.is_main)
        for layer in share:
            trainer = TopKTrainer(new_sae(cache.d_model, run, layer), run, world, total_steps=schedule.steps)
            curves = new_curves(run, schedule.steps, [layer], model, held_out,
                                cache_sample(cache, [layer], run.curve_tokens), token_filter, world.device)
            seen = 0
            for batch in cache.iter_batches(layer, run.batch_size, shuffle=True, seed=config.seed,
                                            token_filter=token_filter):
                batch = batch[:tokens - seen]
                if not len(batch):
                    break
                bar.update(layer, len(batch), trainer.step(world.shard(batch)))
                seen += len(batch)
                if curves is not None:
                    curves.after_step(layer, trainer)
            if curves is not None:
                curves.finish(layer, trainer)
            sample = cache_sample(cache, [layer], config.fit_tokens)
            checked = check_against_pca(model if check else None, {layer: trainer.sae}, held_out, token_filter,
                                        world.device, schedule, sample, {layer: bar.fvu.get(layer)})
            write_record(out, config, source, held_out, world, schedule)
            save_layer(out, layer, trainer, source, bar.fvu.get(layer), checked.get(layer), curves)
        (ranks or world).barrier()
        if (ranks or world).is_main:
            gather_curves(out)
        bar.close()
        return todo


def opened_source(source: Source, layers: str, config: TopKTrainConfig, out: Path, world: World):
    """(model variant, train contexts, held-out contexts, the source's record, the layers not trained yet) of an
    on-the-fly run into OUT."""
    model, _, train, held_out = open_source(source, world.device)
    chosen = parse_layers(layers, model.config.num_hidden_layers)
    manifest = record(source, model, train, held_out)
    return model, train, held_out, manifest, prepare_output(out, config, manifest, chosen)


def train_from_model(source: Source, layers: str, config: TopKTrainConfig, out: Path, device: str = "auto",
                     progress: bool = True, fixed: Set[str] = frozenset(), auto: bool = True,
                     check: bool = True, deal: bool = False) -> list[int]:
    """One SAE per layer, all trained from the same forward passes over the source's contexts (each
    step takes batch_size // context_length contexts, at least one per rank). Returns the layers trained.
    Under torchrun each rank runs the model on its share of a step's contexts; the ranks share each SAE's
    batch (data parallel), or with `deal` each layer's activations of the whole step are gathered on the rank
    that owns the layer (`dealt`) and trained there alone, the way sparsify distributes modules."""
    if deal:
        return train_dealt_from_model(source, layers, config, out, device, progress, fixed, auto, check)
    with joined_world(resolve_device(device)) as world:
        model, train, held_out, manifest, todo = opened_source(source, layers, config, out, world)
        if not todo:
            return todo
        d_model = model.config.hidden_size
        run, schedule = choose_schedule(config, train.numel(), d_model, fixed, auto, world, len(todo),
                                        progress)
        token_filter = TokenFilter(config.skip_positions, config.max_norm_ratio)
        per_step = max(world.size, run.batch_size // source.context_length)
        steps = math.ceil(len(train) / per_step)
        trainers = {layer: TopKTrainer(new_sae(d_model, run, layer), run, world, total_steps=steps)
                    for layer in todo}
        curves = new_curves(run, steps, todo, model if world.is_main else None, held_out,
                            model_sample(model, train, todo, world.device, run.curve_tokens), token_filter,
                            world.device)
        bar = Progress(train.numel() * len(todo), progress and world.is_main)

        def train_on(layer: int, hidden: torch.Tensor) -> None:
            trainer = trainers[layer]
            before = trainer.tokens
            fvu = trainer.step(token_filter.apply(hidden))
            bar.update(layer, trainer.tokens - before, fvu)
            if curves is not None:
                curves.after_step(layer, trainer)

        for batch in train.split(per_step):
            first = sum(len(part) for part in batch.tensor_split(world.size)[:world.rank])
            with batch_share(model, first, len(batch)):
                residual_stream(model, world.shard(batch).to(world.device), todo, on_output=train_on)
        saes = {layer: trainer.sae for layer, trainer in trainers.items()}
        checked = (check_against_pca(model, saes, held_out, token_filter, world.device, schedule,
                                     model_sample(model, train, list(saes), world.device, config.fit_tokens))
                   if check and world.is_main else {})
        write_record(out, config, manifest, held_out, world, schedule, train)
        for layer, trainer in trainers.items():
            if curves is not None:
                curves.finish(layer, trainer)
            save_layer(out, layer, trainer, manifest, bar.fvu.get(layer), checked.get(layer), curves)
        world.barrier()
        if world.is_main:
            gather_curves(out)
        bar.close()
        return todo


def train_dealt_from_model(source: Source, layers: str, config: TopKTrainConfig, out: Path, device: str,
                           progress: bool, fixed: Set[str], auto: bool, check: bool) -> list[int]:
    """`train_from_model` with the layers dealt across the ranks: one shared pass of the model per step."""
    from randsae.distributed import gather_to

    with joined_world(resolve_device(device)) as world:
        model, train, held_out, manifest, todo = opened_source(source, layers, config, out, world)
        if not todo:
            return todo
        d_model = model.config.hidden_size
        mine = dealt(todo, world)
        alone = World(device=world.device)
        run, schedule = choose_schedule(config, train.numel(), d_model, fixed, auto, alone, max(1, len(mine)),
                                        progress)
        if world.is_main:
            write_record(out, config, manifest, held_out, alone, schedule, train)
        token_filter = TokenFilter(config.skip_positions, config.max_norm_ratio)
        per_step = max(world.size, run.batch_size // source.context_length)
        steps = math.ceil(len(train) / per_step)
        owner = {layer: i % world.size for i, layer in enumerate(todo)}
        trainers = {layer: TopKTrainer(new_sae(d_model, run, layer), run, alone, total_steps=steps)
                    for layer in mine}
        curves = new_curves(run, steps, mine, model, held_out,
                            model_sample(model, train, mine, world.device, run.curve_tokens), token_filter,
                            world.device)
        bar = Progress(train.numel() * len(mine), progress and world.is_main)

        for batch in train.split(per_step):
            sizes = [len(part) for part in batch.tensor_split(world.size)]
            shared: dict[int, torch.Tensor] = {}

            def gather(layer: int, hidden: torch.Tensor, sizes=sizes, shared=shared) -> None:
                whole = gather_to(world, hidden.contiguous(), owner[layer], sizes)
                if whole is not None:
                    shared[layer] = whole

            share = world.shard(batch).to(world.device)
            if len(share):
                with batch_share(model, sum(sizes[:world.rank]), len(batch)):
                    residual_stream(model, share, todo, on_output=gather)
            else:  # a last step with fewer contexts than ranks: this rank hands over no rows, in block order
                draw_unseen(model, len(batch), batch.shape[1])
                nothing = torch.zeros(0, batch.shape[1], d_model, dtype=model.dtype, device=world.device)
                for layer in sorted(todo):
                    gather(layer, nothing)
            for layer in mine:  # after the pass: every rank has handed over every layer
                trainer = trainers[layer]
                before = trainer.tokens
                fvu = trainer.step(token_filter.apply(shared[layer]))
                bar.update(layer, trainer.tokens - before, fvu)
                if curves is not None:
                    curves.after_step(layer, trainer)
        saes = {layer: trainer.sae for layer, trainer in trainers.items()}
        checked = (check_against_pca(model, saes, held_out, token_filter, world.device, schedule,
                                     model_sample(model, train, list(saes), world.device, config.fit_tokens))
                   if check else {})
        for layer, trainer in trainers.items():
            if curves is not None:
                curves.finish(layer, trainer)
            save_layer(out, layer, trainer, manifest, bar.fvu.get(layer), checked.get(layer), curves)
        world.barrier()
        if world.is_main:
            gather_curves(out)
        bar.close()
        return todo
