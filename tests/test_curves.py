"""Learning curves (randsae.training.curves, `lm train`'s OUT/curve.csv): points at doubling training, the last at
the run's end, the same after a resume as unbroken; and what a curve says about convergence."""

import json

import pytest

from randsae import io
from randsae.cli import main
from randsae.tables import CurveRow, read_table
from randsae.training.curves import convergence, doubling_steps


@pytest.fixture(scope="module")
def tiny_cache(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("curve-acts") / "acts"
    assert main(["-q", "lm", "activations", "--model", str(tiny_dir), "--tokens", "16k", "--context-length", "64",
                 "--layers", "0,2", "--out", str(out)]) == 0
    return out


TRAIN = ["--k", "4", "--expansion", "4", "--batch-size", "256", "--device", "cpu", "--curve-points", "4",
         "--curve-tokens", "1024"]


def curve(out) -> list[CurveRow]:
    return read_table(out / "curve.csv", CurveRow)


def test_the_curve_doubles_to_the_runs_end_for_every_layer(tiny_cache, tmp_path):
    out = tmp_path / "sae"
    assert main(["-q", "lm", "train", "--acts", str(tiny_cache), *TRAIN, "--out", str(out)]) == 0
    rows = curve(out)
    assert sorted({r.layer for r in rows}) == [0, 2]
    for layer in (0, 2):
        mine = [r for r in rows if r.layer == layer]
        cfg = json.loads((out / f"layer.{layer}" / "cfg.json").read_text())["randsae"]
        assert len(mine) == 4 and mine[-1].steps == cfg["steps"] and mine[-1].tokens == cfg["tokens_trained"]
        assert [r.steps for r in mine] == doubling_steps(cfg["steps"], 4)  # each point twice the one before
        assert all(a.tokens < b.tokens for a, b in zip(mine, mine[1:], strict=False))
        assert all(-1 < r.held_out_explained_variance <= 1 and -1 < r.train_explained_variance <= 1 for r in rows)
        assert all(0 < r.l0 <= 4 and 0 <= r.dead_fraction < 1 for r in mine)
        assert mine[-1].held_out_explained_variance > mine[0].held_out_explained_variance  # it learnt


def test_a_resumed_run_draws_the_unbroken_runs_curve(tiny_cache, tmp_path):
    whole = tmp_path / "whole"
    assert main(["-q", "lm", "train", "--acts", str(tiny_cache), *TRAIN, "--out", str(whole)]) == 0
    broken, seen = tmp_path / "broken", []

    def fault(path):
        seen.append(path)
        if path.name == "sae_weights.safetensors" and path.parent.name == "layer.0":
            raise KeyboardInterrupt  # killed once layer 0 is saved, before layer 2

    io.AFTER_WRITE.append(fault)
    try:  # the command's own way out of an interrupt: exit 130, finished layers kept
        assert main(["-q", "lm", "train", "--acts", str(tiny_cache), *TRAIN, "--out", str(broken)]) == 130
    finally:
        io.AFTER_WRITE.remove(fault)
    assert (broken / "layer.0" / "curve.csv").is_file() and not (broken / "layer.2").exists()
    assert main(["-q", "lm", "train", "--acts", str(tiny_cache), *TRAIN, "--out", str(broken)]) == 0
    assert curve(broken) == curve(whole)


def test_no_curve_when_asked_for_none(tiny_cache, tmp_path):
    out = tmp_path / "none"
    assert main(["-q", "lm", "train", "--acts", str(tiny_cache), *TRAIN, "--curve-points", "0", "--layers", "2",
                 "--out", str(out)]) == 0
    assert not (out / "curve.csv").exists()


def test_what_a_curve_says():
    assert convergence([(1000, 0.50, 0.52), (2000, 0.60, 0.61)]).state == "still learning"
    assert convergence([(1000, 0.60, 0.70), (2000, 0.55, 0.80)]).state == "overfitting"
    done = convergence([(1000, 0.600, 0.61), (2000, 0.605, 0.62)])
    assert done.state == "converged" and done.finished
    assert convergence([(1000, 0.600, 0.61), (2000, 0.605, 0.62)], delta=0.001).state == "still learning"
    assert convergence([]).state == "no curve" and convergence([]).finished
    rising = convergence([(1000, 0.50, None), (2000, 0.60, None)])
    assert not rising.finished and "+0.100 > δ 0.01" in rising.reason and "1,000 to 2,000 tokens" in rising.reason
