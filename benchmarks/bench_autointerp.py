"""`make bench`, part 5: scoring windows with an LLM judge.

1. Local judge, the embedded SmolLM2-135M-Instruct, same machine, same run, same windows (real latent-like
   windows from the known-answer set, fuzzing):
   - baseline, a delphi-style loop: one prompt of 5 windows at a time, the answer list generated greedily
     (`generate`, scores kept) and P(1) read from each list element;
   - randsae's local judge: the prefix (instructions + explanation) run once, every window a short suffix
     against it, in batches; P(1) read from the logits at the answer position, nothing generated.
   Scored windows per second, median of `--repeats`, and the ratio.
2. The `openai` judge against a loopback server that takes 200 ms per request (the scripted judge of the
   tests, real HTTP): `--concurrency 1` against `--concurrency 32`, same prompts. Windows per second.
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from judges import ScriptedJudge  # noqa: E402  (the loopback test judge)

from randsae.autointerp import prompts  # noqa: E402
from randsae.autointerp.calibration import known_answer_set  # noqa: E402
from randsae.autointerp.clients.base import CallLog  # noqa: E402
from randsae.autointerp.clients.local import LocalJudge, chat_text  # noqa: E402
from randsae.autointerp.clients.openai import OpenAIJudge  # noqa: E402
from randsae.autointerp.scorers import scoring_set  # noqa: E402


def windows(count: int, per_class: int = 100) -> list[tuple[str, prompts.Shown]]:
    """(explanation, window) of the known latents, each latent's `2 × per_class` windows together (the
    paper's set: 100 activating, 100 silent)."""
    sets, explanations, decode = known_answer_set(per_class, seed=0)
    out = []
    for s, e in zip(sets, explanations, strict=True):
        out += [(e, w) for w in scoring_set(s, decode, 0).shown]
    return out[:count]


def delphi_style(judge: LocalJudge, items: list[tuple[str, prompts.Shown]]) -> int:
    """One prompt of five windows at a time, the answer generated; returns windows scored."""
    scored = 0
    zero, one = judge.digits["0"], judge.digits["1"]
    for start in range(0, len(items), 5):
        group = items[start:start + 5]
        messages = prompts.judge_messages("fuzzing", group[0][0], [w for _, w in group])
        ids = torch.tensor([judge._encode(chat_text(judge.tokenizer, messages))])
        with torch.no_grad():
            out = judge.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4 * len(group) + 8,
                                       do_sample=False, output_scores=True, return_dict_in_generate=True,
                                       pad_token_id=judge.tokenizer.pad_token_id)
        for step, token in zip(out.scores, out.sequences[0, ids.shape[1]:], strict=False):
            if token.item() in zero + one:
                p = torch.softmax(step[0].float(), -1)
                _ = p[one].sum() / (p[zero].sum() + p[one].sum())
                scored += 1
    return scored


def local_randsae(judge: LocalJudge, items: list[tuple[str, prompts.Shown]]) -> int:
    by_explanation: dict[str, list[prompts.Shown]] = {}
    for e, w in items:
        by_explanation.setdefault(e, []).append(w)
    for e, ws in by_explanation.items():
        prefix, template = judge.split("fuzzing", e, "delphi")
        judge.p_one(prefix, [template.replace("\u2063RANDSAE-WINDOW\u2063", prompts.excerpt(w, "fuzzing"))
                             for w in ws])
    return len(items)


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def http(concurrency: int, url: str, items: list[tuple[str, prompts.Shown]]) -> float:
    async def run():
        judge = OpenAIJudge(url, "scripted", log=CallLog(), concurrency=concurrency, timeout=30, retries=0)
        try:
            started = time.perf_counter()
            by_explanation: dict[str, list[prompts.Shown]] = {}
            for e, w in items:
                by_explanation.setdefault(e, []).append(w)
            await asyncio.gather(*(judge.judge("fuzzing", e, ws) for e, ws in by_explanation.items()))
            return time.perf_counter() - started
        finally:
            await judge.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--windows", type=int, default=200,
                        help="windows scored by randsae's local judge (default 200: one latent's two sets)")
    parser.add_argument("--baseline-windows", type=int, default=100, help="windows scored by the baseline")
    parser.add_argument("--http-windows", type=int, default=320, help="windows sent to the loopback judge")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    items = windows(max(args.windows, args.baseline_windows, args.http_windows))
    judge = LocalJudge("smollm2", device="cpu", batch_size=32)
    local, few = items[:args.windows], items[:args.baseline_windows]
    local_randsae(judge, local[:10])  # warm-up
    base = timed(lambda: delphi_style(judge, few), args.repeats) / len(few)
    ours = timed(lambda: local_randsae(judge, local), args.repeats) / len(local)
    print(f"\nLocal judge, SmolLM2-135M-Instruct on {torch.get_num_threads()} CPU threads, fuzzing windows of one "
          f"latent (baseline {len(few)}, randsae {len(local)}), median of {args.repeats}")
    print(f"| {'method':58} | {'windows/s':>9} | {'vs baseline':>11} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 13}|")
    print(f"| {'baseline: delphi-style, 5 per prompt, answer generated':58} | {1 / base:9.2f} | {1.0:11.2f} |")
    print(f"| {'randsae local: prefix once, batched suffixes, no generation':58} | {1 / ours:9.2f} | "
          f"{base / ours:11.2f} |")
    fast = LocalJudge("smollm2", device="cpu", batch_size=32, dtype="bfloat16")
    local_randsae(fast, local[:10])
    ours_bf16 = timed(lambda: local_randsae(fast, local), args.repeats) / len(local)
    print(f"| {'randsae local, --judge-dtype bfloat16 (other numerics)':58} | {1 / ours_bf16:9.2f} | "
          f"{base / ours_bf16:11.2f} |")
    print("(both float32 unless named; the baseline generates at most 4 × 5 + 8 tokens, the least a list of five "
          "needs)")

    remote = items[:args.http_windows]
    with ScriptedJudge("random", latency=0.2) as server:
        seconds = {c: statistics.median(http(c, server.url, remote) for _ in range(args.repeats))
                   for c in (1, 32)}
    print(f"\nopenai judge against a loopback server answering in 200 ms, {len(remote)} windows in prompts of 5, "
          f"median of {args.repeats}")
    print(f"| {'concurrency':58} | {'windows/s':>9} | {'vs sequential':>13} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 15}|")
    for c, s in seconds.items():
        print(f"| {c:<58} | {len(remote) / s:9.1f} | {seconds[1] / s:13.1f} |")


if __name__ == "__main__":
    main()
