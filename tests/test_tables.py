"""The typed tables and the column registry the README's "where each number comes from" is generated from."""

import importlib
import re
from pathlib import Path

import pytest

from randsae import tables
from randsae.errors import BadInput
from randsae.experiments.sweep import COLUMNS as SWEEP_COLUMNS
from randsae.tables import EVAL, REGISTRY, SWEEP, CompareRow, EvalRow, read_table, registered, write_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_carries_the_registry_as_generated():
    text = README.read_text()
    block = text[text.index("<!-- columns:start -->\n") + 23:text.index("<!-- columns:end -->")]
    assert block == tables.markdown(), "regenerate it: python -m randsae.tables"


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
    from randsae.study.verdict import VERDICT_METRICS
    from randsae.tables import ScorerAuroc

    for name in COMPARED:
        assert CompareRow._fields()[name] == (ScorerAuroc, True)
        assert VERDICT_METRICS[f"auroc_{name}"][0] == SCORER_KINDS[name].label
    assert all(SCORER_KINDS[name].uses_judge for name in COMPARED)  # each carries its judge flag
