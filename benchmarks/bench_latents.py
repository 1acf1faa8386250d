"""`make bench`, part 4: building one layer's latent records against encoding its tokens with the SAE alone.

An activation cache of one layer (d = 576, SmolLM2's width; float16 shards of 256-token contexts, drawn
from a Gaussian with a shared mean so that the SAE's latents fire unevenly), a TopK SAE with 4,608 latents
(8 per dimension, k = 32), same run:
1. baseline: read every shard and encode its tokens with the SAE, keeping nothing;
2. randsae: `lm latents`' whole layer — the latent cache (encode + write shards), the per-latent index
   (counting sort into memory maps), and every latent's summary, entropies and the sampled example sets.
Then the peak resident memory each adds beyond the process before it started, against one shard's size.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from randsae.lm.activations import open_cache, write_safetensors
from randsae.lm.examples import ExampleSettings
from randsae.lm.latent_cache import cache_chunks, encode_cache, open_latent_cache
from randsae.lm.latents import layer_records
from randsae.sae import TopKSAE

D, LATENTS, K, CONTEXT = 576, 4608, 32, 256


def make_cache(directory: Path, tokens: int, shard_contexts: int = 512) -> None:
    """A one-layer activation cache of `tokens` tokens, written shard by shard like `lm activations`."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(D, generator=gen) * 2
    scales = torch.rand(D, generator=gen) + 0.2
    contexts = tokens // CONTEXT
    shards = []
    for index, start in enumerate(range(0, contexts, shard_contexts)):
        n = min(shard_contexts, contexts - start)
        name = f"shard-{index:05d}.safetensors"
        write_safetensors(directory / name, {
            "layer.3": (torch.randn(n * CONTEXT, D, generator=gen) * scales + mean).half(),
            "tokens": torch.randint(0, 49152, (n, CONTEXT), generator=gen)})
        shards.append({"file": name, "contexts": n})
    (directory / "manifest.json").write_text(json.dumps({
        "model": "synthetic", "layers": [3], "d_model": D, "context_length": CONTEXT, "dtype": "float16",
        "shards": shards}))


def encode_only(acts: Path, sae: TopKSAE, batch_size: int) -> None:
    cache = open_cache(acts)
    with torch.no_grad():
        for index in range(len(cache.manifest["shards"])):
            x = cache.read_shard(index, "layer.3")
            for start in range(0, len(x), batch_size):
                sae.encode(x[start:start + batch_size].float())


def records(acts: Path, sae: TopKSAE, out: Path, batch_size: int) -> dict[str, float]:
    """The three parts of `lm latents` for one layer, timed; returns seconds per part."""
    times = {}
    start = time.perf_counter()
    cache = open_cache(acts)
    encode_cache(cache_chunks(cache, [3]), {3: sae}, out, {"bench": True}, cache.context_length, cache.num_tokens,
                 batch_size=batch_size)
    times["latent cache (encode + write)"] = time.perf_counter() - start
    cache = open_latent_cache(out)
    start = time.perf_counter()
    cache.index(3)
    times["per-latent index"] = time.perf_counter() - start
    start = time.perf_counter()
    tokens = cache.tokens().numpy().ravel()
    layer_records(cache, 3, tokens, ExampleSettings(), {"model": "synthetic", "variant": "trained"},
                  lambda ids: [str(i) for i in ids])
    times["summaries, entropy, example sets"] = time.perf_counter() - start
    return times


PEAK_SCRIPT = """
import sys, tempfile, torch
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from bench_latents import encode_only, records, LATENTS, D, K
from randsae.sae import TopKSAE

def status(key):  # kB, from /proc (ru_maxrss survives exec, so it would report the parent's peak)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

acts, which, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sae = TopKSAE(D, LATENTS, K, seed=0).eval()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current resident size
before = status("VmRSS:")
with tempfile.TemporaryDirectory() as out:
    encode_only(acts, sae, batch) if which == "encode" else records(acts, sae, Path(out), batch)
print((status("VmHWM:") - before) / 1024)
"""


def peak_mb(acts: Path, which: str, batch_size: int) -> float:
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(acts), which, str(batch_size),
                             str(Path(__file__).parent)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_048_576)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sae = TopKSAE(D, LATENTS, K, seed=0).eval()
    with tempfile.TemporaryDirectory() as root:
        acts = Path(root) / "acts"
        acts.mkdir()
        make_cache(acts, args.tokens)
        tokens = open_cache(acts).num_tokens
        encode_only(acts, sae, args.batch_size)  # warm up (and the page cache)
        base, parts = [], []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            encode_only(acts, sae, args.batch_size)
            base.append(time.perf_counter() - start)
            parts.append(records(acts, sae, Path(root) / f"latents-{repeat}", args.batch_size))
        shard_mb = 512 * CONTEXT * D * 2 / 2**20
        peaks = {"encode": peak_mb(acts, "encode", args.batch_size),
                 "records": peak_mb(acts, "records", args.batch_size)}
    base_s = statistics.median(base)
    names = list(parts[0])
    medians = {name: statistics.median(p[name] for p in parts) for name in names}
    total = statistics.median(sum(p.values()) for p in parts)
    print(f"\nLatent records of one layer: {tokens:,} tokens, d = {D}, {LATENTS:,} latents, k = {K}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"| {'step':44} | {'median s':>9} | {'vs encoding alone':>17} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 19}|")
    print(f"| {'baseline: encode with the SAE alone':44} | {base_s:9.2f} | {1.0:17.2f} |")
    for name in names:
        print(f"| {'  ' + name:44} | {medians[name]:9.2f} | {medians[name] / base_s:17.2f} |")
    print(f"| {'randsae lm latents, whole layer':44} | {total:9.2f} | {total / base_s:17.2f} |")
    print(f"\nPeak resident memory added (MB), one activation shard = {shard_mb:.0f} MB "
          f"(float16), latent shard = {512 * CONTEXT * K * 8 / 2**20:.0f} MB")
    print(f"| {'run':44} | {'peak MB':>9} |")
    print(f"|{'-' * 46}|{'-' * 11}|")
    print(f"| {'encode with the SAE alone':44} | {peaks['encode']:9.0f} |")
    print(f"| {'randsae lm latents, whole layer':44} | {peaks['records']:9.0f} |")
    entries = tokens * K * (8 + 4) / 2**20
    print(f"(the layer's index: {entries:.0f} MB on disk, memory-mapped; its pages count as resident while "
          "they are written and read, and the OS can drop them)")


if __name__ == "__main__":
    main()
