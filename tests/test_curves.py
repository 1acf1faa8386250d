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


@pytest.mark.slow  # two whole runs and a kill
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


def test_the_verdict_does_not_compare_an_sae_still_learning_or_overfitting(tmp_path):
    from randsae.study.evidence import unfinished_layers
    from randsae.study.verdict import METRICS, NOT_COMPARABLE, Measure, VerdictSettings, compare_arms
    from randsae.tables import write_table

    # a run whose layer 3 rose by 0.05 over its last doubling and whose layer 5 overfits
    rows = [CurveRow(3, 10, 2560, 0.50, 0.52, 8.0, 0.0), CurveRow(3, 20, 5120, 0.55, 0.56, 8.0, 0.0),
            CurveRow(5, 10, 2560, 0.60, 0.62, 8.0, 0.0), CurveRow(5, 20, 5120, 0.58, 0.70, 8.0, 0.0),
            CurveRow(7, 10, 2560, 0.60, 0.62, 8.0, 0.0), CurveRow(7, 20, 5120, 0.605, 0.63, 8.0, 0.0)]
    write_table(tmp_path / "curve.csv", rows, CurveRow)
    unfinished = unfinished_layers(tmp_path, 0.01)
    assert set(unfinished) == {3, 5}  # layer 7 converged
    assert unfinished[3].startswith("still learning (held-out EV rose 0.500 → 0.550")
    assert unfinished[5].startswith("overfitting (held-out EV fell 0.600 → 0.580 while training EV rose")
    assert unfinished_layers(tmp_path, 0.1) == {5: unfinished[5]}  # a wider δ: layer 3 counts as converged
    assert unfinished_layers(tmp_path / "released", 0.01) == {}  # no curve: not refused

    settings = VerdictSettings()
    trained = [Measure("trained", s, 3, "explained_variance", 0.8 + s / 100) for s in range(3)]
    twin = [Measure("step0", s, 3, "explained_variance", 0.5 + s / 100, unfinished=unfinished[3])
            for s in range(3)]
    row = compare_arms(METRICS["explained_variance"], trained, twin, settings, 3, "step0")
    assert row.outcome == NOT_COMPARABLE and row.reason.startswith("step0's SAE is still learning (held-out EV")
    assert row.trained is not None and row.twin_value is not None  # both arms shown, not counted
    twin = [Measure("step0", s, 3, "explained_variance", 0.5 + s / 100) for s in range(3)]
    finished = compare_arms(METRICS["explained_variance"], trained, twin, settings, 3, "step0")
    assert finished.outcome != NOT_COMPARABLE


@pytest.mark.parametrize("value", ["0", "1.5", "nan", "-0.1"])
def test_a_bad_converged_delta_is_one_sentence(value, tmp_path, capsys):
    capsys.readouterr()
    code = main(["-q", "baseline", "--preset", "demo", "--converged-delta", value, "--plan", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "converged-delta" in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_compare_stage_names_every_sae_still_learning_beside_its_numbers(tmp_path, monkeypatch):
    """The comparison figure's notes (and the probing table's marks) name each arm and layer whose SAE its curve
    says is still learning or overfitting; an arm without a curve (your SAEs) is named nowhere."""
    from types import SimpleNamespace

    from randsae.experiments import lm_compare
    from randsae.study.stages.compare import unfinished_saes
    from randsae.tables import CurveRow, EvalRow, write_table

    curves = {"trained": [(8000, 0.70, 0.71), (16000, 0.80, 0.81)],  # +0.10: still learning
              "control": [(8000, 0.60, 0.61), (16000, 0.601, 0.62)],  # finished
              "step0": [(8000, 0.40, 0.60), (16000, 0.38, 0.70)]}  # overfitting
    for arm, points in curves.items():
        (tmp_path / arm).mkdir()
        write_table(tmp_path / arm / "curve.csv", [CurveRow(3, i + 1, t, h, tr, 32.0, 0.0)
                                                   for i, (t, h, tr) in enumerate(points)], CurveRow)
    (tmp_path / "yours").mkdir()
    study = SimpleNamespace(settings=SimpleNamespace(verdict=SimpleNamespace(converged_delta=0.01)),
                            directory=lambda unit, stage: tmp_path / unit)
    found = unfinished_saes(study, ["trained", "control", "step0", "yours"])
    assert set(found) == {("trained", 3), ("step0", 3)}
    assert found["trained", 3].startswith("is still learning (") and found["step0", 3].startswith("is overfitting")

    # and `lm compare` draws them under its figure
    drawn = []
    monkeypatch.setattr(lm_compare, "plot_lm_comparison", lambda rows, path, notes, formats: drawn.append(notes))
    run = tmp_path / "eval"
    run.mkdir()
    write_table(run / "results.csv", [EvalRow("m", "trained", 3, explained_variance=0.8)], EvalRow)
    note = f"trained layer 3: its SAE {found['trained', 3]}: not comparable in the verdict"
    (tmp_path / "compare").mkdir()
    lm_compare.compare([run], tmp_path / "compare", notes=[note])
    assert note in drawn[0]
