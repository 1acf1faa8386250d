"""benchmarks/gpu.py, the prepared GPU benchmark, cannot rot: its --smoke run (tiny shapes, on the CPU here)
goes through every workload and prints every table, with the correctness lines against the CPU."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_script_smoke_runs_every_workload():
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    for title in ("Toy sweep on cpu", "The paper's whole toy grid", "EXTRAPOLATED", "TopK training on cpu",
                  "Pythia-160m shape", "Correctness on cpu", "Independent-feature toy training on cpu",
                  "randsae recovery on cpu"):
        assert title in out, title
    for trainer in ("randsae sparse", "randsae dense", "sparsify"):
        assert f"| {trainer}" in out
    assert "sparsify not installed" not in out  # the interop extra installs it here: the baseline really ran
    assert out.count("| ok") == 5 and "OFF" not in out
    assert "every workload ran" in out


def test_gpu_script_uses_only_a_bare_cuda_machines_packages():
    """What it imports: torch, transformers, numpy, randsae and the benchmark helper; sparsify optionally."""
    text = SCRIPT.read_text()
    imports = {line.split()[1].split(".")[0] for line in text.splitlines()
               if line.startswith(("import ", "from ")) and not line.startswith("from __future__")}
    assert imports <= {"argparse", "contextlib", "statistics", "sys", "tempfile", "time", "traceback", "pathlib",
                       "torch", "one_at_a_time", "randsae"}, imports
