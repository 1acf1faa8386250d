"""The run contract: every output records the command and where it came from; another command's output, or
other settings, are refused in one sentence; `lm eval` too."""

import json

from randsae import runs
from randsae.cli import main


def test_every_lm_output_records_its_command_and_provenance(tiny_latents):
    root = tiny_latents.parent
    for directory, command in ((root / "sae", "lm train"), (tiny_latents, "lm latents")):
        record = json.loads((directory / "config.json").read_text())
        assert record["command"] == command
        p = record["provenance"]
        assert p["randsae"] and p["torch"] and p["written"]
        assert p["command_line"].startswith(f"randsae -q {command} ")
        assert p["commit"] == runs.git_commit()


def test_lm_eval_refuses_another_sae_run_and_another_commands_output(tiny_latents, tmp_path, capsys):
    root = tiny_latents.parent
    out = tmp_path / "eval"
    assert main(["-q", "lm", "eval", "--sae", str(root / "sae"), "--tokens", "256", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["command"] == "lm eval"
    table = (out / "results.csv").read_bytes()
    capsys.readouterr()
    # the same SAEs evaluated on other tokens: refused, nothing touched
    assert main(["-q", "lm", "eval", "--sae", str(root / "sae"), "--tokens", "512", "--device", "cpu",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds an evaluation with other settings (max_tokens" in err
    # other SAEs: refused (it used to skip every layer in silence)
    other = tmp_path / "other-sae"
    assert main(["-q", "lm", "train", "--acts", str(root / "acts"), "--k", "2", "--expansion", "4", "--layers",
                 "0", "--batch-size", "256", "--device", "cpu", "--no-check", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["-q", "lm", "eval", "--sae", str(other), "--tokens", "256", "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "other settings (sae" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == table
    # an lm eval directory is not an SAE run's output, nor an SAE run an evaluation
    assert main(["-q", "lm", "train", "--acts", str(root / "acts"), "--k", "2", "--expansion", "4", "--layers",
                 "0", "--batch-size", "256", "--device", "cpu", "--no-check", "--out", str(out)]) == 2
    assert f"{out} holds the output of `randsae lm eval`" in capsys.readouterr().err
    assert main(["-q", "lm", "eval", "--sae", str(root / "sae"), "--tokens", "256", "--device", "cpu",
                 "--out", str(other)]) == 2
    assert f"{other} holds the output of `randsae lm train`" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == table
    # `lm compare` records what it compared: never over an input, nor over a comparison of other directories
    assert main(["-q", "lm", "compare", str(out), "--out", str(out)]) == 2
    assert f"--out {out} is the input RUNS" in capsys.readouterr().err
    assert (out / "results.csv").read_bytes() == table
    compared = tmp_path / "compare"
    assert main(["-q", "lm", "compare", str(out), "--out", str(compared)]) == 0
    record = json.loads((compared / "config.json").read_text())
    assert record["command"] == "lm compare" and record["runs"] == [str(out.resolve())]
    assert main(["-q", "lm", "compare", str(out), "--out", str(compared)]) == 0  # the same again: fine
    assert main(["-q", "lm", "compare", str(out), "--latents", str(tiny_latents), "--out", str(compared)]) == 2
    assert "holds a comparison of other directories" in capsys.readouterr().err


def test_a_toy_run_is_not_a_glove_run(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["-q", "toy", "--preset", "quick", "--data", "sharkey", "--transform", "none", "--latents", "64",
                 "--l1", "0.01", "--num-samples", "200", "--num-inputs", "8", "--num-features", "16", "--epochs",
                 "1", "--no-plots", "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["command"] == "toy" and record["provenance"]["command_line"].startswith("randsae -q toy")
    capsys.readouterr()
    assert main(["-q", "glove", "--preset", "quick", "--out", str(out)]) == 2
    assert "holds the output of `randsae toy`" in capsys.readouterr().err


def test_lm_train_seeds_are_whole_runs_side_by_side(tiny_latents, tmp_path, capsys):
    """`lm train --seeds 2`: seed --seed in OUT, seed --seed + 1 in OUT/seed1, each a run of its own (its record,
    its SAEs, started from another initialisation)."""
    from safetensors.torch import load_file

    root, out = tiny_latents.parent, tmp_path / "seeds"
    args = ["-q", "lm", "train", "--acts", str(root / "acts"), "--k", "2", "--expansion", "4", "--layers", "0",
            "--batch-size", "256", "--device", "cpu", "--no-check", "--seed", "3", "--seeds", "2",
            "--out", str(out)]
    assert main(args) == 0
    seeds = [json.loads((d / "config.json").read_text())["train"]["seed"] for d in (out, out / "seed1")]
    assert seeds == [3, 4]
    first, second = (load_file(d / "layer.0" / "sae_weights.safetensors") for d in (out, out / "seed1"))
    assert not (first["W_dec"] == second["W_dec"]).all()
    assert main(args) == 0  # a rerun resumes both: nothing to do
    assert main([*args[:-4], "--seeds", "0", "--out", str(out)]) == 2
    assert "--seeds must be a positive integer, not 0." in capsys.readouterr().err
