"""Eval and latents in layer groups: a device that does not hold every layer's SAE beside the model gets the
layers in groups, a pass over the text each, sized by the plan from the device's memory (`--device-memory`), with
the tables a single group gives; and the plan says so for the paper's models on the machines people have."""

import dataclasses
import signal

import pytest
from judges import ScriptedJudge
from test_baseline import run_cli, same_numbers

from randsae.cli import parse
from randsae.cli.baseline import baseline_overrides
from randsae.io import read_rows
from randsae.study.machines import Machine
from randsae.study.plan import Rates, layer_groups, plan_study, why_not_fits
from randsae.study.records import group_size

# the tiny model, three blocks, examples from 4k tokens after the training text (the latents stage runs the model)
STUDY = ["--preset", "demo", "--variants", "trained,control", "--layers", "0,1,2", "--tokens", "8k",
         "--context-length", "64", "--k", "4", "--expansion", "4", "--min-examples", "5", "--sample", "2",
         "--max-examples", "50", "--explainer-examples", "6", "--test-examples", "10", "--quantiles", "5",
         "--non-activating", "10", "--eval-tokens", "512", "--latent-tokens", "4k", "--calibration-windows", "4",
         "--scorers", "tokens", "--device", "cpu", "--seed", "1"]
RATES = Rates(1e9, 1e9, 1e9, 1.0, 1e9, 1.0, 1.0, 1.0, 0.0, "test", "test")


def test_layer_groups_are_the_layers_that_fit_beside_the_model():
    assert layer_groups(30, fixed=10, per_layer=2, memory=100) == 1  # all 30 fit
    assert layer_groups(30, fixed=10, per_layer=4, memory=100) == 2  # 22 fit: 15 + 15
    assert layer_groups(30, fixed=10, per_layer=90, memory=100) == 30  # one at a time
    assert layer_groups(30, fixed=10, per_layer=91, memory=100) == 30  # not even one: the plan refuses


def study_args(tiny_dir, out, judge, *extra) -> list[str]:
    return ["-q", "baseline", "--model", str(tiny_dir), *STUDY, "--llm-url", judge.url, "--llm-model", "scripted",
            *extra, "--out", str(out)]


def grouping_memory(tiny_dir, judge, tmp_path) -> tuple[int, dict[str, int]]:
    """A device memory (bytes) under which the study's plan fits and splits eval and latents into 2+ groups, and
    the layers of each stage's first group."""
    from randsae.study.preflight import preflight, study_scale
    from randsae.study.settings import settings_for

    settings = settings_for("demo", baseline_overrides(parse(study_args(tiny_dir, tmp_path / "x", judge)[1:])))
    settings = dataclasses.replace(settings, cache=True)
    check = preflight(settings)
    scale = study_scale(settings, check, 1, True)
    assert check.shape is not None
    for memory in (int(1.02 ** i * 2**20) for i in range(400)):
        machine = Machine("test", "cpu", 1, memory, 2**40, 2)
        rows = plan_study(check.shape, scale, RATES, machine)
        groups = {r.stage: r.groups for r in rows if r.stage in ("eval", "latents")}
        fits = why_not_fits(rows, machine, True, "tiny", "float32", check.shape, 1) is None
        if min(groups.values()) >= 2 and fits:
            return memory, {stage: group_size(3, count) for stage, count in groups.items()}
    raise AssertionError("no device memory splits both stages")


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(want) > 0
    same_numbers(got, want)


@pytest.mark.slow
def test_a_small_device_gets_eval_and_latents_in_groups_with_the_single_group_tables(tiny_dir, tmp_path):
    """The study under a stated device memory that splits eval and latents into groups, killed (SIGKILL) after
    the first group of each has written its results and rerun, gives the tables of the study that held every
    layer at once; the plan it kept says how many groups."""
    with ScriptedJudge("random", seed=2) as judge:
        reference = tmp_path / "reference"
        assert run_cli(study_args(tiny_dir, reference, judge)).returncode == 0
        memory, first = grouping_memory(tiny_dir, judge, tmp_path)
        grouped = tmp_path / "grouped"
        args = study_args(tiny_dir, grouped, judge, "--device-memory", f"{memory}B")
        # killed once the first group is written: eval's chunk sums per layer, its record, its table; latents'
        # shard and manifest, then per layer its examples and table (and the record before the first table)
        for kill, table, size in (("trained/eval", "eval/results.csv", first["eval"] + 2),
                                  ("trained/latents", "latents/latents.csv", 2 * first["latents"] + 3)):
            result = run_cli(args, kill=f"{kill}@{size}")
            assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
            layers = {row["layer"] for row in read_rows(grouped / "trained" / table)}
            assert layers == {str(layer) for layer in range(first[kill.split("/")[1]])}, (kill, layers)
        result = run_cli(args)
        assert result.returncode == 0, result.stderr[-2000:]
    plan = read_rows(grouped / "plan.csv")
    assert {r["stage"]: int(r["groups"]) for r in plan if r["unit"] == "trained"}["eval"] >= 2
    assert {r["stage"]: int(r["groups"]) for r in plan if r["unit"] == "trained"}["latents"] >= 2
    assert all(int(r["groups"]) == 1 for r in read_rows(reference / "plan.csv"))
    for unit in ("trained", "control"):
        same_rows(read_rows(grouped / unit / "eval" / "results.csv"), read_rows(reference / unit / "eval" /
                                                                                    "results.csv"))
        same_rows(read_rows(grouped / unit / "latents" / "latents.csv"),
                  read_rows(reference / unit / "latents" / "latents.csv"))
        for layer in (0, 1, 2):
            name = f"examples/layer.{layer}.jsonl"
            got, want = (run / unit / "latents" / name for run in (grouped, reference))
            assert got.read_text() == want.read_text()
        assert not (grouped / unit / "latents" / "cache").exists()  # a cache per group
    same_rows(read_rows(grouped / "compare" / "verdict.csv"), read_rows(reference / "compare" / "verdict.csv"))


@pytest.mark.parametrize("machine", ["1xA100-80GB,disk=20TB", "8xA100-80GB,disk=20TB"])
@pytest.mark.parametrize("model", ["pythia-160m", "pythia-1b", "pythia-6.9b"])
def test_the_plan_gives_pythia_groups_on_80gb_devices(model, machine, tmp_path, capsys):
    """The paper preset on Pythia's published shapes, planned offline for one and eight 80 GB GPUs: eval and
    latents in as many layer groups as fit, each group's SAEs beside the model within the device; Pythia-6.9b
    planned, not refused, on 8 × 80 GB."""
    from randsae.cli import main
    from randsae.study.shapes import write_shape

    code = main(["baseline", "--model", str(write_shape(model, tmp_path / model)), "--preset", "paper", "--plan",
                 "--machine", machine, "--out",
                 str(tmp_path / "p")])
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| stage")}
    groups = {stage: int(rows[stage][4]) for stage in ("eval", "latents")}
    if model == "pythia-160m":
        assert code == 0 and groups == {"eval": 1, "latents": 1}, table
    if model == "pythia-6.9b":
        assert groups["eval"] >= 2 and groups["latents"] >= 2, table
        assert code == 0 or not machine.startswith("8x"), table
    assert not (tmp_path / "p").exists()
