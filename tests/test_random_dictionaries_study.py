"""Random dictionaries in a study: an arm per dictionary on the trained model, trained on its activations,
through eval, latents, autointerp, the comparison, the verdict and the report."""

import json

import pytest
import torch
from judges import ScriptedJudge
from test_baseline import tiny_args

from randsae.cli import main
from randsae.io import read_rows
from randsae.sae import load
from randsae.sae.dictionaries import random_directions
from randsae.seeding import derive_seed


def settings_of(args: list[str]):
    from randsae.cli import parse
    from randsae.cli.baseline import baseline_overrides, with_file
    from randsae.study.settings import settings_for

    parsed = parse(args)
    return settings_for(parsed.preset, with_file(baseline_overrides(parsed), parsed.config))


@pytest.mark.slow
def test_a_study_with_a_frozen_decoder_arm(tiny_dir, tmp_path):
    out = tmp_path / "study"
    with ScriptedJudge("random", seed=2) as judge:
        args = tiny_args(tiny_dir, out, "--variants", "trained,rerandomized", "--dictionaries",
                         "trained,frozen-decoder", "--scorers", "tokens", "--llm-url", judge.url, "--llm-model",
                         "scripted")
        assert main(args) == 0
        # a study recorded before random dictionaries existed resumes under the default (trained only)
        record = json.loads((out / "config.json").read_text())
        old = tmp_path / "old"
        old.mkdir()
        for key in ("dictionaries", "dictionaries_on_twins", "dictionary_cone"):
            record["settings"].pop(key)
        (old / "config.json").write_text(json.dumps(record))
        old_args = [a for a in args if a not in ("--dictionaries", "trained,frozen-decoder")]
        old_args[old_args.index("--out") + 1] = str(old)
        from randsae.study.records import check_out

        check_out(old, settings_of(old_args))  # not refused as "other settings"
        assert main(args) == 0  # the same command again: everything done
    stages = json.loads((out / "stages.json").read_text())
    assert {r["unit"] for r in stages if r["status"] == "done"} == {"trained", "trained+frozen-decoder",
                                                                       "rerandomized", ""}
    arm = out / "trained+frozen-decoder"
    assert not (arm / "acts").exists()  # it reads the trained model's activations
    config = json.loads((arm / "sae" / "config.json").read_text())
    assert config["train"]["dictionary"] == "frozen-decoder"
    assert config["source"] == json.loads((out / "trained" / "sae" / "config.json").read_text())["source"]
    for layer in (0, 2):  # the decoder is exactly the random draw after training: seeded by the SAE's own seed
        sae = load(arm / "sae" / f"layer.{layer}")
        drawn = random_directions(sae.num_latents, sae.num_inputs,
                                  derive_seed(derive_seed(1, "layer", layer), "dictionary", "frozen-decoder"))
        assert torch.equal(sae.W_dec.detach(), drawn)
        assert not torch.equal(sae.W_dec, load(out / "trained" / "sae" / f"layer.{layer}").W_dec)
    variants = {r["variant"] for r in read_rows(out / "compare" / "results.csv")}
    assert variants == {"trained", "trained+frozen-decoder", "rerandomized"}
    verdict = (out / "compare" / "verdict.md").read_text()
    assert "## Random dictionaries" in verdict
    assert "Layer 0, the trained model: frozen-decoder reaches " in verdict
    assert "of its explained variance" in verdict or "(no share below zero)" in verdict
    from randsae.study.evidence import ShareRow
    from randsae.tables import read_table

    shares = read_table(out / "compare" / "dictionaries.csv", ShareRow)
    assert {(r.layer, r.dictionary) for r in shares} == {(0, "frozen-decoder"), (2, "frozen-decoder")}
    for r in shares:  # the share is the ratio where both values are above zero, and says why it is not counted
        positive = r.value > 0 and r.trained_value > 0
        assert r.share == (pytest.approx(r.value / r.trained_value) if positive else None)
        assert r.qualifier == "" or "below its baselines" in r.qualifier or "latents" in r.qualifier
    page = (out / "report.html").read_text()
    assert "id='dictionaries'" in page and "frozen-decoder reaches" in page
