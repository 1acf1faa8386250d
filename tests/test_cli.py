import subprocess
import sys

import pytest

from randsae.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "randsae", *args], capture_output=True, text=True)


TINY = ["--latents", "16", "--l1", "0.01,1", "--seeds", "1", "--epochs", "2", "--num-samples", "300",
        "--num-inputs", "8", "--num-features", "16"]


@pytest.mark.parametrize("args, words", [
    (["toy", "--data", "glove2"], "unknown data"),
    (["toy", "--epochs", "-3"], "epochs must be a positive integer"),
    (["toy", "--l1", "0.1:oops"], "cannot read coefficients"),
    (["toy", "--l1=-1:10:3"], "cannot read coefficients"),
    (["toy", "--transform", "tanh"], "unknown transform"),
    (["toy", "--config", "/nonexistent/settings.toml"], "does not exist"),
    (["plot", "/nonexistent/run"], "does not exist"),
    (["toy2d", "--num-samples", "0"], "positive integer"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_one_sentence_exit_2(tmp_path, args, words):
    result = run_cli(*args, *(["--out", str(tmp_path / "out")] if args[0].startswith("toy") else []))
    assert result.returncode == 2
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("toy", *TINY, "--out", str(blocker / "run"))
    assert result.returncode == 2 and "cannot write to output directory" in result.stderr


def test_config_file_with_unknown_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 2\nbogus = 1\n")
    assert main(["toy", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2


def test_toy_then_plot_writes_table_and_figures(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('data = ["sharkey", "gaussian"]\ntransform = "none,mlp"\n')
    out = tmp_path / "run"
    assert main(["-q", "toy", "--config", str(cfg), *TINY, "--save-weights", "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.png")} == {"mmcs.png", "frontier_l0.png", "frontier_hoyer.png"}
    assert len(list((out / "weights").glob("*/sae_weights.safetensors"))) == 8
    for png in out.glob("*.png"):
        png.unlink()
    assert main(["-q", "plot", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 3
    assert (out / "mmcs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_toy2d_draws_the_lomax_demo(tmp_path):
    assert main(["-q", "toy2d", "--out", str(tmp_path), "--num-samples", "500"]) == 0
    assert (tmp_path / "lomax_2d.png").stat().st_size > 10_000
