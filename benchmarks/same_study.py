"""Does a change leave the study's outputs as they were? Runs the tiny study (the tiny Llama of the tests, its
every stage, probing and absorption beside a scripted judge) with the code of a base commit and with the working
tree, into the same path, and compares every file the two wrote, leaving out only what differs between any two
runs: provenance (commit, command line with the judge's port, time written), seconds and measured rates, free
memory and disk, and the order the judge's concurrent answers were logged in. Not part of `make bench`: a
refactor's check (`python benchmarks/same_study.py BASE [KEEP]`); prints the files that differ and exits 1 if any
do."""

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"commit", "command_line", "written", "time", "url", "llm_url", "device_memory", "disk_free"}
STUDY = """
import sys
from pathlib import Path

import torch
from judges import ScriptedJudge
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from randsae.cli import main
from randsae.lm.models import converted_gguf, embedded_gguf

root = Path(sys.argv[1])
tiny = root / "tiny"
if not tiny.exists():  # the tests' tiny model (tests/conftest.py)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tiny)
    AutoTokenizer.from_pretrained(converted_gguf(embedded_gguf("smollm2"))).save_pretrained(tiny)
torch.manual_seed(1234)
with ScriptedJudge("random", seed=2) as judge:
    sys.exit(main([
        "-q", "baseline", "--model", str(tiny), "--preset", "demo", "--layers", "0,2", "--tokens", "8k",
        "--context-length", "64", "--k", "4", "--expansion", "4", "--min-examples", "5", "--sample", "2",
        "--max-examples", "50", "--explainer-examples", "6", "--test-examples", "10", "--quantiles", "5",
        "--non-activating", "10", "--eval-tokens", "512", "--calibration-windows", "4", "--device", "cpu",
        "--seed", "1", "--scorers", "tokens,fuzzing,probing,absorption", "--probe-min-examples", "5",
        "--llm-url", judge.url, "--llm-model", "scripted", "--out", str(root / "out")]))
"""


def scrub(value):
    """A JSON value without what varies between runs."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()
                if k not in VOLATILE and "second" not in k and "rate" not in k and not k.endswith("_s")}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def scrub_text(text: str) -> str:
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"[0-9a-f]{40}(\+changes)?", "COMMIT", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+0-9:]*", "TIME", text)
    text = re.sub(r"[\d.]+ (s|min|h|GFLOP/s|MB/s|ms)\b", r"N \1", text)
    text = re.sub(r"[\d.]+ GB (memory|free disk)", r"N GB \1", text)
    text = re.sub(r"\| [\d.]+ (B|KB|MB) \|\n", "| N |\n", text)  # disk written: its config.json names the port
    text = re.sub(r"<td>[\d.]+ (B|KB|MB)</td>", "<td>N</td>", text)
    text = re.sub(r"<td>\d+\.\d\d</td>", "<td>R</td>", text)  # took / planned
    return re.sub(r"\| \d+\.\d\d \|", "| R |", text)


def normal(path: Path):
    raw = path.read_bytes()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return raw
    if path.suffix == ".json":
        return json.dumps(scrub(json.loads(text)), sort_keys=True)
    if path.suffix == ".jsonl":  # the call log: concurrent answers, logged as they come
        return sorted(json.dumps(scrub(json.loads(line)), sort_keys=True) for line in text.splitlines() if line)
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        keep = [i for i, h in enumerate(rows[0] if rows else []) if "second" not in h and h != "basis"]
        return [[r[i] for i in keep if i < len(r)] for r in rows]
    return scrub_text(text)


def run(source: Path, root: Path) -> Path:
    """The tiny study with `source`'s code, written under `root`; moved aside so the next runs in the same path."""
    subprocess.run([sys.executable, "-c", STUDY, str(root)], check=True, cwd=source,
                   env={"PYTHONPATH": f"{source / 'src'}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin",
                        "HOME": str(Path.home())})
    kept = root.with_name(root.name + "-" + source.name)
    shutil.move(root / "out", kept)
    return kept


def main(base: str, keep: str | None = None) -> int:
    """`keep`: a directory to keep both studies' outputs in (study-base, study-main), to look at what differs."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(keep) if keep else Path(work)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(work / "base"), base], check=True, cwd=ROOT,
                       capture_output=True)
        try:
            before = run(work / "base", work / "study")
            after = run(ROOT, work / "study")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "base")], cwd=ROOT)
        files = sorted(str(p.relative_to(before)) for p in before.rglob("*") if p.is_file())
        others = sorted(str(p.relative_to(after)) for p in after.rglob("*") if p.is_file())
        differ = [f for f in files if f in others and normal(before / f) != normal(after / f)]
        print(f"{len(files)} files at {base}, {len(others)} with the working tree; only at one: "
              f"{sorted(set(files) ^ set(others)) or 'none'}; differ: {differ or 'none'}")
        return 1 if differ or set(files) != set(others) else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]) if len(sys.argv) > 1 else main("HEAD"))
