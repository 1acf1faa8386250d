"""`make bench`, part 3: TopK SAE training throughput, sparse against dense, same SAE, same batches.

The paper's SAE on the embedded model's width: d = 576, 64 × 576 = 36,864 latents, k = 32. Both runs use
randsae's trainer (FVU loss, decoder-gradient projection, unit-norm decoder rows, fused Adam); they differ
only in the forward pass: randsae's (encoder rows gathered for the k kept latents, embedding-bag decode)
against `TopKSAE.forward_dense` (the full latent matrix and a dense decoder product, as autograd
differentiates them). Tokens/s is the median over the timed steps.
"""

import argparse
import statistics
import time

import torch

from randsae.sae.topk import TopKSAE
from randsae.training.trainer import TopKTrainConfig, TopKTrainer


def tokens_per_second(trainer: TopKTrainer, batches: list[torch.Tensor], warmup: int) -> float:
    for batch in batches[:warmup]:
        trainer.step(batch)
    times = []
    for batch in batches[warmup:]:
        start = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - start)
    return len(batches[0]) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--expansion", type=int, default=64)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1024,4096", help="tokens per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    latents = args.expansion * args.d
    print(f"\nTopK SAE training, d = {args.d}, {latents} latents, k = {args.k}, {device}, "
          f"{torch.get_num_threads()} threads; median tokens/s over {args.steps} steps")
    print(f"{'batch (tokens)':>15} {'dense':>12} {'randsae':>12} {'ratio':>7}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(batch_size, args.d, generator=gen).to(device) for _ in range(args.steps + 1)]
        config = TopKTrainConfig(k=args.k, expansion=args.expansion, batch_size=batch_size)
        sparse = TopKTrainer(TopKSAE(args.d, latents, args.k).to(device), config)
        dense_sae = TopKSAE(args.d, latents, args.k).to(device)
        dense = TopKTrainer(dense_sae, config)
        dense.model = dense_sae.forward_dense
        rate_dense = tokens_per_second(dense, batches, warmup=1)
        rate_sparse = tokens_per_second(sparse, batches, warmup=1)
        print(f"{batch_size:>15} {rate_dense:>12,.0f} {rate_sparse:>12,.0f} {rate_sparse / rate_dense:>6.2f}×")


if __name__ == "__main__":
    main()
