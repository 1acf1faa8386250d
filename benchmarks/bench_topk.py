"""`make bench`, part 3: TopK SAE training throughput — randsae's step against its dense reference and against
EleutherAI sparsify's, same shape, same batches, same run.

The embedded model's width: d = 576, k = 32, 16 × 576 = 9,216 and 64 × 576 = 36,864 latents (the paper's). The
dense and sparse runs use randsae's trainer (FVU loss, decoder-gradient projection, unit-norm decoder rows, fused
Adam) and differ only in the forward pass: randsae's (encoder rows gathered for the k kept latents,
embedding-bag decode) against `TopKSAE.forward_dense` (the full latent matrix and a dense decoder product). The
randsae-recipe column trains under `--recipe randsae` with a tenth of the latents held dead, so that its AuxK
loss is paid every step (a healthy run pays it only while latents are dead). sparsify's step is its
`SparseCoder` forward, backward, gradient projection, Adam and renormalisation. Tokens/s is the median over the
timed steps; the ratio is the randsae recipe's against sparsify's.
"""

import argparse
import statistics
import time

import torch

from randsae.sae.topk import TopKSAE
from randsae.training.trainer import TopKTrainConfig, TopKTrainer


def sparsify_step(d: int, latents: int, k: int, device: torch.device):
    """One training step of sparsify's SparseCoder (None where sparsify is not installed)."""
    try:
        from sparsify import SaeConfig, SparseCoder
    except ImportError:
        return None
    sae = SparseCoder(d, SaeConfig(num_latents=latents, k=k), device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-4)

    def step(x: torch.Tensor) -> None:
        sae(x).fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sae.set_decoder_norm_to_unit_norm()
    return step


class HeldDead:
    """A trainer whose first tenth of latents counts as dead at every step (AuxK paid each step)."""

    def __init__(self, trainer: TopKTrainer):
        self.trainer = trainer

    def step(self, x: torch.Tensor) -> None:
        self.trainer.tokens_since_fired[: self.trainer.sae.num_latents // 10] = self.trainer.hyper.dead_tokens
        self.trainer.step(x)


def tokens_per_second(trainer, batches: list[torch.Tensor], warmup: int) -> float:
    """Median tokens/s of `trainer` (anything with `step(x)`, or a step function) over the batches after
    `warmup`."""
    step = trainer if callable(trainer) else trainer.step
    for batch in batches[:warmup]:
        step(batch)
    times = []
    for batch in batches[warmup:]:
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    return len(batches[0]) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--expansions", default="16,64", help="latents per input dimension")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096, help="tokens per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"\nTopK SAE training, d = {args.d}, k = {args.k}, batch {args.batch_size:,}, {device}, "
          f"{torch.get_num_threads()} threads; median tokens/s over {args.steps} steps")
    print(f"{'latents':>8} {'dense':>9} {'randsae':>9} {'recipe':>9} {'sparsify':>9} {'recipe/sparsify':>16}")
    for expansion in (int(e) for e in args.expansions.split(",")):
        latents = expansion * args.d
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch_size, args.d, generator=gen).to(device) for _ in range(args.steps + 1)]
        paper = TopKTrainConfig(k=args.k, expansion=expansion, batch_size=args.batch_size, recipe="sparsify")
        ours = TopKTrainConfig(k=args.k, expansion=expansion, batch_size=args.batch_size)
        dense_sae = TopKSAE(args.d, latents, args.k).to(device)
        dense = TopKTrainer(dense_sae, paper)
        dense.model = dense_sae.forward_dense
        rates = {"dense": tokens_per_second(dense, batches, warmup=1)}
        del dense, dense_sae
        rates["randsae"] = tokens_per_second(TopKTrainer(TopKSAE(args.d, latents, args.k).to(device), paper),
                                             batches, warmup=1)
        recipe = HeldDead(TopKTrainer(TopKSAE(args.d, latents, args.k).to(device), ours, total_steps=10_000))
        rates["recipe"] = tokens_per_second(recipe, batches, warmup=1)
        step = sparsify_step(args.d, latents, args.k, device)
        rates["sparsify"] = tokens_per_second(step, batches, warmup=1) if step is not None else float("nan")
        ratio = f"{rates['recipe'] / rates['sparsify']:.2f}×" if step is not None else "not installed"
        names = ("dense", "randsae", "recipe", "sparsify")
        print(f"{latents:>8,} " + " ".join(f"{rates[n]:>9,.0f}" for n in names)
              + f" {ratio:>16}")


if __name__ == "__main__":
    main()
