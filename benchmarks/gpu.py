"""One prepared benchmark of every randsae path on a GPU, each against its baseline in the same run.

    python benchmarks/gpu.py                 # on a CUDA machine: under 8 minutes on one H100
    python benchmarks/gpu.py --smoke         # tiny shapes on whatever is there (CPU in CI): seconds
    make bench-gpu                           # the same, from the Makefile

Needs only what a bare CUDA machine has: torch, transformers, safetensors, numpy, matplotlib, tqdm, pyarrow, and
randsae by `pip install --no-deps -e .`. No network, no GGUF: the language models are Pythia-shaped GPT-NeoX
models with random weights built from `GPTNeoXConfig` (70m / 160m / 410m shapes). EleutherAI sparsify
(`eai-sparsify`, pure Python) is the TopK baseline; it is not on a bare machine, so carry it as a wheel built
here: `pip wheel --no-deps eai-sparsify==1.3.3 -w .whl/` and, there, `pip install --no-deps .whl/*.whl`
(its own imports at run time are torch, safetensors, simple-parsing... only `sparsify.SparseCoder` is used; if
it cannot be imported the rows say so and the rest runs).

Tables, one per workload, each with its baseline:
1. toy sweep, 512 latents × 21 coefficients: randsae's batched stack against one SAE at a time (the authors'
   way), SAE-epochs/s and the ratio; the paper's whole toy grid (3,360 SAEs × 100 epochs) extrapolated from
   a timed slice of each dictionary size (stated as such);
2. TopK training at d = 512, 768, 1024, 2048 (64 latents per dimension, k = 32), fp32 and bf16 autocast:
   randsae's sparse path, its dense reference and sparsify's trainer step on the same shape and batch (its
   SparseCoder, FVU loss, gradient projection, unit-norm decoder and Adam, as its Trainer does with
   optimizer="adam"; its default is signum), tokens/s and peak GPU memory;
3. activation caching and `lm eval` (every layer: SAE encode/decode, spliced and zeroed losses) on the 160m
   shape, tokens/s;
4. correctness: each path on this device against the CPU on a small case, with the tolerance named;
5. the independent-feature toy (Korznikov et al.'s shape, 100 → 3,200, k = 20): every architecture's training
   loop on a stream drawn on the device against `lm train`'s trainer on batches already there, samples/s; then
   `randsae recovery` for the trained TopK and BatchTopK SAEs and a frozen random decoder, both probability
   settings, 32M samples each: the recovery curve at the paper's shape, with the seconds each point took.
Exit status 1 if any workload failed or a correctness line is off (the tables still print).
"""

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from one_at_a_time import train_one  # noqa: E402

from randsae.data import sharkey  # noqa: E402
from randsae.data.independent import Stream  # noqa: E402
from randsae.experiments.recovery import RecoveryConfig, run_recovery  # noqa: E402
from randsae.sae.relu import ReluSAE  # noqa: E402
from randsae.sae.topk import TopKSAE  # noqa: E402
from randsae.training.forms import BatchTopKTraining  # noqa: E402
from randsae.training.toy import train_relu_saes  # noqa: E402
from randsae.training.trainer import ARCHITECTURES, TopKTrainConfig, TopKTrainer  # noqa: E402

PYTHIA = {"70m": (512, 6, 8), "160m": (768, 12, 12), "410m": (1024, 24, 16)}  # hidden, layers, heads
FAILURES: list[str] = []


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def workload(name: str):
    """Runs a table's function; a failure is printed and counted, and the next table runs."""
    def wrap(fn):
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 — a benchmark reports every failure and goes on
                FAILURES.append(f"{name}: {type(e).__name__}: {e}")
                print(f"\n{name}: FAILED — {type(e).__name__}: {e}")
                traceback.print_exc(limit=3)
        return run
    return wrap


def table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


# --- 1. the toy sweep ---

def stack_seconds(data: torch.Tensor, latents: int, coefs: list[float], epochs: int, device) -> float:
    sae = ReluSAE(data.shape[1], latents, num_saes=len(coefs), seed=0).to(device)
    sync(device)
    started = time.perf_counter()
    train_relu_saes(sae, data, coefs, epochs=epochs, seed=0)
    sync(device)
    return time.perf_counter() - started


@workload("toy sweep")
def toy_sweep(device: torch.device, smoke: bool) -> None:
    samples, inputs, features = (600, 16, 32) if smoke else (10_000, 256, 512)
    latents, coefs_n, epochs = (32, 3, 2) if smoke else (512, 21, 5)
    baseline_saes = 1 if smoke else 2
    data = sharkey.generate(samples, num_inputs=inputs, num_features=features, seed=0).samples.to(device)
    train = data[: int(0.9 * len(data))]
    coefs = torch.logspace(-3, 2, coefs_n).tolist()
    stack_seconds(train, latents, coefs, 1, device)  # warm-up
    ours = stack_seconds(train, latents, coefs, epochs, device)
    theirs = statistics.median(train_one(c, seed=0, num_latents=latents, epochs=epochs, num_samples=samples,
                                         device=str(device), num_inputs=inputs, num_features=features)
                               for c in coefs[:baseline_saes])
    ours_rate = len(coefs) * epochs / ours
    theirs_rate = epochs / theirs
    table(f"Toy sweep on {device}: {latents} latents × {len(coefs)} coefficients, {epochs} epochs timed "
          f"({samples:,} × {inputs} samples); baseline: one SAE at a time ({baseline_saes} timed)",
          ["method", "SAE-epochs/s", "vs one at a time"],
          [["one SAE at a time (authors' way)", f"{theirs_rate:.2f}", "1.00"],
           ["randsae batched stack", f"{ours_rate:.2f}", f"{ours_rate / theirs_rate:.1f}"]])
    # the paper's grid: 2 data × 2 transforms × 10 seeds × sizes 512–4096 × 21 coefficients × 100 epochs
    sizes = [32, 64] if smoke else [512, 1024, 2048, 4096]
    per_epoch = {n: stack_seconds(train, n, coefs, 1 if smoke else 2, device) / (1 if smoke else 2)
                 for n in sizes}
    stacks = 2 * 2 * 10
    total = sum(stacks * 100 * t for t in per_epoch.values())
    table("The paper's whole toy grid (3,360 SAEs, 100 epochs): EXTRAPOLATED from one timed stack per size "
          "(data-set making not included)", ["dictionary size", "s per stack-epoch", "grid share (s)"],
          [[n, f"{t:.3f}", f"{stacks * 100 * t:,.0f}"] for n, t in per_epoch.items()]
          + [["all", "", f"{total:,.0f} s = {total / 60:.1f} min"]])


# --- 2. TopK training ---

def sparsify_step_fn(d: int, latents: int, k: int, device, batch: torch.Tensor):
    from sparsify import SaeConfig, SparseCoder

    sae = SparseCoder(d, SaeConfig(num_latents=latents, k=k), device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-4)

    def step(x):
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sae.set_decoder_norm_to_unit_norm()
    return step


def rate(step, batches, device) -> tuple[float, float]:
    """Median tokens/s over the timed steps (the first is warm-up) and peak GPU memory in GB."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step(batches[0])
    times = []
    for b in batches[1:]:
        sync(device)
        started = time.perf_counter()
        step(b)
        sync(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return len(batches[0]) / statistics.median(times), peak


@workload("TopK training")
def topk_training(device: torch.device, smoke: bool) -> None:
    dims = [16, 32] if smoke else [512, 768, 1024, 2048]
    expansion, k = (4, 4) if smoke else (64, 32)
    batch_size, steps = (64, 3) if smoke else (4096, 6)
    rows = []
    for d in dims:
        latents = expansion * d
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(batch_size, d, generator=gen).to(device) for _ in range(steps)]
        for precision in ("fp32", "bf16"):
            autocast = "bf16" if precision == "bf16" else "none"
            config = TopKTrainConfig(k=k, expansion=expansion, batch_size=batch_size, autocast=autocast)
            results = {}
            for name in ("randsae sparse", "randsae dense"):
                sae = TopKSAE(d, latents, k).to(device)
                trainer = TopKTrainer(sae, config)
                if name.endswith("dense"):
                    trainer.model = sae.forward_dense
                results[name] = rate(trainer.step, batches, device)
                del trainer, sae
            try:
                step = sparsify_step_fn(d, latents, k, device, batches[0])
                context = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                           else contextlib.nullcontext())

                def in_context(x, step=step, context=context):
                    with context:
                        step(x)
                results["sparsify"] = rate(in_context, batches, device)
            except ImportError:
                results["sparsify"] = (float("nan"), float("nan"))
            base = results["sparsify"][0]
            for name, (tps, peak) in results.items():
                ratio = f"{tps / base:.2f}" if base == base else "sparsify not installed"
                rows.append([d, latents, precision, name, f"{tps:,.0f}", f"{peak:.2f}", ratio])
    table(f"TopK training on {device}: k = {k}, {expansion} latents per dimension, batch {batch_size} tokens, "
          f"median of {steps - 1} steps", ["d", "latents", "precision", "trainer", "tokens/s", "peak GB",
                                           "vs sparsify"], rows)


# --- 3. activations and eval on a Pythia shape ---

def pythia(shape: str, device, smoke: bool):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hidden, layers, heads = (32, 2, 4) if smoke else PYTHIA[shape]
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=2048)
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).to(device).eval()


@workload("activations and eval")
def activations_and_eval(device: torch.device, smoke: bool) -> None:
    from randsae.experiments.lm_eval import evaluate_batch
    from randsae.lm.activations import cache_activations
    from randsae.metrics import TokenQuality

    model = pythia("160m", device, smoke)
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    contexts, length, batch = (4, 32, 2) if smoke else (64, 2048, 8)
    ids = torch.randint(0, 50304, (contexts, length), generator=torch.Generator().manual_seed(0))
    layers = list(range(n_layers))
    with torch.no_grad():
        model(ids[:batch].to(device))  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        started = time.perf_counter()
        cache_activations(model, ids, layers, Path(tmp) / "acts", batch_size=batch, progress=False)
        sync(device)
        cache_s = time.perf_counter() - started
    with torch.no_grad():
        plain_started = time.perf_counter()
        for chunk in ids.split(batch):
            model(chunk.to(device))
        sync(device)
        plain_s = time.perf_counter() - plain_started
    k = 4 if smoke else 32
    saes = {layer: TopKSAE(d, 8 * d if smoke else 64 * d, k).to(device).eval() for layer in layers}
    quality = {layer: TokenQuality(d, sae.num_latents, k) for layer, sae in saes.items()}
    losses = {layer: {"ce_sae": 0.0, "ce_zero": 0.0, "kl": 0.0} for layer in layers}
    eval_ids = ids[: max(batch, contexts // 4)]
    sync(device)
    started = time.perf_counter()
    for chunk in eval_ids.split(max(1, batch // 2)):
        evaluate_batch(model, saes, chunk.to(device), quality, losses)
    sync(device)
    eval_s = time.perf_counter() - started
    tokens = ids.numel()
    table(f"Pythia-160m shape (random weights, {n_layers} layers, d = {d}) on {device}, {contexts} contexts of "
          f"{length} tokens", ["run", "tokens/s", "vs plain forward"],
          [["plain forward (baseline)", f"{tokens / plain_s:,.0f}", "1.00"],
           [f"randsae activation cache, all {n_layers} layers", f"{tokens / cache_s:,.0f}",
            f"{plain_s / cache_s:.2f}"],
           [f"randsae lm eval, all {n_layers} layers (3 forwards per layer)",
            f"{eval_ids.numel() / eval_s:,.0f}", f"{(eval_ids.numel() / eval_s) / (tokens / plain_s):.3f}"]])


# --- 4. correctness against the CPU ---

@workload("correctness")
def correctness(device: torch.device, smoke: bool) -> None:
    rows = []

    def line(name: str, difference: float, tolerance: float) -> None:
        ok = difference <= tolerance
        rows.append([name, f"{difference:.2e}", f"{tolerance:.0e}", "ok" if ok else "OFF"])
        if not ok:
            FAILURES.append(f"correctness: {name} differs by {difference:.2e} (tolerance {tolerance:.0e})")

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=gen)
    # ReLU stack: three training epochs, dense path
    results = []
    for where in ("cpu", device):
        sae = ReluSAE(32, 64, num_saes=3, seed=0).to(where)
        train_relu_saes(sae, x.to(where), [0.01, 0.1, 1.0], epochs=3, seed=0)
        results.append([p.detach().cpu() for p in sae.parameters()])
    line("ReLU stack, 3 epochs: parameters", max((a - b).abs().max().item() for a, b in
                                                 zip(*results, strict=True)), 1e-4)
    # TopK: the sparse forward and backward (embedding-bag decode) against the CPU
    grads = []
    for where in ("cpu", device):
        torch.manual_seed(0)
        sae = TopKSAE(32, 256, 8).to(where)
        xs = x.to(where)
        ((sae(xs).reconstruction - xs) ** 2).mean().backward()
        grads.append([p.grad.detach().cpu() for p in sae.parameters() if p.grad is not None])
    line("TopK sparse backward: gradients", max((a - b).abs().max().item() for a, b in
                                                zip(*grads, strict=True)), 1e-4)
    # TopK: sparse path against the dense reference on this device
    torch.manual_seed(0)
    sae = TopKSAE(32, 256, 8).to(device)
    xd = x.to(device)
    difference = (sae(xd).reconstruction - sae.forward_dense(xd).reconstruction).abs().max().item()
    line("TopK sparse against dense, same device: reconstruction", difference, 1e-4)
    # activations: a block's output on this device against the CPU
    model = pythia("70m", "cpu", True)
    ids = torch.randint(0, 50304, (2, 16), generator=gen)
    with torch.no_grad():
        cpu_out = model(ids, output_hidden_states=True).hidden_states[-1]
        dev_out = model.to(device)(ids.to(device), output_hidden_states=True).hidden_states[-1].cpu()
    line("GPT-NeoX forward: last hidden state", (cpu_out - dev_out).abs().max().item(), 1e-3)
    # BatchTopK: the sparse training forward against its dense reference on this device, gradients
    sae = BatchTopKTraining(32, 256, 4, seed=0, widths=[128, 256]).to(device)
    grads = []
    for forward in (sae.forward, sae.forward_dense):
        sae.zero_grad()
        out = forward(xd)
        sum((r - xd).square().sum() for r in (out.reconstruction, *out.prefixes)).backward()
        grads.append([p.grad.detach().cpu() for p in sae.parameters()])
    line("BatchTopK sparse against dense, same device: gradients", max((a - b).abs().max().item() for a, b in
                                                                      zip(*grads, strict=True)), 1e-3)
    table(f"Correctness on {device} against the CPU", ["check", "max |difference|", "tolerance", "verdict"], rows)


# --- 5. the independent-feature toy ---

@workload("independent-feature toy")
def recovery_toy(device: torch.device, smoke: bool) -> None:
    d, latents, k = (16, 64, 2) if smoke else (100, 3200, 20)
    batch, steps = (256, 3) if smoke else (4096, 20)
    stream = Stream(d, latents, k, 1.0, 0.5, seed=0, device=device)
    fixed = [stream.batch(i, batch) for i in range(steps)]
    rows, base = [], None
    for architecture in ARCHITECTURES:
        widths = [latents // 2, latents * 4 // 5, latents] if architecture == "matryoshka" else None
        config = TopKTrainConfig(k=k, batch_size=batch, architecture=architecture, target_l0=k,
                                 matryoshka_widths=widths)
        for loop in ("lm train's trainer", "recovery stream"):
            trainer = TopKTrainer(config.new_sae(d, 0, seed=0, latents=latents).to(device), config)
            if loop == "recovery stream":
                # a fresh batch drawn on the device every step (the batches in memory only set the count)
                samples = rate(lambda _, t=trainer: t.step(stream.batch(t.steps, batch)), fixed, device)[0]
            else:
                samples = rate(trainer.step, fixed, device)[0]
            base = samples if (architecture, loop) == ("topk", "lm train's trainer") else base
            rows.append([architecture, loop, f"{samples:,.0f}", f"{samples * 6 * d * latents / 1e9:.1f}",
                         f"{samples / base:.2f}"])
    table(f"Independent-feature toy training on {device}: {d} → {latents:,}, k = {k}, batch {batch}, median of "
          f"{steps - 1} steps", ["architecture", "loop", "samples/s", "GFLOP/s (6·d·L)", "vs topk lm train"], rows)
    config = RecoveryConfig(num_inputs=d, num_features=latents, avg_active=k, latents=latents, k=k,
                            architectures=["topk", "batchtopk"], dictionaries=["trained", "frozen-decoder"],
                            samples=8192 if smoke else 32 * 2**20, batch_size=batch, points=2 if smoke else 8,
                            held_out=1024 if smoke else 16384, device=str(device))
    with tempfile.TemporaryDirectory() as out:
        curve = run_recovery(config, out, progress=False)
    table(f"randsae recovery on {device}: recovered of {latents:,} and explained variance by samples seen",
          ["p", "architecture", "dictionary", "samples", "recovered", "explained variance", "seconds"],
          [[r.probabilities, r.architecture, r.dictionary, f"{r.samples:,}", r.recovered,
            f"{r.explained_variance:.3f}", f"{r.seconds:.1f}"] for r in curve])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any device: proves the script runs")
    parser.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    parser.add_argument("--only", default="toy,topk,lm,correctness,recovery", help="comma list of workloads")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads")
    smoke = ", SMOKE (tiny shapes)" if args.smoke else ""
    print(f"randsae GPU benchmark: torch {torch.__version__}, {name}{smoke}")
    started = time.perf_counter()
    chosen = set(args.only.split(","))
    for key, fn in (("correctness", correctness), ("toy", toy_sweep), ("topk", topk_training),
                    ("lm", activations_and_eval), ("recovery", recovery_toy)):
        if key in chosen:
            fn(device, args.smoke)
    verdict = f"{len(FAILURES)} FAILED: " + "; ".join(FAILURES) if FAILURES else "every workload ran"
    print(f"\n{time.perf_counter() - started:.0f} s in all; {verdict}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
