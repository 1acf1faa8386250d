"""`torchrun -m randsae baseline`: two CPU ranks (gloo) deal the study's units and each unit's layers between
them and give the tables one process gives; a rank killed inside a stage (SIGKILL, triggered by what the stage
writes) costs only its unfinished unit, and the rerun gives the uninterrupted tables."""

import json
import os
import subprocess
import sys

import pytest
from judges import ScriptedJudge

from randsae.io import read_rows
from randsae.study.stages import unit_stages

# the tiny model, two blocks, two arms (unit 0 on rank 0, unit 1 on rank 1), small example sets
COMMON = ["--preset", "demo", "--layers", "0,2", "--tokens", "8k", "--context-length", "64", "--k", "4",
          "--expansion", "4", "--min-examples", "5", "--sample", "2", "--max-examples", "50",
          "--explainer-examples", "6", "--test-examples", "10", "--quantiles", "5", "--non-activating", "10",
          "--eval-tokens", "512", "--calibration-windows", "4", "--device", "cpu", "--seed", "1",
          "--variants", "trained,control"]
TABLES = ("compare/results.csv", "compare/verdict.csv", "trained/eval/results.csv", "control/eval/results.csv",
          "trained/latents/latents.csv", "control/latents/latents.csv", "trained/probing/probing.csv",
          "control/probing/probing.csv", "compare/separation.csv")


@pytest.fixture(scope="module")
def judge():
    with ScriptedJudge("random", seed=2) as server:
        yield server


def command(tiny_dir, judge, out, *extra) -> list[str]:
    return ["-q", "baseline", "--model", str(tiny_dir), *COMMON, "--llm-url", judge.url, "--llm-model", "scripted",
            *extra, "--out", str(out)]


def run(args: list[str], ranks: int = 1, port: int = 0, kill: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANDSAE_TEST_KILL": kill}
    launcher = [sys.executable, "-m", "randsae"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port", str(port),
         "-m", "randsae"]
    return subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=900)


def same_tables(got, want) -> None:
    for name in TABLES:
        a, b = read_rows(got / name), read_rows(want / name)
        assert len(a) == len(b) > 0, name
        for row_a, row_b in zip(a, b, strict=True):
            for column, value in row_b.items():
                try:
                    assert float(row_a[column]) == pytest.approx(float(value), rel=1e-6, abs=1e-9), (name, column)
                except ValueError:
                    assert row_a[column] == value, (name, column)
    for unit in ("trained", "control"):
        assert (got / unit / "autointerp" / "scores.csv").read_text() == \
            (want / unit / "autointerp" / "scores.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["--cache", "--no-cache"])
def test_two_ranks_give_the_one_process_tables_and_a_killed_rank_costs_only_its_unit(tiny_dir, judge, tmp_path,
                                                                                     port, cache):
    one = tmp_path / "one"
    result = run(command(tiny_dir, judge, one, cache))
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    result = run(command(tiny_dir, judge, two, cache), ranks=2, port=port)
    assert result.returncode == 0, result.stderr[-3000:]
    same_tables(two, one)
    records = json.loads((two / "stages.json").read_text())
    assert all(r["status"] == "done" for r in records) and len(records) == 2 * len(unit_stages()) + 2
    if cache == "--no-cache":  # every layer from one shared pass: each rank trained its own layer's SAE
        saved = {layer: json.loads((two / "trained" / "sae" / f"layer.{layer}" / "cfg.json").read_text())
                 for layer in (0, 2)}
        assert all(cfg["d_in"] == 32 for cfg in saved.values())
        return
    # rank 1 owns the control arm: killed right after its eval writes its first file
    killed = tmp_path / "killed"
    result = run(command(tiny_dir, judge, killed, cache), ranks=2, port=port + 1, kill="control/eval")
    assert result.returncode != 0
    records = {(r["unit"], r["stage"]): r for r in json.loads((killed / "stages.json").read_text())}
    assert records["control", "eval"]["status"] == "running"
    finished = {key: r for key, r in records.items() if r["status"] == "done"}
    assert ("control", "train") in finished and ("trained", "train") in finished  # the shared work was kept
    result = run(command(tiny_dir, judge, killed, cache), ranks=2, port=port + 2)
    assert result.returncode == 0, result.stderr[-3000:]
    after = {(r["unit"], r["stage"]): r for r in json.loads((killed / "stages.json").read_text())}
    for key, record in finished.items():  # nothing that had finished ran again
        if key[0]:
            assert after[key] == record, key
    same_tables(killed, one)
