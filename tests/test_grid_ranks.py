"""The toy grid split across ranks under torchrun: each rank trains its share of the stacks, rank 0 merges the
tables; the result equals a single process's, row for row; a killed rank loses only its stack in flight."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from randsae.cli import main
from randsae.experiments.sweep import read_all_results, read_results

GRID = ["toy", "--data", "sharkey,gaussian", "--transform", "none,mlp", "--latents", "16,32", "--l1", "0.01,0.1",
        "--seeds", "1", "--epochs", "2", "--num-samples", "400", "--num-inputs", "8", "--num-features", "16",
        "--device", "cpu", "--no-plots", "-q"]


def by_key(rows):
    return {r.key: r for r in rows}


def torchrun(args, out, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(port), "-m", "randsae", *args, "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_two_ranks_give_the_single_process_table(tmp_path, port):
    torch.set_num_threads(1)  # the ranks run one thread each: the same arithmetic
    assert main([*GRID, "--out", str(tmp_path / "one")]) == 0
    result = torchrun(GRID, tmp_path / "two", port)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = by_key(read_results(tmp_path / "one" / "results.csv")), by_key(read_results(tmp_path / "two" /
                                                                                            "results.csv"))
    assert len(one) == 2 * 2 * 2 * 2 == len(two) and one.keys() == two.keys()
    for key, row in one.items():
        for column in ("fvu", "l0", "mmcs", "hoyer"):
            if row.get(column) is not None:
                assert row.get(column) == two[key].get(column), (key, column)
    assert not list((tmp_path / "two").glob("results.rank*.csv"))


def test_rank_tables_left_by_a_killed_run_are_kept(tmp_path):
    """A run killed before the merge leaves each rank's finished stacks in results.rank<r>.csv; the rerun (here
    one process) reads them, trains only what is missing and merges."""
    torch.set_num_threads(1)
    out = tmp_path / "grid"
    assert main([*GRID, "--out", str(out)]) == 0
    rows = read_results(out / "results.csv")
    # as if rank 1 had finished two stacks and rank 0 one, then both were killed
    from randsae.tables import SweepRow, write_table

    keys = sorted({r.key[:4] for r in rows})
    write_table(out / "results.rank1.csv", [r for r in rows if r.key[:4] in keys[:2]], SweepRow)
    write_table(out / "results.rank0.csv", [r for r in rows if r.key[:4] == keys[2]], SweepRow)
    (out / "results.csv").unlink()
    assert len(read_all_results(out)) == 3 * 2
    assert main([*GRID, "--out", str(out)]) == 0
    again = by_key(read_results(out / "results.csv"))
    assert again.keys() == by_key(rows).keys()
    for key, row in by_key(rows).items():
        assert again[key].fvu == row.fvu


def test_a_killed_torchrun_grid_keeps_its_finished_stacks(tmp_path, port):
    """SIGKILL to every rank once a rank table holds a stack: the rerun (one process) trains only the stacks
    that were not finished and gives the uninterrupted table."""
    import signal
    import time

    torch.set_num_threads(1)
    grid = list(GRID)
    grid[grid.index("--epochs") + 1] = "40"  # long enough to be killed midway
    assert main([*grid, "--out", str(tmp_path / "one")]) == 0
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                            "--master-port", str(port), "-m", "randsae", *grid, "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(p.stat().st_size > 0 for p in out.glob("results.rank*.csv")):
        time.sleep(0.05)
    def running() -> list[int]:  # torchrun and every rank: the processes whose command line names OUT
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if str(out) in proc.joinpath("cmdline").read_bytes().decode(errors="replace") and \
                        proc.joinpath("stat").read_text().split()[2] != "Z":
                    found.append(int(proc.name))
        return found

    def holding_files() -> bool:  # a killed process still exiting has an empty command line but open files
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                for fd in list(proc.joinpath("fd").iterdir()):
                    with contextlib.suppress(OSError):  # an fd closed while we look: look at the next one
                        if str(out) in os.readlink(fd):
                            return True
        return False

    def locked() -> bool:  # the run's own lock, as the rerun will try it
        import fcntl

        with contextlib.suppress(FileNotFoundError):
            fd = os.open(out / ".randsae.lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
        return False

    for pid in running():  # all at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run.wait()
    deadline = time.time() + 60
    while (running() or holding_files() or locked()) and time.time() < deadline:
        time.sleep(0.05)
    kept = read_all_results(out)
    assert 0 < len(kept) < 16 and not (out / "results.csv").exists()
    assert main([*grid, "--out", str(out)]) == 0
    one, again = by_key(read_results(tmp_path / "one" / "results.csv")), by_key(read_results(out / "results.csv"))
    assert one.keys() == again.keys()
    for key, row in one.items():
        assert again[key].fvu == row.fvu, key
