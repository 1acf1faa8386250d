"""`make bench`, part 2: caching the residual stream against a plain `output_hidden_states` forward.

Same model (the embedded SmolLM2-135M), same batches, same run: tokens/s of
1. model(..., output_hidden_states=True), the activations left in memory;
2. randsae's cache of every block (hooks, float16 shards written to disk);
3. randsae's cache of the first quarter of the blocks (the forward stops after the last one needed).
Then memory: the peak resident memory that caching adds beyond the model and one forward pass, for a
small and a 4× larger token count at the same shard size (it should not grow with the tokens).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from randsae.lm import load_model
from randsae.lm.activations import cache_activations
from randsae.lm.text import contexts, documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--contexts", type=int, default=32)
    parser.add_argument("--context-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2")
    rows = contexts(tokenizer, documents(), args.context_length, max_contexts=args.contexts)
    tokens = rows.numel()
    num_layers = model.config.num_hidden_layers

    def plain():
        with torch.no_grad():
            for batch in rows.split(args.batch_size):
                model(batch, output_hidden_states=True, use_cache=False)

    def cached(layers):
        with tempfile.TemporaryDirectory() as out:
            cache_activations(model, rows, layers, out, batch_size=args.batch_size, progress=False)

    runs = {"model(..., output_hidden_states=True)": plain,
            f"randsae cache, all {num_layers} blocks": lambda: cached(list(range(num_layers))),
            f"randsae cache, first {num_layers // 4} blocks": lambda: cached(list(range(num_layers // 4)))}
    plain()  # warm up
    medians = {}
    for name, run in runs.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    base = tokens / medians["model(..., output_hidden_states=True)"]
    print(f"\nResidual-stream caching, SmolLM2-135M, {tokens} tokens in batches of {args.batch_size} × "
          f"{args.context_length}, {torch.get_num_threads()} threads")
    print(f"| {'run':40} | {'median s':>9} | {'tokens/s':>9} | {'vs plain':>8} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    for name, seconds in medians.items():
        print(f"| {name:40} | {seconds:9.2f} | {tokens / seconds:9.0f} | {tokens / seconds / base:8.2f} |")


PEAK_RSS_SCRIPT = """
import resource, sys, tempfile, torch
from randsae.lm import load_model
from randsae.lm.activations import cache_activations
num_contexts, shard_contexts = int(sys.argv[1]), int(sys.argv[2])
model, _ = load_model("smollm2")
rows = torch.randint(0, 49152, (num_contexts, 256), generator=torch.Generator().manual_seed(0))
layers = list(range(model.config.num_hidden_layers))
with torch.no_grad():  # the working set of one forward pass through the blocks, nothing kept
    model.base_model(input_ids=rows[:8], use_cache=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as out:
    cache_activations(model, rows, layers, out, batch_size=8, shard_contexts=shard_contexts, progress=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def peak_rss_growth_mb(num_contexts: int, shard_contexts: int) -> float:
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(num_contexts), str(shard_contexts)],
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def memory_table(shard_contexts: int = 16) -> None:
    shard_mb = shard_contexts * 256 * 576 * 30 * 2 / 2**20
    print(f"\nPeak memory added by caching all 30 blocks (float16 shards of {shard_contexts} contexts "
          f"= {shard_mb:.0f} MB)")
    print(f"| {'tokens cached':>13} | {'peak RSS growth MB':>18} |")
    print(f"|{'-' * 15}|{'-' * 20}|")
    for num_contexts in (2 * shard_contexts, 8 * shard_contexts):
        growth = peak_rss_growth_mb(num_contexts, shard_contexts)
        print(f"| {num_contexts * 256:13d} | {growth:18.0f} |")


if __name__ == "__main__":
    main()
    memory_table()
