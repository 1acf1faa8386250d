"""The throughputs a plan is estimated from, measured on this machine by a few steps of each stage's own code and
kept per machine (like the judge's calibration) under $RANDSAE_CACHE/throughputs/: loading the model (and
cutting the text), its forward pass on contexts of the study's length, a TopK SAE's training steps and
encoding at the study's width (latents capped at 2^15 for the measurement), the disk's write speed where OUT
lies, and the judge: loading it, then one known-answer latent through every scorer the study runs and one
through those that need no LLM.

A model that cannot be loaded here (a hub name with the hub unreachable, a directory holding only a config) is
measured as a random initialisation from its config with at most 2 blocks; its load time is then its weights'
bytes at the disk's measured read speed.
"""

import asyncio
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from randsae import io
from randsae.study.plan import CALIBRATION_LATENTS, NOT_TIMED, Rates, sae_encode_flops, sae_train_flops
from randsae.study.shapes import ModelShape

log = logging.getLogger(__name__)

VERSION = 2  # measurements of an older layout are measured again
LATENT_CAP = 2**15
PROBE_BYTES = 64 * 2**20


def fingerprint(device: str) -> dict:
    """What makes this machine this machine, for the kept calibration: the CPU, its cores, the GPUs."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if device == "cuda" and torch.cuda.is_available() else []
    threads = torch.get_num_threads()
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "gpus": gpus, "torch": torch.__version__}


def calibration_path(key: dict) -> Path:
    text = json.dumps(key, sort_keys=True, default=str)
    return io.cache_dir("throughputs") / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"


def timed(work, *, at_least: float = 0.5, most: int = 8) -> float:
    """Seconds per call of `work()`, after one warm-up call, over at least `at_least` seconds (≤ `most` calls)."""
    work()
    calls, start = 0, time.perf_counter()
    while calls < most and (calls == 0 or time.perf_counter() - start < at_least):
        work()
        calls += 1
    return (time.perf_counter() - start) / calls


def rates(study_settings, shape: ModelShape, device: str, judge_options: dict, autointerp, examples,
          out: Path, batch: int) -> Rates:
    """This machine's rates for a study whose SAEs train on batches of `batch` tokens (kept; measured the
    first time)."""
    key = {"version": VERSION, "machine": fingerprint(device), "device": device, "model": study_settings.model,
           "shape": asdict(shape), "context_length": study_settings.context_length, "k": study_settings.k,
           "batch": batch,
           "expansion": study_settings.expansion,
           "judge": {k: v for k, v in judge_options.items() if k != "api_key"},
           "scorers": autointerp.scorers, "negatives": autointerp.negatives,
           "explainer_tokens": autointerp.explainer_tokens, "test_examples": examples.test_examples,
           "non_activating": examples.non_activating, "explainer_examples": examples.explainer_examples}
    path = calibration_path(key)
    if path.is_file():
        try:
            kept = json.loads(path.read_text())["rates"]
            if "url" in judge_options:
                return Rates(**kept)
            return Rates(**{**kept, "calibration_seconds": judge_calibration_seconds(
                judge_options, autointerp, kept["judged_latent_seconds"], examples)})
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("the kept calibration %s is unreadable; measuring again", path)
    log.info("measuring this machine's throughputs for the plan (once; kept in %s)", path.parent)
    measured = measure(study_settings, shape, device, judge_options, autointerp, examples, out, batch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(path, {"key": key, "rates": asdict(measured)})
    except OSError as e:
        log.warning("could not keep the calibration in %s (%s)", path.parent, e)
    return measured


def measure(s, shape: ModelShape, device: str, judge_options: dict, autointerp, examples, out: Path,
            batch: int) -> Rates:
    import torch

    from randsae.config import resolve_device

    torch_device = resolve_device(device)
    disk = disk_speed(out)
    load, forward = model_rates(s, shape, torch_device, disk)
    train, encode = sae_rates(shape.d_model, s.expansion * shape.d_model, s.k, torch_device, batch)
    per_layer, per_token, measured_at = latent_rates(shape.d_model, s.expansion * shape.d_model, s.k,
                                                     s.context_length, examples, out, torch_device)
    where = "GPU" if torch_device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    basis = (f"measured here ({where}): forward {forward / 1e9:.1f} GFLOP/s, SAE training {train / 1e9:.1f} "
             f"GFLOP/s, load {load:.1f} s, disk {disk / 2**20:.0f} MB/s")
    if "url" in judge_options:  # a server's calls may be paid for: none is made for a plan
        return Rates(forward, train, encode, load, disk, 0.0, 0.0, 0.0, 0.0, basis,
                     NOT_TIMED,
                     per_layer, per_token, measured_at)
    judged, other, judge_load = judge_rates(judge_options, autointerp, examples)
    return Rates(forward, train, encode, load, disk, judged, other, judge_load,
                 judge_calibration_seconds(judge_options, autointerp, judged, examples), basis,
                 f"measured here: {judged:.1f} s per judged latent, {other:.2f} s per other latent, judge load "
                 f"{judge_load:.1f} s", per_layer, per_token, measured_at)


def disk_speed(out: Path) -> float:
    """Bytes per second written (and synced) where OUT lies (or in the temporary directory where that refuses a
    probe)."""
    where = Path(out).expanduser().resolve()
    while not where.exists():
        where = where.parent
    data = os.urandom(PROBE_BYTES)
    for folder in (where, None):
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".randsae-probe-") as f:
                start = time.perf_counter()
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                return PROBE_BYTES / max(time.perf_counter() - start, 1e-6)
        except OSError:
            if folder is None:
                raise
    raise AssertionError  # pragma: no cover


def model_rates(s, shape: ModelShape, device, disk: float) -> tuple[float, float]:
    """(seconds to load the model and cut the text, FLOP/s of its forward pass on 8 contexts)."""
    import torch

    from randsae.lm.models import load_config
    from randsae.lm.source import load_variant
    from randsae.lm.text import contexts, documents

    start = time.perf_counter()
    try:
        model, tokenizer = load_variant(s.model, s.revision, {"variant": "trained", "seed": 0}, device)
        docs = documents(s.dataset, s.text_column, s.dataset_config, "train")
        contexts(tokenizer, docs, s.context_length, max_contexts=-(-s.tokens // s.context_length) * 10 // 9 + 1)
        load = time.perf_counter() - start
        measured = shape
    except Exception as error:  # not loadable here: a random model of its config, at most 2 blocks
        from transformers import AutoModelForCausalLM

        from randsae.study.shapes import model_shape

        log.info("measuring %s as a random initialisation of its config with at most 2 blocks (%s)", s.model,
                 str(error).splitlines()[0] if str(error) else type(error).__name__)
        config = load_config(s.model, s.revision)
        config.num_hidden_layers = min(config.num_hidden_layers, 2)
        model = AutoModelForCausalLM.from_config(config).to(device).eval()
        measured = model_shape(config, s.model)
        load = shape.weight_bytes("float32") / disk
    ids = torch.randint(0, shape.vocab, (8, s.context_length), device=device)

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds = timed(forward)
    return load, measured.forward_flops(s.context_length) * ids.numel() / seconds


def sae_rates(d_model: int, latents: int, k: int, device, batch_size: int) -> tuple[float, float]:
    """(FLOP/s of a TopK SAE's training step on `batch_size` tokens, of its encoding) at `d_model`, with at most
    LATENT_CAP latents."""
    import torch

    from randsae.training.trainer import TopKTrainConfig, TopKTrainer

    latents = min(latents, LATENT_CAP)
    expansion = max(1, latents // d_model)
    config = TopKTrainConfig(k=min(k, expansion * d_model), expansion=expansion, batch_size=batch_size)
    sae: Any = config.new_sae(d_model, 0, seed=0).to(device)
    trainer = TopKTrainer(sae, config, total_steps=100)
    batch = torch.randn(batch_size, d_model, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step = timed(lambda: (trainer.step(batch), sync()))
    with torch.no_grad():
        encode = timed(lambda: (sae.encode(batch), sync()))
    tokens, width = len(batch), expansion * d_model
    return tokens * sae_train_flops(d_model, width) / step, tokens * sae_encode_flops(d_model, width) / encode


def latent_rates(d_model: int, latents: int, k: int, context_length: int, examples, out: Path,
                 device) -> tuple[float, float, int]:
    """(seconds per layer, seconds per token per layer, the latents measured at) of the latents stage's own
    code — encoding into the latent cache, its index, every latent's summary and the sampled ones' example sets —
    on random activations through a random TopK SAE of the study's width (at most LATENT_CAP latents), timed at
    two token counts and fitted as a + b × tokens."""
    import dataclasses

    import torch

    from randsae.lm.latent_cache import encode_cache, open_latent_cache
    from randsae.lm.latents import layer_records
    from randsae.training.trainer import TopKTrainConfig

    latents = min(latents, LATENT_CAP)
    expansion = max(1, latents // d_model)
    sae = TopKTrainConfig(k=min(k, expansion * d_model), expansion=expansion).new_sae(d_model, 0, seed=0)
    sae = sae.inference().to(device).eval()
    settings = dataclasses.replace(examples, sample=1, min_examples=1)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    sizes = [max(2, 2048 // context_length), max(4, 8192 // context_length)]
    where = Path(out).expanduser().resolve()
    while not where.exists():
        where = where.parent
    for contexts in sizes:
        tokens = torch.randint(0, 1000, (contexts, context_length), generator=generator)
        x = torch.randn(tokens.numel(), d_model, generator=generator)
        with tempfile.TemporaryDirectory(dir=where if os.access(where, os.W_OK) else None) as scratch:
            start = time.perf_counter()
            encode_cache([(tokens, lambda x=x: {0: x})], {0: sae}, Path(scratch) / "cache", {}, context_length,
                         tokens.numel(), device=device)
            cache = open_latent_cache(Path(scratch) / "cache")
            layer_records(cache, 0, cache.tokens().numpy().ravel(), settings, {"model": "m", "variant": "v"},
                          lambda ids: [str(i) for i in ids], decoder=sae.W_dec.detach().float().cpu().numpy())
            seconds.append(time.perf_counter() - start)
    counts = [n * context_length for n in sizes]
    per_token = max(0.0, (seconds[1] - seconds[0]) / (counts[1] - counts[0]))
    return max(0.0, seconds[0] - per_token * counts[0]), per_token, expansion * d_model


def judge_rates(options: dict, autointerp, examples) -> tuple[float, float, float]:
    """(seconds for a latent the judge explains and scores with every scorer the study runs, seconds for one
    scored only by the scorers that need no LLM, seconds to load the judge and the embedding model)."""
    from randsae.autointerp.calibration import known_answer_set
    from randsae.autointerp.clients import make_judge
    from randsae.autointerp.pipeline import score_latent
    from randsae.scorer_kinds import EMBEDS, SCORER_KINDS

    scorers = list(autointerp.scorers)
    quiet = [s for s in scorers if not SCORER_KINDS[s].uses_judge and not SCORER_KINDS[s].needs_explanation]
    sets, _, decode = known_answer_set(max(2, examples.test_examples), seed=0,
                                       explainer_examples=examples.explainer_examples)

    async def run() -> tuple[float, float, float]:
        start = time.perf_counter()
        judge = make_judge(**options)
        embedder = None
        if set(EMBEDS) & set(scorers):
            from randsae.autointerp.clients.embedding import EmbeddingModel

            embedder = EmbeddingModel(autointerp.embedding_model, device="cpu")
        try:
            await judge.check()
            load = time.perf_counter() - start
            start = time.perf_counter()
            await score_latent(judge, sets[0], {"model": "calibration", "variant": "plan"}, float("nan"), decode,
                               scorers, autointerp.style, embedder, max_tokens=autointerp.explainer_tokens,
                               negatives=tuple(autointerp.negatives))
            judged = time.perf_counter() - start
            start = time.perf_counter()
            await score_latent(None, sets[1], {"model": "calibration", "variant": "plan"}, float("nan"), decode,
                               quiet, autointerp.style, embedder, negatives=tuple(autointerp.negatives))
            return judged, time.perf_counter() - start, load
        finally:
            await judge.close()

    return asyncio.run(run())


def judge_calibration_seconds(options: dict, autointerp, judged: float, examples) -> float:
    """The judge's known-answer calibration when it is not kept on this machine yet: CALIBRATION_LATENTS
    latents' worth of judged scoring at its window count; 0 once kept."""
    from randsae.experiments.lm_autointerp import judge_description, shared_calibration_path

    shared = shared_calibration_path(judge_description(options), autointerp)
    if shared is not None and shared.is_file():
        return 0.0
    windows = autointerp.calibration_windows / max(2, examples.test_examples)
    return CALIBRATION_LATENTS * judged * windows
