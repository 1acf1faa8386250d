"""`randsae baseline`: the whole study on the tiny model, its report, a SIGKILL in every stage, bad input."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from judges import ScriptedJudge

from randsae.cli import main
from randsae.errors import BadInput
from randsae.io import read_rows
from randsae.study.stages import unit_stages
from randsae.study.verdict import METRICS

STAGES = tuple(s.name for s in unit_stages())
# the metrics a study of the text's own tasks has: all but the probes of --probe-data
STUDIED = [m for m in METRICS.values() if m.name != "probing_data"]

# the tiny model, two blocks, small example sets; seed 1 (the tiny model *is* the seed-0 initialisation)
TINY = ["--preset", "demo", "--layers", "0,2", "--tokens", "8k", "--context-length", "64", "--k", "4",
        "--expansion", "4", "--min-examples", "5", "--sample", "2", "--max-examples", "50", "--explainer-examples",
        "6", "--test-examples", "10", "--quantiles", "5", "--non-activating", "10", "--eval-tokens", "512",
        "--calibration-windows", "4", "--device", "cpu", "--seed", "1"]


def tiny_args(tiny_dir, out, *extra) -> list[str]:
    return ["-q", "baseline", "--model", str(tiny_dir), *TINY, *extra, "--out", str(out)]


@pytest.fixture(scope="module")
def judge():
    with ScriptedJudge("random", seed=2) as server:
        yield server


@pytest.fixture(scope="module")
def study(tiny_dir, judge, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    assert main(tiny_args(tiny_dir, out, "--llm-url", judge.url, "--llm-model", "scripted")) == 0
    return out


def test_every_stage_of_every_variant_runs_and_the_report_is_whole(study):
    stages = json.loads((study / "stages.json").read_text())
    assert {(r["unit"], r["stage"]) for r in stages if r["status"] == "done"} == {
        *((v, s) for v in ("trained", "rerandomized", "step0", "control") for s in STAGES), ("", "compare"),
        ("", "report")}
    config = json.loads((study / "config.json").read_text())
    assert config["study"] == "randsae baseline" and config["settings"]["preset"] == "demo"
    assert config["layers"] == [0, 2]
    page = (study / "report.html").read_text()
    # every figure, inlined
    for name in ("comparison", "entropy_auroc", "entropy"):
        assert re.search(rf"<figure id='fig-{name}'><img src='data:image/png;base64,[A-Za-z0-9+/=]{{200,}}'", page)
        assert (study / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    # a card per sampled latent of every variant and layer, with shaded windows
    sampled = {(v, int(r["layer"]), int(r["latent"])) for v in ("trained", "rerandomized", "step0", "control")
               for r in read_rows(study / v / "latents" / "latents.csv") if r["sampled"] == "True"}
    cards = set(re.findall(r'class="latent-card" data-variant="([^"]+)" data-layer="(\d+)" data-latent="(\d+)"',
                           page))
    assert {(v, int(layer), int(latent)) for v, layer, latent in cards} == sampled and len(sampled) == 16
    assert page.count('<span class="tok" style="background:rgba(') > 16
    # opens from disk: nothing is fetched (no resource but inline data; no script)
    for attribute in re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]+)""", page):
        assert attribute.startswith("data:") or attribute.startswith("#"), attribute
    assert "<script" not in page and "@import" not in page and "url(" not in page
    # the sections a reader looks for
    for section in ("settings", "stages", "calibration", "verdict", "figures", "latents"):
        assert f"<section id='{section}'>" in page
    # the verdict: a sentence per layer, a row per (layer, metric, twin), the intervals a one-seed bootstrap
    assert page.count("<li><b>Layer 0</b>") == 1 and page.count("<li><b>Layer 2</b>") == 1
    verdict = read_rows(study / "compare" / "verdict.csv")
    assert len(verdict) == 2 * 3 * len(STUDIED) and {r["twin"] for r in verdict} == {"rerandomized", "step0",
                                                                                       "control"}
    assert {r["basis"] for r in verdict} == {f"1 seed: bootstrap over {x}"
                                             for x in ("held-out contexts", "latents", "tasks", "letters")}
    assert page.count("<tr><td>0</td>") == 3 * len(STUDIED) and page.count("<tr><td>2</td>") == 3 * len(STUDIED)
    # it opens with what separates trained from random, and every arm's probes side by side
    for section in ("separation", "probing"):
        assert f"<section id='{section}'>" in page
    ranked = read_rows(study / "compare" / "separation.csv")
    assert {r["metric"] for r in ranked} == {m.name for m in STUDIED}
    z = [float(r["mean_z"]) for r in ranked if r["mean_z"]]
    assert z == sorted(z, reverse=True)
    probes = read_rows(study / "compare" / "probing.csv")
    assert {(r["arm"], r["probe"], r["k"]) for r in probes} == {
        (v, p, k) for v in ("trained", "rerandomized", "step0", "control")
        for p, k in (("sae", "1"), ("sae", "2"), ("sae", "5"), ("input", "0"), ("tokens", "0"))}
    assert "AT CHANCE" in page  # a random judge is flagged as such
    markdown = (study / "report.md").read_text()
    assert "## Verdict" in markdown and "figures/comparison.png" in markdown
    # the report opens as the README does: the verdict, what separates, the probes; settings and stages after
    for text, mark in ((markdown, "## {}"), (page, "<h2>{}</h2>")):
        heads = [text.index(mark.format(h)) for h in ("Verdict", "Which metrics separate trained from random here",
                                                      "Probing (no judge)", "Judge calibration", "Settings",
                                                      "Stages")]
        assert heads == sorted(heads), heads
    # the plan made before the run, beside what each stage took
    from randsae.study.plan import PlanRow
    from randsae.tables import read_table

    plan = read_table(study / "plan.csv", PlanRow)
    assert {(r.unit, r.stage) for r in plan} == {(r["unit"], r["stage"]) for r in stages}
    assert all(r.seconds >= 0 and r.tokens >= 0 for r in plan)
    acts = next(r for r in plan if r.unit == "trained" and r.stage == "activations")
    assert acts.disk_bytes >= 8000 * 2 * 32 * 2  # 8k tokens × 2 layers × d = 32 × float16
    assert "The plan beside what it took" in page and "### The plan beside what it took" in markdown
    assert re.search(r"<td>activations</td><td>4 of 4</td>", page)


def test_a_rerun_of_a_finished_study_redoes_nothing_and_other_settings_are_refused(study, tiny_dir, judge,
                                                                                    capsys):
    before = (study / "stages.json").read_text()
    requests = dict(judge.requests)
    assert main(tiny_args(tiny_dir, study, "--llm-url", judge.url, "--llm-model", "scripted")) == 0
    assert (study / "stages.json").read_text() == before
    assert judge.requests["chat"] == requests["chat"]
    capsys.readouterr()
    message = bad(tiny_args(tiny_dir, study, "--llm-url", judge.url, "--llm-model", "scripted", "--tokens", "9k"),
                  study, capsys)
    assert "holds a study with other settings (tokens)" in message


def same_numbers(got: list[dict], want: list[dict]) -> None:
    """Two tables' rows alike: numbers to rel 1e-6, every other cell equal."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for column, value in b.items():
            try:
                assert float(a[column]) == pytest.approx(float(value), rel=1e-6, abs=1e-9), column
            except ValueError:
                assert a[column] == value, column


def run_cli(args: list[str], kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANDSAE_TEST_KILL": kill or ""}
    return subprocess.run([sys.executable, "-m", "randsae", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_sigkill_in_every_stage_then_rerun_redoes_nothing_finished_and_gives_the_same_numbers(tiny_dir, judge,
                                                                                              tmp_path):
    """A study of two seeds killed (SIGKILL) inside each stage in turn — every stage of the trained arm, a
    twin's training at each seed, the second seed's eval, the comparison and the report — right after the stage
    puts a file in place (the first, or the second), so that the kill lands where it is meant to whatever the
    machine's speed; each rerun resumes. No stage that had finished is run again, the numbers equal an
    uninterrupted run's, and the report's verdict is over the two seeds."""
    common = ["--variants", "trained,control", "--layers", "0", "--seeds", "2", "--llm-url", judge.url,
              "--llm-model", "scripted"]
    reference = tmp_path / "reference"
    assert run_cli(tiny_args(tiny_dir, reference, *common)).returncode == 0
    out = tmp_path / "killed"
    targets = [("trained", s) for s in STAGES] + [("control", "train"), ("trained/seed1", "eval"),
                                                  ("control/seed1", "train"), ("", "compare"), ("", "report")]
    finished: dict = {}
    for number, (variant, stage) in enumerate(targets):
        result = run_cli(tiny_args(tiny_dir, out, *common), kill=f"{variant}/{stage}@{1 + number % 2}")
        assert result.returncode == -signal.SIGKILL, result.stderr
        records = {(r["unit"], r["stage"]): r for r in json.loads((out / "stages.json").read_text())}
        assert records[variant, stage]["status"] == "running", (variant, stage)  # killed inside the stage
        for key, record in finished.items():  # nothing finished before was run again
            assert records[key] == record, key
        finished = {key: r for key, r in records.items() if r["status"] == "done"}
        assert (variant, stage) not in finished
    assert run_cli(tiny_args(tiny_dir, out, *common)).returncode == 0
    for name in ("compare/results.csv", "compare/seed1/results.csv", "compare/verdict.csv"):
        got, want = read_rows(out / name), read_rows(reference / name)
        assert len(got) == len(want) == (len(STUDIED) if name.endswith("verdict.csv") else 2)
        same_numbers(got, want)
    for unit in ("trained", "control", "trained/seed1", "control/seed1"):
        assert (out / unit / "autointerp" / "scores.csv").read_text() == \
            (reference / unit / "autointerp" / "scores.csv").read_text()
    # the second seed is its own draw: another control, other SAEs
    first, second = (read_rows(out / d / "results.csv")[0] for d in ("compare", "compare/seed1"))
    assert first["explained_variance"] != second["explained_variance"]
    verdict = read_rows(out / "compare" / "verdict.csv")
    assert {r["basis"] for r in verdict} == {"2 seeds per arm"}
    ev = next(r for r in verdict if r["metric"] == "explained_variance")
    assert float(ev["trained_low"]) < float(ev["trained"]) < float(ev["trained_high"])  # an interval over seeds
    assert "2 seeds per arm" in (out / "report.html").read_text()


@pytest.mark.slow
def test_bring_your_own_saes_stand_for_the_trained_arm(tiny_latents, tiny_dir, tmp_path):
    """The tiny model's SAEs (k = 4, 4 latents per dimension) as the trained arm: imported as they are, and
    the twin's SAEs get the same k and size."""
    sae_dir = tiny_latents.parent / "sae"
    out = tmp_path / "mine"
    assert main(tiny_args(tiny_dir, out, "--variants", "trained,control", "--scorers", "tokens",
                          "--k", "8", "--expansion", "2", "--sae", str(sae_dir))) == 0
    import torch
    from safetensors.torch import load_file

    for layer in (0, 2):
        given = load_file(sae_dir / f"layer.{layer}" / "sae_weights.safetensors")
        imported = load_file(out / "trained" / "sae" / f"layer.{layer}" / "sae_weights.safetensors")
        assert all(torch.equal(given[name], imported[name]) for name in given)
        cfg = json.loads((out / "control" / "sae" / f"layer.{layer}" / "cfg.json").read_text())
        assert (cfg["k"], cfg["d_sae"], cfg["d_in"]) == (4, 128, 32)
    assert "trained arm" in (out / "report.md").read_text()


def bad(args: list[str], out: Path, capsys) -> str:
    before = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None
    contents = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    assert main(args) == 2
    after = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None
    assert after == before and all(p.read_bytes() == c for p, c in contents.items())
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0, message
    return message


def test_bad_input_is_one_sentence_and_writes_nothing(tiny_dir, tiny_latents, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    # no hub here: the real loading path, answered offline (the variable is read when huggingface_hub is imported)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert "unknown variant 'rerandomised'" in bad(tiny_args(tiny_dir, out, "--variants", "trained,rerandomised"),
                                                  out, capsys)
    assert "model 'no-such-org/no-such-model' is not in the local Hugging Face cache" in bad(
        ["baseline", "--model", "no-such-org/no-such-model", "--preset", "demo", "--out", str(out)], out, capsys)
    assert not out.exists()
    theirs = str(tiny_latents.parent / "sae")
    assert "reads 32 inputs, but smollm2's residual stream has 576" in bad(
        ["baseline", "--preset", "demo", "--sae", theirs, "--out", str(out)], out, capsys)
    other = tiny_latents.parent / "sae"  # an `lm train` run, not a study
    assert "holds the output of `randsae lm train`" in bad(tiny_args(tiny_dir, other), other, capsys)
    assert "unknown preset" in bad(tiny_args(tiny_dir, out, "--preset", "huge"), out, capsys)


def test_sigterm_and_ctrl_c_stop_the_study_instead_of_failing_one_variant(tmp_path, monkeypatch):
    """A stage's failure is that variant's alone; SIGTERM (raised as `Terminated`) and Ctrl-C stop the study,
    leaving the stage "running" for the rerun."""
    from randsae.cli import Terminated
    from randsae.study.records import read_stages
    from randsae.study.runner import Study
    from randsae.study.settings import BaselineSettings
    from randsae.study.stages import REGISTRY

    def with_work(work: dict) -> None:  # each stage's work replaced, in the registry the runner reads
        for name, run in work.items():
            monkeypatch.setitem(REGISTRY, name, dataclasses.replace(REGISTRY[name], run=run))

    def stages_raising(error) -> dict:
        def stage(name):
            def run(study, variant):
                if (variant, name) == ("rerandomized", "train"):
                    raise error
            return run
        return {name: stage(name) for name in (*STAGES, "compare", "report")}

    for error in (Terminated(), KeyboardInterrupt()):
        out = tmp_path / type(error).__name__
        out.mkdir()
        study = Study(out, BaselineSettings(variants=["trained", "rerandomized", "control"]), progress=False)
        with_work(stages_raising(error))
        with pytest.raises(type(error)):
            study.run()
        records = read_stages(out)
        assert records["rerandomized", "train"].status == "running"
        assert ("control", "activations") not in records
    failing = Study(tmp_path / "fails", BaselineSettings(variants=["trained", "step0", "control"]), progress=False)
    (tmp_path / "fails").mkdir()

    def broken(study, variant):
        if variant == "trained":
            raise BadInput("the disk said no.")
        if variant == "step0":
            raise ValueError("a bug of ours")

    with_work({name: (broken if name == "eval" else (lambda s, v: None))
               for name in (*STAGES, "compare", "report")})
    records = failing.run()
    # bad input: its one sentence; a fault: its first line, and its whole traceback kept in the stage's error.txt
    assert records["trained", "eval"].status == "failed"
    assert records["trained", "eval"].error == "the disk said no."
    assert not (tmp_path / "fails" / "trained" / "eval" / "error.txt").exists()
    assert records["step0", "eval"].error == "ValueError: a bug of ours (traceback in step0/eval/error.txt)"
    kept = (tmp_path / "fails" / "step0" / "eval" / "error.txt").read_text()
    assert kept.startswith("Traceback") and "in broken" in kept
    assert kept.rstrip().endswith("ValueError: a bug of ours")
    assert ("trained", "latents") not in records and records["control", "autointerp"].status == "done"
