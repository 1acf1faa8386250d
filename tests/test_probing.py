"""k-sparse probing and first-letter absorption where the answer is known: synthetic block outputs that carry (or
lack) a planted contextual feature and a planted token feature, an SAE built by hand, a letter absorbed by a
token latent; and the user's labelled texts (--probe-data) through `lm probe` on the tiny model."""

import json

import numpy as np
import pytest
import torch

from randsae.experiments.lm_probe import ProbeSettings, Rows, probe_layer
from randsae.io import read_rows
from randsae.lm.probe_tasks import token_tasks
from randsae.probing import SparseCodes, absorption
from randsae.sae import TopKSAE

WORDS = ["(", ")", "bird", "cat", "dog", "fish", "goat", "hen", "mole", "owl", "lion", "leaf", "lute", "lamp"]
SETTINGS = ProbeSettings(probe_k=[1, 2])


def basis_sae(d: int, k: int) -> TopKSAE:
    """An SAE whose latents are the input's dimensions, positive and negative (2d latents, ReLU then TopK)."""
    sae = TopKSAE(d, 2 * d, k)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def contexts(rng: np.random.Generator, count: int, length: int = 48) -> np.ndarray:
    """Token ids of WORDS: words at random, with a bracketed stretch of 6–12 tokens in most contexts."""
    ids = rng.integers(2, len(WORDS), size=(count, length))
    for row in ids:
        if rng.random() < 0.8:
            start = int(rng.integers(1, length - 14))
            end = start + int(rng.integers(7, 13))
            row[start], row[end] = 0, 1
    return ids


def block_outputs(ids: np.ndarray, embedding: np.ndarray, carries_context: bool,
                  rng: np.random.Generator) -> torch.Tensor:
    """Each token's embedding (dimension 1 carries "starts with b": the planted token feature), plus, in the model
    that carries it, +3 on dimension 0 inside brackets (the planted contextual feature), plus noise."""
    x = embedding[ids] + 0.3 * rng.normal(size=(*ids.shape, embedding.shape[1]))
    if carries_context:
        depth = np.cumsum((ids == 0).astype(int) - (ids == 1).astype(int), axis=1)
        inside = (depth - (ids == 0).astype(int)) > 0  # after an opening bracket, before its close
        x[..., 0] += 3.0 * inside
    return torch.tensor(x.reshape(-1, x.shape[-1]), dtype=torch.float32)


def accuracy(rows: list[dict], task: str, probe: str = "sae", k: int = 1) -> float:
    return next(r["accuracy"] for r in rows if r["task"] == task and r["probe"] == probe and r["k"] == k)


def test_the_probes_find_a_planted_token_feature_everywhere_and_a_contextual_one_only_where_the_model_carries_it():
    rng = np.random.default_rng(0)
    d = 16
    embedding = rng.normal(scale=0.5, size=(len(WORDS), d))
    embedding[:, :2] = 0.0
    embedding[WORDS.index("bird"), 1] = 3.0  # "starts with b": bird is the only b-word
    texts = {i: f" {w}" for i, w in enumerate(WORDS)}
    train_ids, test_ids = contexts(rng, 120), contexts(rng, 60)
    tasks = token_tasks(train_ids, texts)
    test_labels = {t.name: t.labels for t in token_tasks(test_ids, texts)}
    found = {}
    for carrier in (True, False):
        train = Rows(block_outputs(train_ids, embedding, carrier, rng), train_ids.reshape(-1),
                     {t.name: t.labels for t in tasks})
        test = Rows(block_outputs(test_ids, embedding, carrier, rng), test_ids.reshape(-1), test_labels)
        found[carrier], _ = probe_layer(basis_sae(d, k=d), train, test, tasks, SETTINGS)
    carrier, twin = found[True], found[False]
    # the token feature: one latent answers it in both models, as the token ids do
    for rows in (carrier, twin):
        assert accuracy(rows, "first letter b") > 0.95
        assert accuracy(rows, "first letter b", "tokens", 0) > 0.95
    # the contextual feature: one latent of the model that carries it; chance in the twin, and for the token alone
    assert accuracy(carrier, "inside brackets") > 0.9
    assert accuracy(carrier, "inside brackets", "input", 0) > 0.9
    assert 0.35 < accuracy(twin, "inside brackets") < 0.65
    assert 0.35 < accuracy(twin, "inside brackets", "input", 0) < 0.65
    assert accuracy(carrier, "inside brackets", "tokens", 0) < 0.65
    # every probed task has balanced sets of the sizes it reports, and one row per probe and k
    names = {r["task"] for r in carrier}
    assert all(sum(1 for r in carrier if r["task"] == n) == 4 for n in names)  # k = 1, 2; input; tokens


def test_absorption_gives_its_known_answer_where_a_token_latent_absorbs_a_letter():
    """"l" words carry a letter direction (dimension 0). The SAE has a general "starts with l" latent, silent on
    "lamp" (its encoder subtracts lamp's own direction), and a latent for lamp alone whose decoder holds the letter
    direction too: lamp's letter is absorbed. The letter's main latent is the general one (lamp is too rare for
    a second latent to raise the F1 by 0.03), so every lamp the probe calls right is fully absorbed and no other
    "l" word is: the mean absorption fraction is lamp's share of those words."""
    rng = np.random.default_rng(1)
    vocabulary = ["bird", "cat", "dog", "fish", "goat", "hen", "mole", "owl", "lion", "leaf", "lute", "lamp"]
    weights = np.array([0.075] * 8 + [0.128, 0.128, 0.128, 0.016])
    d = 1 + len(vocabulary)
    lamp = vocabulary.index("lamp")
    embedding = np.zeros((len(vocabulary), d))
    for i, word in enumerate(vocabulary):
        embedding[i, 1 + i] = 3.0
        embedding[i, 0] = 3.0 if word.startswith("l") else 0.0
    latents = d + 1
    sae = TopKSAE(d, latents, latents)
    encoder, decoder = torch.zeros(latents, d), torch.zeros(latents, d)
    encoder[0, 0], encoder[0, 1 + lamp], decoder[0, 0] = 1.0, -1.0, 1.0  # "starts with l", silent on lamp
    for i in range(len(vocabulary)):
        if i != lamp:
            encoder[1 + i, 1 + i] = decoder[1 + i, 1 + i] = 1.0  # each word's own latent
    encoder[-1, 1 + lamp] = 1.0  # lamp's latent: its own direction and the letter's
    decoder[-1, 0] = decoder[-1, 1 + lamp] = 2 ** -0.5
    with torch.no_grad():
        sae.W_enc.copy_(encoder)
        sae.W_dec.copy_(decoder)
        sae.b_enc.zero_()
        sae.b_enc[0] = -0.5  # the noise on lamp does not wake the general latent
        sae.b_dec.zero_()

    def split(count: int):
        ids = rng.choice(len(vocabulary), size=(count, 40), p=weights / weights.sum())
        x = embedding[ids] + 0.05 * rng.normal(size=(*ids.shape, d))
        return ids, torch.tensor(x.reshape(-1, d), dtype=torch.float32)

    texts = {i: f" {w}" for i, w in enumerate(vocabulary)}
    (train_ids, train_x), (test_ids, test_x) = split(150), split(150)
    tasks = [t for t in token_tasks(train_ids, texts, ("token",)) if t.name.startswith("first letter")]
    test_labels = {t.name: t.labels for t in token_tasks(test_ids, texts, ("token",))}
    _, absorbed = probe_layer(sae.eval(), Rows(train_x, train_ids.reshape(-1), {t.name: t.labels for t in tasks}),
                              Rows(test_x, test_ids.reshape(-1), test_labels), tasks,
                              ProbeSettings(probe_k=[1], probe_test_examples=100_000))
    (row,) = [r for r in absorbed if r["letter"] == "l"]
    assert all(r["absorption_fraction"] == 0 for r in absorbed if r["letter"] != "l")  # one word, one latent
    words = test_ids.reshape(-1)
    is_l = np.isin(words, [vocabulary.index(w) for w in ("lion", "leaf", "lute", "lamp")])
    share = float((words[is_l] == lamp).mean())
    assert row["letter"] == "l" and row["main_latents"] == 1 and row["probe_f1"] > 0.99
    assert row["words"] == int(is_l.sum())  # the probe calls every "l" word right
    assert row["absorption_fraction"] == pytest.approx(share, abs=1e-9)
    assert row["full_absorption"] == pytest.approx(share, abs=1e-9)
    assert 0.01 < share < 0.1


def test_absorption_fraction_of_single_words_follows_saebench():
    """Direct cases of the formula: a main latent carrying it all (0), a main latent silent and an aligned latent
    carrying it (1, full), both sharing (partial), an absorber too weakly aligned for the fraction."""
    # x·p = 2.0, 1.2, 1.9, 0.05
    decoder = np.array([[1.0, 0.0], [0.6, 0.8], [0.05, 0.9987]])  # main; aligned 0.6; barely aligned
    direction = np.array([1.0, 0.0])
    x = np.array([[2.0, 0.0], [1.2, 1.6], [1.9, 1.2], [0.05, 1.0]])
    codes = SparseCodes(torch.tensor([[2.0, 0.0], [2.0, 0.0], [1.0, 1.5], [1.0, 0.0]]),
                        torch.tensor([[0, 1], [1, 0], [0, 1], [2, 0]]), 3)
    fraction, full = absorption(x, codes, decoder, direction, main=[0])
    assert fraction[0] == 0.0 and not full[0]
    assert fraction[1] == pytest.approx(1.0) and full[1]
    # the main latent gives 1.0 of the probe's 1.9, the absorber 0.9 (≥ 40%): 0.9 / (0.9 + 1.0) absorbed
    assert fraction[2] == pytest.approx(0.9 / 1.9) and not full[2]
    # an absorber at cosine 0.05: below the fraction's 0.1, above full absorption's 0.025 (SAEBench's two scores)
    assert fraction[3] == 0.0 and full[3]


def test_probe_data_runs_on_a_jsonl_file_of_labelled_texts(tiny_latents, tmp_path):
    """--probe-data: a JSONL file of texts and labels, mean-pooled per text: the bag of tokens separates texts that
    differ by their words, and every probe writes its row."""
    from randsae.cli import main

    rng = np.random.default_rng(0)
    lines = []
    for i in range(80):
        label = "fruit" if i % 2 else "water"
        words = ["apple", "pear", "plum"] if label == "fruit" else ["river", "lake", "sea"]
        text = " ".join(rng.choice(words, size=6)) + " and then the story went on"
        lines.append(json.dumps({"text": text, "label": label}))
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "probe"
    assert main(["-q", "lm", "probe", "--sae", str(tiny_latents.parent / "sae"), "--probe-data", str(data),
                 "--probe-tasks", "", "--probe-min-examples", "5", "--probe-k", "1,2", "--device", "cpu",
                 "--out", str(out)]) == 0
    rows = read_rows(out / "probing.csv")
    assert {r["family"] for r in rows} == {"data"}
    assert {(r["layer"], r["probe"], r["k"]) for r in rows} == {
        (layer, probe, k) for layer in ("0", "2") for probe, k in (("sae", "1"), ("sae", "2"), ("input", "0"),
                                                                    ("tokens", "0"))}
    assert all(r["task"] == "label water" for r in rows)  # two labels: one task
    tokens = [float(r["accuracy"]) for r in rows if r["probe"] == "tokens"]
    assert min(tokens) > 0.9
    assert all(int(r["test_examples"]) == 16 and int(r["train_examples"]) >= 60 for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["probe_data"] == str(data) and config["probe_k"] == [1, 2]


def plan_of(tiny_dir, tmp_path, *extra: str) -> list:
    """The plan rows of a tiny-model study with these flags, at stated rates (nothing measured)."""
    import dataclasses

    from test_layer_groups import RATES

    from randsae.cli import parse
    from randsae.cli.baseline import baseline_overrides
    from randsae.study.machines import Machine
    from randsae.study.plan import plan_study
    from randsae.study.preflight import preflight, study_scale
    from randsae.study.settings import settings_for

    args = parse(["baseline", "--model", str(tiny_dir), "--layers", "0,2", "--variants", "trained,control",
                  "--device", "cpu", *extra, "--out", str(tmp_path / "study")])
    settings = dataclasses.replace(settings_for("demo", baseline_overrides(args)), cache=True)
    check = preflight(settings)
    assert check.shape is not None
    return plan_study(check.shape, study_scale(settings, check, 1, True), RATES,
                      Machine("test", "cpu", 1, 2**34, 2**40, 2))


def test_the_plan_has_a_probing_stage_where_the_scorers_ask_for_one(tiny_dir, tmp_path):
    every = {(r.unit, r.stage) for r in plan_of(tiny_dir, tmp_path)}
    assert {("trained", "probing"), ("control", "probing"), ("trained", "autointerp")} <= every
    only = {(r.unit, r.stage) for r in plan_of(tiny_dir, tmp_path, "--scorers", "probing")}
    assert ("trained", "probing") in only and not any(stage == "autointerp" for _, stage in only)
    judged = {(r.unit, r.stage) for r in plan_of(tiny_dir, tmp_path, "--scorers", "tokens,fuzzing")}
    assert ("trained", "autointerp") in judged and not any(stage == "probing" for _, stage in judged)
    rows = [r for r in plan_of(tiny_dir, tmp_path) if r.stage == "probing"]
    assert all(r.seconds > 0 and r.tokens > 0 and r.peak_memory_bytes > 0 for r in rows)


@pytest.mark.slow
def test_a_study_of_probes_alone_runs_without_a_judge_and_reads_your_labels(tiny_dir, tmp_path):
    """--scorers probing,absorption: no autointerp stage, no judge asked; --probe-data's family reaches the verdict
    and the report."""
    from test_baseline import TINY

    from randsae.cli import main

    data = tmp_path / "labels.jsonl"
    pairs = [("apple", "fruit"), ("river", "water")] * 50
    data.write_text("".join(json.dumps({"text": f"{word} " * 8 + "and so the day went", "label": label}) + "\n"
                            for word, label in pairs))
    out = tmp_path / "study"
    assert main(["-q", "baseline", "--model", str(tiny_dir), *TINY, "--variants", "trained,control",
                 "--scorers", "probing,absorption", "--probe-data", str(data), "--probe-min-examples", "5",
                 "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "none", "--out", str(out)]) == 0
    stages = {(r["unit"], r["stage"]) for r in json.loads((out / "stages.json").read_text())}
    assert ("trained", "probing") in stages and not any(stage == "autointerp" for _, stage in stages)
    verdict = read_rows(out / "compare" / "verdict.csv")
    assert {"probing_token", "probing_data"} <= {r["metric"] for r in verdict}
    assert {r["family"] for r in read_rows(out / "compare" / "probing.csv")} >= {"token", "data"}
    page = (out / "report.html").read_text()
    assert "data-task probing" in page and "<section id='probing'>" in page


def test_an_arm_below_its_baselines_is_marked_on_the_probing_table(tmp_path):
    """The report's probing table shows a below-baseline arm's numbers with the reason they do not count."""
    from randsae.study.summaries import probe_grids, probe_summary
    from randsae.tables import ProbeRow, write_table

    units = {}
    for arm, accuracy in (("trained", 0.7), ("step0", 0.5)):
        units[arm] = tmp_path / arm
        units[arm].mkdir()
        write_table(units[arm] / "probing.csv", [ProbeRow("m", arm, 3, "token", "capitalised", "sae", 1, accuracy,
                                                          40, 40)], ProbeRow)
    rows = probe_summary(units, {("step0", 3): "EV 0.297 < PCA-32's 0.386"})
    ((layer, header, cells, notes),) = probe_grids(rows)
    assert layer == 3 and header == ["tasks", "probe", "trained", "step0 ¹"]
    assert cells == [["token (1 tasks)", "SAE, top-1 latent", "0.700", "0.500"]]
    assert notes == ["¹ step0: its SAE is below its baselines (EV 0.297 < PCA-32's 0.386): not comparable in the "
                     "verdict."]


def test_an_arm_still_learning_is_marked_on_the_probing_table(tmp_path):
    """The probing table qualifies an SAE that is still learning as it does one below its baselines."""
    from randsae.study.summaries import probe_grids, probe_summary
    from randsae.tables import ProbeRow, write_table

    units = {}
    for arm in ("trained", "control"):
        units[arm] = tmp_path / arm
        units[arm].mkdir()
        write_table(units[arm] / "probing.csv", [ProbeRow("m", arm, 9, "token", "capitalised", "sae", 1, 0.6, 40,
                                                          40)], ProbeRow)
    learning = "is still learning (held-out EV rose 0.724 → 0.778 (+0.054 > δ 0.01) from 15,872 to 32,000 tokens)"
    ((_, header, _, notes),) = probe_grids(probe_summary(units, {("trained", 9): learning}))
    assert header == ["tasks", "probe", "trained ¹", "control"]
    assert notes == [f"¹ trained: its SAE {learning}: not comparable in the verdict."]
