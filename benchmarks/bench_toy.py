"""`make bench`: the toy pipeline against the way the authors' code does the same work, same run.

1. The Sharkey generator (10,000 × 256 × 512) against a plain transcription of Figure 21's loop.
2. Sweep throughput in SAE-epochs/s: randsae's batched sweep of one dictionary size (all coefficients
   as one stack, data made once) against one SAE at a time (benchmarks/one_at_a_time.py). The baseline
   is linear in the number of SAEs, so it trains a few of the coefficients, at the same epochs.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from one_at_a_time import train_one  # noqa: E402

from randsae.config import resolve_device  # noqa: E402
from randsae.data import sharkey  # noqa: E402
from randsae.sae.relu import ReluSAE  # noqa: E402
from randsae.training.toy import train_relu_saes  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def batched_sweep(coefs: list[float], num_latents: int, epochs: int, device: torch.device) -> float:
    start = time.perf_counter()
    data = sharkey.generate(10_000, seed=0).samples
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    train = data[order[1000:]].to(device)
    sae = ReluSAE(data.shape[1], num_latents, num_saes=len(coefs), seed=0).to(device)
    train_relu_saes(sae, train, coefs, epochs=epochs, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--latents", type=int, default=512)
    parser.add_argument("--coefs", type=int, default=21, help="coefficients in the batched sweep")
    parser.add_argument("--baseline-saes", type=int, default=3, help="SAEs the baseline trains")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of each sweep measurement")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    fast = timed(lambda: sharkey.generate(10_000, seed=0), 7)
    loop = timed(lambda: sharkey.generate_reference(10_000, seed=0), 3)
    data = sharkey.generate(10_000, seed=0)
    active = (data.coefficients != 0).float()
    print("\nSharkey generator, 10,000 × 256 × 512 (median seconds)")
    print(f"| {'implementation':32} | {'median s':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 10}|")
    print(f"| {'Figure 21 loop':32} | {statistics.median(loop):9.3f} | {1:8.1f} |")
    print(f"| {'randsae.data.sharkey.generate':32} | {statistics.median(fast):9.3f} | "
          f"{statistics.median(loop) / statistics.median(fast):8.1f} |")
    print(f"mean active features {active.sum(1).mean():.3f}; feature 0 fires "
          f"{active[:, 0].mean() / active[:, 1:].mean():.2f}× as often as the others")

    coefs = np.logspace(-3, 2, args.coefs).tolist()
    baseline_coefs = coefs[:: max(1, len(coefs) // args.baseline_saes)][: args.baseline_saes]
    batched = [batched_sweep(coefs, args.latents, args.epochs, device) for _ in range(args.repeats)]
    single = [train_one(c, seed=0, num_latents=args.latents, epochs=args.epochs, device=str(device))
              for c in baseline_coefs for _ in range(args.repeats)]
    batched_rate = len(coefs) * args.epochs / statistics.median(batched)
    single_rate = args.epochs / statistics.median(single)
    print(f"\nSweep throughput, {args.latents} latents, {args.epochs} epochs, 10,000 samples, batch 256")
    print(f"| {'trainer':44} | {'median s':>9} | {'SAE-epochs/s':>12} | {'ratio':>6} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 14}|{'-' * 8}|")
    print(f"| {'one at a time (Fig. 21 data, DataLoader), 1 SAE':44} | {statistics.median(single):9.2f} | "
          f"{single_rate:12.2f} | {1:6.2f} |")
    print(f"| {f'randsae batched, {len(coefs)} SAEs in one stack':44} | {statistics.median(batched):9.2f} | "
          f"{batched_rate:12.2f} | {batched_rate / single_rate:6.2f} |")


if __name__ == "__main__":
    main()
