"""The report's verdict rules, on hand-built comparison rows (`CompareRow`, as `lm compare` writes them and
the report reads them back)."""

from randsae.study.verdict import separation, verdicts
from randsae.tables import CompareRow, ScorerAuroc


def row(variant: str, layer: int = 3, **values) -> CompareRow:
    return CompareRow("m", variant, layer, **values)


def auroc(value: float, low: float, high: float, fuzzing_chance: bool | None,
          detection_chance: bool | None = False) -> dict:
    return {"fuzzing": ScorerAuroc(value, low, high, fuzzing_chance),
            "detection": ScorerAuroc(value, low, high, detection_chance),
            "judge_at_chance": bool(fuzzing_chance or detection_chance)}


def test_a_judge_at_chance_on_fuzzing_is_not_counted_even_when_detection_is_fine():
    trained = row("trained", **auroc(0.9, 0.85, 0.95, fuzzing_chance=True))
    twin = row("step0", **auroc(0.6, 0.55, 0.65, fuzzing_chance=True))
    fuzzing = separation("auroc_fuzzing", trained, {"step0": twin})
    assert fuzzing.separates is None and "chance" in fuzzing.why
    detection = separation("auroc_detection", trained, {"step0": twin})
    assert detection.separates is True and "disjoint" in detection.why


def test_a_judge_at_chance_on_detection_only_leaves_fuzzing_counted():
    trained = row("trained", **auroc(0.9, 0.85, 0.95, fuzzing_chance=False, detection_chance=True))
    twin = row("step0", **auroc(0.6, 0.55, 0.65, fuzzing_chance=False, detection_chance=True))
    assert separation("auroc_fuzzing", trained, {"step0": twin}).separates is True
    assert separation("auroc_detection", trained, {"step0": twin}).separates is None


def test_old_tables_with_one_flag_per_row_still_gate_every_scorer(tmp_path):
    """A table written before each scorer had its own flag: the row's flag stands for every scorer."""
    from randsae import io
    from randsae.tables import read_table

    columns = ["model", "variant", "layer", "auroc_fuzzing", "auroc_low_fuzzing", "auroc_high_fuzzing",
               "judge_at_chance"]
    io.write_rows(tmp_path / "old.csv", columns, [
        {"model": "m", "variant": "trained", "layer": 3, "auroc_fuzzing": 0.9, "auroc_low_fuzzing": 0.85,
         "auroc_high_fuzzing": 0.95, "judge_at_chance": True},
        {"model": "m", "variant": "step0", "layer": 3, "auroc_fuzzing": 0.6, "auroc_low_fuzzing": 0.55,
         "auroc_high_fuzzing": 0.65, "judge_at_chance": False}])
    trained, twin = read_table(tmp_path / "old.csv", CompareRow)
    assert trained.fuzzing == ScorerAuroc(0.9, 0.85, 0.95, None)
    assert separation("auroc_fuzzing", trained, {"step0": twin}).separates is None


def test_overlapping_auroc_intervals_do_not_separate():
    trained = row("trained", **auroc(0.8, 0.7, 0.9, fuzzing_chance=False))
    twin = row("step0", **auroc(0.75, 0.65, 0.85, fuzzing_chance=False))
    result = separation("auroc_fuzzing", trained, {"step0": twin})
    assert result.separates is False and result.why == "intervals overlap"


def test_relative_margin_rule():
    trained = row("trained", explained_variance=0.80)
    assert separation("explained_variance", trained, {"a": row("a", explained_variance=0.70)}).separates is True
    assert separation("explained_variance", trained, {"a": row("a", explained_variance=0.79)}).separates is False
    # it must separate from every twin
    both = {"a": row("a", explained_variance=0.70), "b": row("b", explained_variance=0.79)}
    assert separation("explained_variance", trained, both).separates is False


def test_entropy_compared_by_standard_errors():
    trained = row("trained", entropy_mean=2.0, entropy_std=0.5, sampled_latents=25)  # standard error 0.1
    far = row("a", entropy_mean=1.5, entropy_std=0.5, sampled_latents=25)  # 0.5 apart > 2 × 0.141
    near = row("a", entropy_mean=1.9, entropy_std=0.5, sampled_latents=25)
    assert separation("entropy_mean", trained, {"a": far}).separates is True
    assert separation("entropy_mean", trained, {"a": near}).separates is False


def test_a_metric_missing_for_a_twin_is_not_counted():
    trained = row("trained", cosine_sim=0.9)
    result = separation("cosine_sim", trained, {"a": row("a"), "b": row("b", cosine_sim=0.5)})
    assert result.separates is None and result.why == "not measured for every variant"


def test_verdicts_per_layer_need_the_trained_model_and_a_twin():
    rows = [row("trained", 1, explained_variance=0.9), row("step0", 1, explained_variance=0.5),
            row("trained", 2, explained_variance=0.9)]  # layer 2 has no twin
    (layer,) = verdicts(rows)
    assert layer.layer == 1 and layer.separating == ["explained variance"]


def test_compare_rows_write_and_read_back_with_each_scorers_flag(tmp_path):
    from randsae.tables import read_table, write_table

    rows = [row("trained", **auroc(0.9, 0.85, 0.95, fuzzing_chance=True, detection_chance=False),
                explained_variance=0.8, below_baseline=""),
            row("control", 5, entropy_mean=2.5, sampled_latents=24)]
    write_table(tmp_path / "t.csv", rows, CompareRow)
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["model", "variant", "layer"]
    assert {"auroc_fuzzing", "auroc_low_fuzzing", "judge_at_chance_fuzzing",
            "judge_at_chance_detection"} <= set(header)
    back = read_table(tmp_path / "t.csv", CompareRow)
    assert back[0].fuzzing.judge_at_chance is True and back[0].detection.judge_at_chance is False
    assert back[1].fuzzing is None and back[1].entropy_mean == 2.5 and back[1].layer == 5
    assert back[0].below_baseline is None  # an empty cell reads back as "not given"


def test_a_twin_whose_sae_did_not_train_is_left_out_and_named():
    trained = row("trained", explained_variance=0.80, below_baseline="")
    twins = {"rerandomized": row("rerandomized", explained_variance=0.50),
             "step0": row("step0", explained_variance=0.22, below_baseline="EV<PCA-32 CE<0")}
    result = separation("explained_variance", trained, twins)
    assert result.separates is True and result.excluded == {"step0": "EV<PCA-32 CE<0"}
    assert "left out" in result.why and "step0 (EV<PCA-32 CE<0)" in result.why
    assert result.twins == {"rerandomized": 0.5, "step0": 0.22}  # still shown
    # a twin that did not train cannot make a metric separate: here only it differs
    twins["rerandomized"] = row("rerandomized", explained_variance=0.79)
    assert separation("explained_variance", trained, twins).separates is False


def test_nothing_is_comparable_when_the_trained_sae_or_every_twin_did_not_train():
    failed = row("trained", explained_variance=0.3, below_baseline="EV<PCA-32")
    result = separation("explained_variance", failed, {"a": row("a", explained_variance=0.9)})
    assert result.separates is None and result.why.startswith("not comparable: the trained model's SAE")
    trained = row("trained", explained_variance=0.9)
    result = separation("cosine_sim", trained, {"a": row("a", cosine_sim=0.1, below_baseline="CE<0")})
    assert result.separates is None and "every twin" in result.why


def test_the_layer_answer_says_why_nothing_was_counted():
    from randsae.study.report import verdict_rows

    rows = [row("trained", 1, explained_variance=0.6, below_baseline="CE<0"), row("a", 1, explained_variance=0.9),
            row("trained", 2, explained_variance=0.9), row("a", 2, explained_variance=0.5),
            row("trained", 3, explained_variance=0.9), row("a", 3, explained_variance=0.89)]
    answers = {layer: answer for layer, answer, _ in verdict_rows(rows)}
    assert answers[1].startswith("nothing counted: not comparable: the trained model's SAE is below its baselines")
    assert answers[2] == "yes: explained variance"
    assert answers[3] == "no"
