import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from randsae.experiments.sweep import COLUMNS, read_results
from randsae.experiments.toy import ToyConfig, run_toy
from randsae.io import read_rows

SMALL = dict(latents=[16, 32], l1=[0.01, 1.0], seeds=2, epochs=2, num_samples=400, num_inputs=12,
             num_features=24, avg_active_features=3)


def test_grid_rows_columns_and_mmcs_only_on_raw_toy_data(tmp_path):
    rows = run_toy(ToyConfig(**SMALL), tmp_path, progress=False)
    assert len(rows) == 2 * 2 * 2 * 2 * 2
    with open(tmp_path / "results.csv") as f:
        assert next(csv.reader(f)) == COLUMNS
    table = read_results(tmp_path / "results.csv")
    assert len({r.key for r in table}) == len(table) == 32 and table == sorted(rows, key=lambda r: r.key) or \
        {r.key: r for r in table} == {r.key: r for r in rows}  # read back as written, field for field
    for r in table:
        assert (r.mmcs is not None) == (r.data == "sharkey" and r.transform == "none")
        assert 0 <= r.dead_fraction <= 1 and r.status == "ok"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["epochs"] == 2 and config["l1"] == [0.01, 1.0]


def test_same_seed_same_numbers(tmp_path):
    config = ToyConfig(**{**SMALL, "seeds": 1, "data": ["sharkey"], "transform": ["mlp"]})
    a = run_toy(config, tmp_path / "a", progress=False)
    b = run_toy(config, tmp_path / "b", progress=False)
    assert [r.fvu for r in a] == [r.fvu for r in b]


def test_rerun_skips_finished_rows_and_extends_the_grid(tmp_path):
    config = ToyConfig(**{**SMALL, "seeds": 1, "data": ["sharkey"], "transform": ["none"]})
    first = run_toy(config, tmp_path, progress=False)
    stamp = (tmp_path / "results.csv").stat().st_mtime_ns
    again = run_toy(config, tmp_path, progress=False)
    assert len(again) == len(first) and (tmp_path / "results.csv").stat().st_mtime_ns == stamp
    wider = ToyConfig(**{**SMALL, "seeds": 1, "data": ["sharkey"], "transform": ["none"],
                         "l1": [0.01, 0.1, 1.0]})
    rows = run_toy(wider, tmp_path, progress=False)
    assert len(rows) == 6 and len({r.key for r in rows}) == 6
    # the resumed SAE of a finished coefficient kept its numbers
    old = {r.key: r.fvu for r in first}
    new = {r.key: r.fvu for r in read_results(tmp_path / "results.csv")}
    assert all(new[k] == v for k, v in old.items())


def test_refuses_to_mix_settings_in_one_table(tmp_path):
    run_toy(ToyConfig(**{**SMALL, "seeds": 1, "data": ["gaussian"], "transform": ["none"]}), tmp_path,
            progress=False)
    before = (tmp_path / "results.csv").read_bytes()
    with pytest.raises(ValueError, match="lr"):
        run_toy(ToyConfig(**{**SMALL, "lr": 0.01}), tmp_path, progress=False)
    assert (tmp_path / "results.csv").read_bytes() == before


@pytest.mark.parametrize("bad", [{"data": ["glove2"]}, {"epochs": -1}, {"latents": [0]},
                                 {"l1": [float("nan")]}, {"val_fraction": 1.5}, {"device": "tpu"}])
def test_nonsensical_configs_are_refused(bad):
    with pytest.raises(ValueError):
        ToyConfig(**bad)


@pytest.mark.slow
def test_killed_run_loses_only_the_stack_in_flight(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "randsae", "-q", "toy", "--out", str(out), "--data", "sharkey,gaussian",
            "--transform", "none,mlp", "--latents", "64", "--l1", "0.01,0.1", "--seeds", "3",
            "--epochs", "30", "--num-samples", "2000", "--no-plots"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table = out / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (table.exists() and len(read_rows(table)) >= 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_rows(table)
    table_before = tmp_path / "partial.csv"
    table_before.write_bytes(table.read_bytes())
    assert 4 <= len(partial) < 24, "the run should have been killed part-way"
    finished = subprocess.run(args, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    rows = read_results(table)
    assert len(rows) == 24 and len({r.key for r in rows}) == 24
    kept = {r.key: r for r in read_results(table_before)}
    assert all(kept[k] == r for r in rows if (k := r.key) in kept)
