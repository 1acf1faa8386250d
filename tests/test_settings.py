"""Settings declared once: the flags are generated from the fields, with their help and their defaults."""

import argparse
import dataclasses

import pytest

from randsae.autointerp.clients import JudgeSettings
from randsae.cli import build_parser
from randsae.errors import BadInput
from randsae.experiments.glove import GloveConfig
from randsae.experiments.toy import ToyConfig
from randsae.lm.examples import ExampleSettings
from randsae.settings import add_flags, documented, flag_of, given
from randsae.training.trainer import TopKTrainConfig


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize(("command", "settings"), [
    (("toy",), ToyConfig), (("glove",), GloveConfig), (("lm", "train"), TopKTrainConfig),
    (("lm", "latents"), ExampleSettings), (("lm", "autointerp"), JudgeSettings), (("baseline",), ExampleSettings),
    (("baseline",), JudgeSettings)])
def test_every_documented_field_is_a_flag_whose_help_states_its_default(command, settings):
    options = flags(subparser(*command))
    for f in documented(settings):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if isinstance(default, bool):
            name = flag_of(f) if not default else "--no-" + flag_of(f)[2:]
            assert name in options, (command, name)
            continue
        action = options[flag_of(f)]
        assert action.default is None  # only given flags override a preset or a file
        assert f.metadata["help"].replace("%", "%%") in action.help  # argparse reads "%%" as "%"
        if command != ("baseline",) and not f.metadata.get("shown") and not isinstance(default, list):
            stated = f"{default:,}" if isinstance(default, int) and default >= 10_000 else (
                f"{default:g}" if isinstance(default, float) else str(default))
            assert action.help.endswith(f"(default {stated})"), (action.help, stated)


def test_given_returns_only_the_flags_given():
    parser = argparse.ArgumentParser()
    add_flags(parser, TopKTrainConfig)
    args = parser.parse_args(["--k", "8", "--dead-tokens", "2M"])
    assert given(args, TopKTrainConfig) == {"k": 8, "dead_tokens": 2_000_000}


def test_a_prefix_keeps_two_settings_trees_apart():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")  # the study's model
    add_flags(parser, JudgeSettings, prefix="judge_")
    args = parser.parse_args(["--model", "pythia", "--llm-url", "http://x/v1", "--llm-model", "llama"])
    assert given(args, JudgeSettings, prefix="judge_") == {"url": "http://x/v1", "model": "llama"}
    assert args.model == "pythia"


def test_a_judge_that_cannot_be_is_refused_on_construction():
    with pytest.raises(BadInput, match="give --llm-url too"):
        JudgeSettings(model="llama")
    with pytest.raises(BadInput, match="--judge-dtype must be"):
        JudgeSettings(dtype="int3")
    assert JudgeSettings(url="http://x/v1", model="m").options()["windows_per_prompt"] == 5
    assert JudgeSettings().options() == {"llm": "smollm2", "device": "auto", "batch_size": 32, "dtype": "float32"}


def test_a_settings_file_is_read_field_by_field_and_flags_override_it(tmp_path, capsys):
    from randsae.cli import main, parse

    path = tmp_path / "train.toml"
    path.write_text('k = 8\nexpansion = 2\nwarmup-steps = 3\nno_check = true\n')
    args = parse(["lm", "train", "--acts", "A", "--config", str(path), "--k", "16", "--out", "O"])
    assert (args.k, args.expansion, args.warmup_steps, args.no_check) == (16, 2, 3, True)  # the flag wins
    path.write_text('k = "eight"\n')
    with pytest.raises(BadInput, match="train.toml: setting k must be an int"):
        parse(["lm", "train", "--acts", "A", "--config", str(path), "--out", "O"])
    path.write_text('kk = 8\n')
    assert main(["-q", "lm", "train", "--acts", str(tmp_path / "none"), "--config", str(path), "--out",
                 str(tmp_path / "out")]) == 2
    known = ("unknown setting 'kk'; known settings are acts, adam_beta1, adam_beta2, architecture, autocast, "
             "auxk_alpha")
    assert known in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command,key,value", [
    (["lm", "activations"], "batch_size", 3), (["lm", "eval", "--sae", "S"], "tokens", "8k"),
    (["lm", "compare", "R"], "format", "pdf"), (["lm", "latents", "--sae", "S"], "window", 9),
    (["lm", "autointerp"], "seed", 5), (["toy2d"], "num_samples", 77), (["plot", "R"], "format", "svg")])
def test_every_command_reads_a_settings_file_and_its_flags_win(tmp_path, command, key, value):
    from randsae.cli import parse

    path = tmp_path / "c.toml"
    path.write_text(f"{key} = {value!r}\n".replace("'", '"'))
    assert getattr(parse([*command, "--out", "O", "--config", str(path)]), key) == value
    flag = "--" + key.replace("_", "-")
    assert getattr(parse([*command, "--out", "O", "--config", str(path), flag, "1"]), key) in (1, "1")
    path.write_text("colour = 1\n")
    with pytest.raises(BadInput, match=f"c.toml: unknown setting 'colour'; known settings are .*{key}"):
        parse([*command, "--out", "O", "--config", str(path)])


def test_export_reads_no_setting_that_is_its_input_or_output(tmp_path):
    from randsae.cli import parse

    path = tmp_path / "c.toml"
    path.write_text('out = "elsewhere"\n')
    with pytest.raises(BadInput, match=r"unknown setting 'out'; known settings are none \(its inputs"):
        parse(["export", "R", "--format", "sparsify", "--out", "O", "--config", str(path)])


def test_a_judge_table_or_bare_judge_keys_set_the_judge_flags(tmp_path):
    from randsae.cli import parse

    path = tmp_path / "judge.toml"
    path.write_text('scorers = ["fuzzing", "detection"]\nllm = "gemma"\n[judge]\ntimeout = 30\n')
    args = parse(["lm", "autointerp", "--latents", "L", "--config", str(path), "--out", "O"])
    assert (args.scorers, args.judge_llm, args.judge_timeout) == ("fuzzing,detection", "gemma", 30.0)
    path.write_text('[judge]\ntimeout = "long"\n')
    with pytest.raises(BadInput, match="setting judge_timeout must be a float"):
        parse(["lm", "autointerp", "--latents", "L", "--config", str(path), "--out", "O"])
    path.write_text('calibrate = "yes"\n')
    with pytest.raises(BadInput, match=r"setting calibrate \(--calibrate\) must be true or false"):
        parse(["lm", "autointerp", "--config", str(path), "--out", "O"])


def test_a_study_reads_its_settings_tree_from_a_file(tmp_path):
    from randsae.autointerp.clients import JudgeSettings
    from randsae.cli.baseline import with_file
    from randsae.study.settings import settings_for

    path = tmp_path / "study.toml"
    path.write_text('model = "my-model"\nk = 16\ntokens = 50000\n\n[examples]\nsample = 24\n\n'
                    '[judge]\nurl = "http://127.0.0.1:8000/v1"\nmodel = "llama"\n')
    flags = {"k": 8, "tokens": None, "examples": {"window": 16}, "judge": {}, "autointerp": {}}
    settings = settings_for("demo", with_file(flags, str(path)))
    assert settings.model == "my-model" and settings.k == 8 and settings.tokens == 50_000  # the flag wins
    assert settings.examples.sample == 24 and settings.examples.window == 16
    assert settings.examples.min_examples == 20  # the preset's, where neither says otherwise
    # a server replaces the local judge
    assert settings.judge == JudgeSettings(url="http://127.0.0.1:8000/v1", model="llama")
    path.write_text('[judge]\ntimeout = "long"\n')
    with pytest.raises(BadInput, match="setting timeout must be a float"):
        with_file(flags, str(path))
    path.write_text('preset = "demo"\n')
    with pytest.raises(BadInput, match="give it as --preset"):
        with_file(flags, str(path))


def test_a_settings_file_may_name_a_setting_by_its_flag(tmp_path):
    from randsae.cli import parse

    path = tmp_path / "a.toml"
    path.write_text('prompt-format = "simple"\njudged_latents = 3\n')
    args = parse(["lm", "autointerp", "--latents", "L", "--config", str(path), "--out", "O"])
    assert (args.style, args.judged_latents) == ("simple", 3)


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (sub)command's parser, by its path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


def test_every_commands_help_renders():
    """A help text is prose: a "%" in a setting's help ("the last 20%") once made `lm train --help` and
    `recovery --help` raise from argparse's formatter."""
    seen = []
    for path, parser in commands(build_parser()):
        text = parser.format_help()
        assert "usage:" in text, path
        seen.append(" ".join(path))
    assert {"lm train", "recovery", "baseline", "toy"} <= set(seen)
    assert "the last 20%" in " ".join(subparser("lm", "train").format_help().split())


def test_baseline_help_states_every_presets_values():
    """What `--preset demo` (and paper) sets is shown beside each flag's default, from the presets
    themselves: a value changed in a preset cannot leave the help behind."""
    from randsae.settings import value_text
    from randsae.study.settings import PRESETS, BaselineSettings

    text = " ".join(subparser("baseline").format_help().split())
    parts = {"examples": ExampleSettings, "judge": JudgeSettings}
    checked = 0
    for name, values in PRESETS.items():
        for key, value in values.items():
            cls, shown = (parts[key], value) if key in parts else (BaselineSettings, {key: value})
            fields = {f.name: f for f in documented(cls)}
            for field_name, field_value in shown.items():
                if field_name in fields:
                    # argparse wraps words at spaces only, so the stated value is one unbroken run of words
                    assert f"the {name} preset: {value_text(fields[field_name], field_value)}" in text, field_name
                    checked += 1
    assert checked >= 12
    assert "the demo preset: 3,9" in text and "the demo preset: 32,000" in text


def test_a_study_recorded_before_its_settings_were_typed_reads_as_it_ran():
    """An older config.json: the stages' settings as the fields given, the study's scorers inside autointerp's."""
    from randsae.study.records import recorded_settings

    old = {"model": "smollm2", "preset": "demo", "examples": {"sample": 24}, "judge": {"llm": "smollm2"},
           "autointerp": {"scorers": ["tokens", "probing"], "bootstrap": 200}}
    settings = recorded_settings(old)
    assert settings.scorers == ["tokens", "probing"] and settings.autointerp.scorers == ["tokens"]
    assert settings.autointerp.bootstrap == 200 and settings.examples.sample == 24
    assert settings.examples.window == 32 and settings.probing.probe_k == [1, 2, 5]  # the rest their defaults
