"""`make bench`, part 6: the independent-feature toy's training throughput against `lm train`'s trainer on the
same shape (Korznikov et al.'s: 100 inputs → 3,200 latents, k = 20).

- `lm train`'s trainer: `TopKTrainer` stepping over batches already in memory (as it reads an activation cache).
- `randsae recovery`: the same trainer on `independent.Stream`, a fresh batch drawn for every step.
- `toy --k 20` (before the stream): the same trainer over a fixed set, batch 256, rows gathered per step.

Samples/s is the median over timed steps; GFLOP/s counts 6 × d × latents per sample (the plan's convention for
SAE training: the encoder's forward and backward). The architectures' rows are the recovery loop's.
"""

import argparse
import statistics
import time

import torch

from randsae.data.independent import Stream
from randsae.training.trainer import ARCHITECTURES, TopKTrainConfig, TopKTrainer


def trainer(architecture: str, d: int, latents: int, k: int, batch: int) -> TopKTrainer:
    widths = [latents // 2, latents * 4 // 5, latents] if architecture == "matryoshka" else None
    config = TopKTrainConfig(k=k, batch_size=batch, architecture=architecture, target_l0=k,
                             matryoshka_widths=widths)
    return TopKTrainer(config.new_sae(d, 0, seed=0, latents=latents), config, total_steps=10_000)


def median_seconds(step, steps: int) -> float:
    step(0)  # the first step sets the decoder bias and thresholds
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--latents", type=int, default=3200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--batch-sizes", default="256,1024,4096")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per row")
    args = parser.parse_args()
    d, latents, k = args.d, args.latents, args.k
    flops = 6 * d * latents
    stream = Stream(d, latents, k, 1.0, 0.5, seed=0)
    print(f"\nSAE training on the independent-feature toy's shape: {d} → {latents:,} latents, k = {k}, "
          f"{torch.get_num_threads()} threads; median over {args.steps} steps; GFLOP/s at 6·d·L per sample")
    print(f"{'loop':>38} {'batch':>6} {'samples/s':>11} {'GFLOP/s':>8} {'vs lm train':>11}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        fixed = [stream.batch(i, batch) for i in range(args.steps + 1)]
        lm = trainer("topk", d, latents, k, batch)
        base = batch / median_seconds(lambda i, t=lm, f=fixed: t.step(f[i]), args.steps)
        toy = trainer("topk", d, latents, k, batch)
        streamed = batch / median_seconds(lambda i, t=toy, b=batch: t.step(stream.batch(i, b)), args.steps)
        rows = [("lm train's trainer (batches in memory)", base), ("recovery (a fresh batch a step)", streamed)]
        if batch == 256:
            pool = torch.cat(fixed)
            old = trainer("topk", d, latents, k, batch)
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
            rate = batch / median_seconds(lambda i, t=old, p=pool, o=order: t.step(p[o[i * 256:(i + 1) * 256]]),
                                          args.steps)
            rows.append(("toy --k (a fixed set, rows gathered)", rate))
        for name, rate in rows:
            print(f"{name:>38} {batch:>6} {rate:>11,.0f} {rate * flops / 1e9:>8.1f} {rate / base:>10.2f}×")
    batch = 1024
    print(f"\nEvery architecture in the recovery loop, batch {batch}: the training forward from the kept entries "
          "(randsae) against the dense reference (`forward_dense`: the B × latents matrix in the graph)")
    print(f"{'architecture':>14} {'batch':>6} {'dense/s':>9} {'randsae/s':>10} {'GFLOP/s':>8} {'vs dense':>9} "
          f"{'vs topk':>8}")
    rates = {}
    for architecture in ARCHITECTURES:
        measured = []
        for dense in (True, False):
            t = trainer(architecture, d, latents, k, batch)
            if dense:
                t.model = t.sae.forward_dense
            measured.append(batch / median_seconds(lambda i, t=t: t.step(stream.batch(i, batch)), args.steps))
        rates[architecture] = measured[1]
        print(f"{architecture:>14} {batch:>6} {measured[0]:>9,.0f} {measured[1]:>10,.0f} "
              f"{measured[1] * flops / 1e9:>8.1f} {measured[1] / measured[0]:>8.2f}× "
              f"{measured[1] / rates['topk']:>7.2f}×")


if __name__ == "__main__":
    main()
