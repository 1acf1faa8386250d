"""One writer per output directory, signals, divergence and quiet runs: what a run promises about its
directory beyond its numbers."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from randsae.cli.common import LOCK_FILE
from randsae.io import read_rows

TINY = ["--latents", "16", "--l1", "0.01,1", "--seeds", "1", "--num-samples", "300", "--num-inputs", "8",
        "--num-features", "16", "--no-plots"]


def randsae(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "randsae", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def start_long_toy(out: Path) -> subprocess.Popen:
    """A toy sweep that runs for minutes, returned once it holds its directory."""
    process = subprocess.Popen([sys.executable, "-m", "randsae", "-q", "toy", *TINY, "--epochs", "100000",
                                "--out", str(out)], stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if (out / LOCK_FILE).exists():
            return process
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.1)
    raise AssertionError("the first run never took its directory")


@pytest.mark.slow
def test_a_second_run_into_a_directory_in_use_is_refused_and_kill_9_releases_it(tmp_path):
    out = tmp_path / "run"
    first = start_long_toy(out)
    try:
        second = randsae("toy", *TINY, "--epochs", "1", "--out", str(out))
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"{out} is in use by another randsae run; wait for it to finish or choose another --out."]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / LOCK_FILE).exists()  # left behind by kill -9, but no longer held
    third = randsae("-q", "toy", *TINY, "--epochs", "1", "--out", str(out))
    assert third.returncode == 0, third.stderr
    assert len(read_rows(out / "results.csv")) == 8
    assert not (out / LOCK_FILE).exists()  # a run that ends normally removes it


@pytest.mark.slow
def test_other_commands_share_the_lock(tmp_path):
    out = tmp_path / "run"
    first = start_long_toy(out)
    try:
        for args in (["toy2d", "--num-samples", "100", "--out", str(out)],
                     ["lm", "compare", str(tmp_path / "elsewhere"), "--out", str(out)]):
            result = randsae(*args)
            assert result.returncode == 2 and "is in use by another randsae run" in result.stderr
    finally:
        first.kill()
        first.wait()


def test_sigterm_is_one_sentence_and_exit_143(tmp_path):
    process = start_long_toy(tmp_path / "run")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines() == ["randsae: terminated (SIGTERM); finished rows are kept, rerun to resume."]
    assert not (tmp_path / "run").exists()  # it had written nothing: the directory it made is gone


@pytest.mark.slow
def test_diverged_saes_are_recorded_as_such_and_retried_not_skipped(tmp_path):
    out = tmp_path / "run"
    first = randsae("-q", "toy", *TINY, "--epochs", "2", "--lr", "1e30", "--out", str(out))
    assert first.returncode == 0
    rows = read_rows(out / "results.csv")
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert diverged and all(r["status"] in ("ok", "diverged") for r in rows)
    assert all(r["fvu"] == "nan" or r["l1"] == "nan" for r in diverged)
    assert "diverged" in first.stderr
    again = randsae("toy", *TINY, "--epochs", "2", "--lr", "1e30", "--out", str(out))
    assert again.returncode == 0
    assert f"{len(diverged)} SAEs in {out / 'results.csv'} diverged in an earlier run; training them again" \
        in again.stderr
    assert len(read_rows(out / "results.csv")) == len(rows)  # retried in place, not duplicated


def test_quiet_runs_print_nothing(tiny_dir, tmp_path):
    result = randsae("-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "1k", "--context-length",
                     "64", "--layers", "1", "--out", str(tmp_path / "acts"),
                     env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_a_full_disk_is_one_sentence_naming_the_directory(tmp_path, monkeypatch, capsys):
    """ENOSPC cannot be provoked portably; the write of the results table raises it here (a test double
    at the operating system's edge), after the run's SAEs were trained for real."""
    import errno

    from randsae import io
    from randsae.cli import main

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "write_rows", full)  # every results table is written through it
    assert main(["-q", "toy", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"randsae: error: no space left on the device writing {tmp_path / 'run'}; finished files are "
                   "kept, free space and rerun to resume."]


@pytest.mark.slow
def test_a_diverging_topk_run_says_so_and_leaves_no_trace(tiny_dir, tmp_path):
    from randsae.cli import main

    acts = tmp_path / "acts"
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "2k", "--context-length", "64",
                 "--layers", "1", "--out", str(acts)]) == 0
    result = randsae("-q", "lm", "train", "--acts", str(acts), "--k", "4", "--expansion", "2", "--batch-size",
                     "256", "--lr", "1e30", "--warmup-steps", "0", "--out", str(tmp_path / "sae"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"randsae: error: the SAE diverged at step \d+ \(its loss is not "
                                            r"finite\); nothing of it was saved: lower --lr and rerun\.", lines[0])
    assert not (tmp_path / "sae").exists()


def test_a_cache_from_before_blocks_were_recorded_still_resumes(tiny_dir, tmp_path):
    import json

    from randsae.cli import main

    args = ["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "1k", "--context-length", "64",
            "--layers", "1", "--out", str(tmp_path / "acts")]
    assert main(args) == 0
    manifest = tmp_path / "acts" / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["blocks_module"]
    manifest.write_text(json.dumps(old))
    assert main(args) == 0  # resumed (nothing left to do), not refused as "other settings"
