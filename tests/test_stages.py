"""A stage is one module and its registration: a toy stage declared here, registered, is run by the study for
every unit after the stage it reads, planned, checked before the run and reported, with no other change."""

import json

import pytest

from randsae.cli import main
from randsae.errors import BadInput
from randsae.study.records import StudyState
from randsae.study.stages import REGISTRY, Stage, ordered
from randsae.tables import PlanRow, read_table

TINY = ["--preset", "demo", "--layers", "0,2", "--tokens", "4k", "--context-length", "64", "--k", "4",
        "--expansion", "4", "--min-examples", "5", "--sample", "2", "--max-examples", "50", "--eval-tokens", "256",
        "--scorers", "tokens", "--device", "cpu", "--seed", "1"]


def tally(study: StudyState, unit: str) -> None:
    """The toy stage's work: count the unit's SAE layers (what it reads: the train stage's directory)."""
    saes = sorted(p.name for p in study.directory(unit, "sae").glob("layer.*"))
    out = study.directory(unit, "tally")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tally.json").write_text(json.dumps({"unit": unit, "saes": saes}))


def tally_cost(u) -> PlanRow:
    return PlanRow(u.name, "tally", 0, 64, 0, 1.5, "a toy's stated allowance")


def tally_section(out, units: list[str]) -> str:
    rows = [json.loads((out / u / "tally" / "tally.json").read_text()) for u in units]
    return "## Tally\n\n" + "\n".join(f"- {r['unit']}: {len(r['saes'])} SAEs" for r in rows)


def tally_check(settings, _plan: bool) -> None:
    if settings.k > 100:
        raise BadInput(f"the tally stage counts no SAE of k {settings.k}.")


TALLY = Stage("tally", tally, directory="tally", reads=("train",), cost=tally_cost, section=tally_section,
              check=tally_check)


@pytest.fixture
def with_tally(monkeypatch):
    monkeypatch.setitem(REGISTRY, "tally", TALLY)
    yield


def test_stages_run_after_what_they_read_and_across_units_last(with_tally):
    order = [s.name for s in ordered()]
    assert order.index("tally") > order.index("train")
    assert order[-2:] == ["compare", "report"]
    for stage in ordered():
        assert all(order.index(r) < order.index(stage.name) for r in stage.reads if r in order)


def test_a_circle_of_reads_is_refused(monkeypatch):
    monkeypatch.setitem(REGISTRY, "a", Stage("a", tally, reads=("b",)))
    monkeypatch.setitem(REGISTRY, "b", Stage("b", tally, reads=("a",)))
    with pytest.raises(ValueError, match="circle"):
        ordered()


def test_a_registered_stage_is_checked_before_the_run(with_tally, tiny_dir, tmp_path, capsys):
    args = ["-q", "baseline", "--model", str(tiny_dir), *TINY]
    assert main([*args, "--k", "101", "--out", str(tmp_path / "refused")]) == 2  # its check, before any work
    assert "the tally stage counts no SAE of k 101." in capsys.readouterr().err
    assert not (tmp_path / "refused" / "stages.json").exists()


@pytest.mark.slow
def test_a_registered_stage_is_run_planned_and_reported(with_tally, tiny_dir, tmp_path):
    out = tmp_path / "out"
    args = ["-q", "baseline", "--model", str(tiny_dir), *TINY]
    assert main([*args, "--out", str(out)]) == 0
    stages = json.loads((out / "stages.json").read_text())
    done = [(r["unit"], r["stage"]) for r in stages if r["status"] == "done"]
    for unit in ("trained", "rerandomized", "step0", "control"):
        assert json.loads((out / unit / "tally" / "tally.json").read_text()) == {
            "unit": unit, "saes": ["layer.0", "layer.2"]}
        assert done.index((unit, "tally")) > done.index((unit, "train"))
    assert done[-2:] == [("", "compare"), ("", "report")]
    planned = [r for r in read_table(out / "plan.csv", PlanRow) if r.stage == "tally"]
    assert [(r.unit, r.seconds, r.disk_bytes) for r in planned] == [
        (u, 1.5, 64) for u in ("trained", "rerandomized", "step0", "control")]  # its cost, per unit
    report = (out / "report.md").read_text()
    assert "## Tally\n\n- trained: 2 SAEs\n- rerandomized: 2 SAEs" in report
    assert "| tally |" in report  # its seconds, and its plan beside what it took
    assert "<h2>Tally</h2><ul><li>trained: 2 SAEs</li>" in (out / "report.html").read_text().replace("\n", "")


def test_a_record_of_a_stage_names_its_unit_and_older_records_are_read(tmp_path):
    """stages.json names each record's unit (a variant at a seed); a study begun before wrote it as "variant",
    and a rerun reads it so."""
    from randsae.study.records import StageRecord, read_stages, write_stages

    write_stages(tmp_path, {("trained/seed1", "eval"): StageRecord("trained/seed1", "eval", "done", 2.0)})
    assert json.loads((tmp_path / "stages.json").read_text())[0]["unit"] == "trained/seed1"
    (tmp_path / "stages.json").write_text(json.dumps([{"variant": "step0", "stage": "train", "status": "done",
                                                       "seconds": 1.5, "error": None}]))
    assert read_stages(tmp_path) == {("step0", "train"): StageRecord("step0", "train", "done", 1.5)}
