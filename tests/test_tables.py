"""The typed tables and the column registry docs/reference.md's "Every result column" is generated from."""

import importlib
import re
from pathlib import Path

import pytest

from randsae import tables
from randsae.errors import BadInput
from randsae.experiments.sweep import COLUMNS as SWEEP_COLUMNS
from randsae.tables import EVAL, REGISTRY, SWEEP, CompareRow, EvalRow, read_table, registered, write_table

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def test_the_reference_carries_the_registry_as_generated():
    text = REFERENCE.read_text()
    block = text[text.index("<!-- columns:start -->\n") + 23:text.index("<!-- columns:end -->")]
    assert block == tables.markdown(), "regenerate it: python -m randsae.tables --write"


def test_every_registered_column_names_a_function_that_exists():
    for column in REGISTRY:
        parts = column.where.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                thing = importlib.import_module(".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        for name in parts[cut:]:
            thing = getattr(thing, name)
        assert callable(thing), column.where


def test_every_metric_column_of_the_sweep_and_eval_tables_is_registered():
    identity = {"model", "variant", "layer", "k", "latents", "tokens"}
    for name in EvalRow.columns():
        if name not in identity:
            registered(EVAL, name)
    for name in SWEEP_COLUMNS:
        if name not in {"data", "transform", "input_dim", "latents", "l1_coef", "seed", "epochs", "status"}:
            registered(SWEEP, name)
    # the two fvu columns are two formulas, each said where it is used
    assert registered(SWEEP, "fvu").formula != registered(EVAL, "fvu").formula


def test_columns_come_from_the_fields_and_nested_tables_are_flattened():
    columns = CompareRow.columns()
    assert columns[:len(EvalRow.columns())] == EvalRow.columns()
    assert columns.index("auroc_fuzzing") < columns.index("auroc_low_fuzzing") < columns.index(
        "judge_at_chance_fuzzing") < columns.index("auroc_detection")
    assert len(columns) == len(set(columns))


def test_a_cell_of_the_wrong_type_is_one_sentence_naming_file_row_and_column(tmp_path):
    write_table(tmp_path / "r.csv", [EvalRow("m", "trained", 3, explained_variance=0.5)], EvalRow)
    text = (tmp_path / "r.csv").read_text().replace("0.5", "half")
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(BadInput, match=re.escape(f"{tmp_path / 'r.csv'} row 2: explained_variance is 'half', "
                                                 "not a number.")):
        read_table(tmp_path / "r.csv", EvalRow)
    (tmp_path / "s.csv").write_text("variant,layer\ntrained,3\n")
    with pytest.raises(BadInput, match="has no column 'model'"):
        read_table(tmp_path / "s.csv", EvalRow)


def test_every_compared_scorer_has_its_nested_auroc_in_the_comparison_table():
    from randsae.scorer_kinds import COMPARED, SCORER_KINDS
    from randsae.study.verdict import METRICS
    from randsae.tables import ScorerAccuracy, ScorerAuroc

    for name in COMPARED:
        kind = SCORER_KINDS[name]
        nested = ScorerAuroc if kind.measure == "auroc" else ScorerAccuracy
        assert CompareRow._fields()[kind.field or name] == (nested, True)
        columns = CompareRow.columns()
        assert kind.column in columns and f"judge_at_chance_{kind.field or name}" in columns
        assert METRICS[kind.column].label == kind.label
        assert METRICS[kind.column].scorer == name  # the verdict gates it on its own scorer's judge
    assert "tokens" in CompareRow.columns() and CompareRow._fields()["tokens"] == (int, True)  # EvalRow's count


def test_old_tables_with_one_flag_per_row_still_gate_every_scorer(tmp_path):
    """A table written before each scorer had its own flag: the row's flag stands for every scorer."""
    from randsae import io
    from randsae.tables import ScorerAuroc, judge_at_chance

    columns = ["model", "variant", "layer", "auroc_fuzzing", "auroc_low_fuzzing", "auroc_high_fuzzing",
               "judge_at_chance"]
    io.write_rows(tmp_path / "old.csv", columns, [
        {"model": "m", "variant": "trained", "layer": 3, "auroc_fuzzing": 0.9, "auroc_low_fuzzing": 0.85,
         "auroc_high_fuzzing": 0.95, "judge_at_chance": True},
        {"model": "m", "variant": "step0", "layer": 3, "auroc_fuzzing": 0.6, "auroc_low_fuzzing": 0.55,
         "auroc_high_fuzzing": 0.65, "judge_at_chance": False}])
    trained, twin = read_table(tmp_path / "old.csv", CompareRow)
    assert trained.fuzzing == ScorerAuroc(0.9, 0.85, 0.95, None)
    assert judge_at_chance(trained, "auroc_fuzzing") and judge_at_chance(trained, "auroc_detection")
    assert not judge_at_chance(twin, "auroc_fuzzing")


def test_a_scorer_that_asks_no_judge_is_never_marked_at_chance():
    """The row's flag (at chance on any scorer) stands in only for scorers that ask the judge."""
    from randsae.tables import ScorerAccuracy, ScorerAuroc, judge_at_chance

    row = CompareRow("m", "trained", 3, fuzzing=ScorerAuroc(0.5, 0.4, 0.6, True),
                     token_lookup=ScorerAuroc(0.7, 0.6, 0.8, None), examples=ScorerAuroc(0.6, 0.5, 0.7, None),
                     intruder=ScorerAccuracy(0.2, 0.1, 0.3, 0.2, True), judge_at_chance=True)
    assert judge_at_chance(row, "auroc_fuzzing") and judge_at_chance(row, "accuracy_intruder")
    assert not judge_at_chance(row, "auroc_token_lookup") and not judge_at_chance(row, "auroc_examples")
    assert not judge_at_chance(row, "auroc_embedding")
