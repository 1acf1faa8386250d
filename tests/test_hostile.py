"""Hostile inputs: outputs aimed at inputs, faults that used to surface as tracebacks,
nonsense that used to be accepted, a study that checked its settings too late, full disks and broken judges.
Every case is a real subprocess of `python -m randsae`: exit 2 and one line for the user's mistakes, exit 1 and
one line for a judge that scored nothing, every input byte-identical, no traceback."""

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from judges import ScriptedJudge
from safetensors.torch import load_file, save_file
from test_bad_input import LATENTS, TRAIN, Case, checksums, edit_csv_line, runs, shard  # noqa: F401 (fixture)


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(str(path))
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def held_out(directory: Path) -> Path:
    return directory / "held_out.safetensors"


def nan_weights(c: Case) -> Path:
    sae = c.copy("sae")
    weights = sae / "layer.2" / "sae_weights.safetensors"
    edit_tensors(weights, lambda t: t["W_enc"].view(-1)[:3].fill_(float("nan")))
    return sae


def other_run(c: Case, name: str) -> Path:
    """A second copy of finished run `name`, watched like the first."""
    import shutil

    target = c.tmp / f"other-{name}"
    shutil.copytree(c.runs / name, target)
    c.watched.append(target)
    return target


def acts_with_layer_2(c: Case, change) -> Path:
    return acts_with(c, "layer.2", change)


def acts_with(c: Case, name: str, change) -> Path:
    """A copy of the activation cache whose first shard's tensor `name` is changed."""
    acts = c.copy("acts")
    edit_tensors(shard(acts), lambda t: t.__setitem__(name, change(t[name])))
    return acts


def train_on(acts: Path, c: Case) -> list[str]:
    return ["lm", "train", "--acts", str(acts), *TRAIN, "--layers", "2", "--out", str(c.tmp / "new-sae")]


def eval_as_control(c: Case) -> Path:
    ev = c.copy("eval")
    edit_csv_line(ev / "results.csv", 2, lambda line: line.replace(",trained,", ",control,", 1))
    edit_csv_line(ev / "results.csv", 3, lambda line: line.replace(",trained,", ",control,", 1))
    return ev


def study_with_stages(c: Case, stages: str) -> list[str]:
    """A demo study's OUT whose config.json matches the command below and whose stages.json is `stages`."""
    from randsae import runs as contract
    from randsae.study.settings import STUDY, settings_for

    out = c.tmp / "study"
    out.mkdir()
    settings = settings_for("demo", {"model": c.model, "layers": "0"})
    (out / "config.json").write_text(json.dumps(contract.stamped("baseline", {"study": STUDY,
                                                                             "settings": asdict(settings)})))
    c.watched.append(out)
    (out / "stages.json").write_text(stages)
    return ["baseline", "--preset", "demo", "--model", c.model, "--layers", "0", "--out", str(out)]


def configured(command, text: str):
    """A case: `command` (a builder of arguments) given a --config file holding `text`."""
    return lambda c: command(c, "--config", written(c, "settings.toml", text))


def recovery_with(c: Case, *args: str) -> list[str]:
    return ["recovery", "--preset", "quick", *args, "--out", str(c.tmp / "rec")]


def baseline(c: Case, *args: str) -> list[str]:
    return ["baseline", "--preset", "demo", "--model", c.model, "--layers", "0", *args, "--out",
            str(c.tmp / "study")]


CASES = {
    # outputs never go into inputs, nor into another command's output
    "export: --out the run it exports": (lambda c: ["export", str(c.copy("sae")), "--format", "sparsify", "--out",
                                                    str(c.tmp / "sae")], "is the input RUN"),
    "export: --out inside the run": (lambda c: ["export", str(c.copy("sae")), "--format", "saelens", "--out",
                                                str(c.tmp / "sae" / "exported")], "lies inside the input RUN"),
    "export: --out another lm train run": (
        lambda c: ["export", str(c.runs / "sae"), "--format", "sparsify", "--out", str(other_run(c, "sae"))],
        "holds the output of `randsae lm train`"),
    "export: --out an lm eval directory": (
        lambda c: ["export", str(c.runs / "sae"), "--format", "sparsify", "--out", str(c.copy("eval"))],
        "holds the output of `randsae lm eval`"),
    "export: --out an activation cache": (lambda c: ["export", str(c.runs / "sae"), "--format", "saelens", "--out",
                                                     str(c.copy("acts"))], "holds an activation cache"),
    "compare: --out one of the runs": (
        lambda c: ["lm", "compare", str(c.copy("eval")), "--out", str(c.tmp / "eval")], "is the input RUNS"),
    "latents: --out an lm eval directory": (
        lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--out", str(c.copy("eval"))],
        "holds the output of `randsae lm eval`"),
    "latents: --out the activation cache": (
        lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--acts", str(c.runs / "acts"),
                   "--out", str(c.copy("acts"))], "holds an activation cache"),
    "latents: --out the SAE run": (lambda c: ["lm", "latents", "--sae", str(c.copy("sae")), *LATENTS, "--out",
                                              str(c.tmp / "sae")], "is the input --sae"),
    "autointerp: --out an lm eval directory": (
        lambda c: ["lm", "autointerp", "--latents", str(c.runs / "latents"), "--scorers", "tokens", "--out",
                   str(c.copy("eval"))], "holds the output of `randsae lm eval`"),
    "autointerp: --out the latent records": (
        lambda c: ["lm", "autointerp", "--latents", str(c.copy("latents")), "--scorers", "tokens", "--out",
                   str(c.tmp / "latents")], "is the input --latents"),
    "train: --out the activation cache": (lambda c: ["lm", "train", "--acts", str(c.copy("acts")), *TRAIN, "--out",
                                                     str(c.tmp / "acts")], "is the input --acts"),
    "train: --out another cache": (lambda c: ["lm", "train", "--acts", str(c.runs / "acts"), *TRAIN, "--out",
                                              str(c.copy("control-acts"))], "holds an activation cache"),
    "eval: --out the SAE run": (lambda c: ["lm", "eval", "--sae", str(c.copy("sae")), "--tokens", "256", "--out",
                                           str(c.tmp / "sae" / "eval")], "lies inside the input --sae"),
    "eval: --out latent records": (
        lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--tokens", "256", "--out", str(c.copy("latents"))],
        "holds the output of `randsae lm latents`"),
    "activations: --out an SAE run": (
        lambda c: ["lm", "activations", "--model", c.model, "--tokens", "2k", "--out", str(c.copy("sae"))],
        "holds the output of `randsae lm train`"),
    # what used to be a traceback
    "baseline: stages.json an object": (lambda c: study_with_stages(c, '{"stage": "acts"}'),
                                        "is not a study's list of stage records"),
    "baseline: stages.json without keys": (lambda c: study_with_stages(c, '[{"variant": "trained"}]'),
                                           "is not a study's list of stage records"),
    "baseline: stages.json of the wrong types": (
        lambda c: study_with_stages(c, '[{"variant": 3, "stage": "acts", "status": "done", "seconds": "x"}]'),
        "is not a study's list of stage records"),
    "baseline: stages.json garbage": (lambda c: study_with_stages(c, "{[oops"), "stages.json is not a study's"),
    "train: token ids beyond the vocabulary": (
        lambda c: train_on(_edited_held_out(c, "acts", lambda t: t.fill_(10 ** 7)), c), "outside the model's"),
    "eval: token ids below zero": (
        lambda c: ["lm", "eval", "--sae", str(_edited_held_out(c, "sae", lambda t: t.fill_(-3))), "--tokens",
                   "256", "--out", str(c.tmp / "new-eval")], "holds token id -3"),
    "train: a cache with no held-out context": (
        lambda c: train_on(_edited_held_out(c, "acts", None), c), "holds no held-out context"),
    "glove: every vector zero": (lambda c: ["glove", "--vectors", str(c.file("z.txt", "a 0 0\nb 0 0\nc 0 0\n")),
                                            "--l1", "0.1", "--seeds", "1", "--epochs", "1", "--out",
                                            str(c.tmp / "g")], "variance 0"),
    "glove: every vector the same": (lambda c: ["glove", "--vectors", str(c.file("z.txt", "a 1 2\nb 1 2\n")),
                                                "--l1", "0.1", "--seeds", "1", "--epochs", "1", "--out",
                                                str(c.tmp / "g")], "variance 0"),
    # weights and activations that are no numbers to train or evaluate on
    "eval: SAE weights holding NaN": (lambda c: ["lm", "eval", "--sae", str(nan_weights(c)), "--tokens", "256",
                                                 "--out", str(c.tmp / "new-eval")], "not finite numbers"),
    "export: SAE weights holding NaN": (lambda c: ["export", str(nan_weights(c)), "--format", "sparsify", "--out",
                                                   str(c.tmp / "exp")], "not finite numbers"),
    "latents: SAE weights holding NaN": (lambda c: ["lm", "latents", "--sae", str(nan_weights(c)), *LATENTS,
                                                    "--out", str(c.tmp / "lat")], "not finite numbers"),
    "train: activations all zero": (lambda c: train_on(acts_with_layer_2(c, torch.zeros_like), c),
                                    "all equal (variance 0)"),
    "train: activations all the same": (
        lambda c: train_on(acts_with_layer_2(c, lambda t: torch.full_like(t, 3.0)), c), "all equal (variance 0)"),
    "train: activations holding inf": (
        lambda c: train_on(acts_with_layer_2(c, lambda t: t.index_fill(0, torch.tensor([0]), float("inf"))), c),
        "not finite"),
    "train: integer activations": (lambda c: train_on(acts_with_layer_2(c, lambda t: t.to(torch.int32)), c),
                                   "as I32, where the manifest implies F16"),
    # nonsense that used to be accepted
    "autointerp: --llm beside --llm-url": (
        lambda c: ["lm", "autointerp", "--latents", str(c.runs / "latents"), "--llm", "smollm2-big", "--llm-url",
                   "http://127.0.0.1:9/v1", "--llm-model", "m", "--out", str(c.tmp / "ai")], "give one of them"),
    "compare: latents of a variant no eval holds": (
        lambda c: ["lm", "compare", str(eval_as_control(c)), "--latents", str(c.copy("latents")), "--out",
                   str(c.tmp / "cmp")], "which none of the evaluations given holds"),
    "latents: --window beyond the context": (
        lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--window", "100000", "--out",
                   str(c.tmp / "lat")], "longer than the 64-token contexts"),
    "latents: --seed -1": (lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--seed", "-1",
                                      "--out", str(c.tmp / "lat")], "--seed must be a whole number from 0"),
    "train: --seed -1": (lambda c: ["lm", "train", "--acts", str(c.runs / "acts"), *TRAIN, "--seed", "-1", "--out",
                                    str(c.tmp / "s")], "--seed must be a whole number from 0"),
    "activations: --seed -1": (lambda c: ["lm", "activations", "--model", c.model, "--seed", "-1", "--out",
                                          str(c.tmp / "a")], "--seed must be a whole number from 0"),
    "toy2d: --seed -1": (lambda c: ["toy2d", "--seed", "-1", "--out", str(c.tmp / "t")],
                         "--seed must be a whole number from 0"),
    "baseline: --seed -1": (lambda c: baseline(c, "--seed", "-1"), "--seed must be a whole number from 0"),
    "baseline: --twin-sae gated": (lambda c: baseline(c, "--twin-sae", "gated"), "--twin-sae must be one of"),
    "baseline: --architecture relu": (lambda c: baseline(c, "--architecture", "relu"), "--architecture must be"),
    "baseline: --sae sae-lens: an unknown release": (lambda c: baseline(c, "--sae", "sae-lens:no-such/x"),
                                                     "is not a release in SAELens's registry"),
    "train: --architecture gated": (lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--architecture",
                                               "gated", "--out", str(c.tmp / "new")],
                                    "architecture must be one of"),
    "train: --matryoshka-widths not rising": (
        lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--architecture", "matryoshka", "--expansion",
                   "2", "--matryoshka-widths", "32,16,64", "--out", str(c.tmp / "new")],
        "matryoshka_widths must rise"),
    "toy: --l1 1e30": (lambda c: ["toy", "--l1", "1e30", "--out", str(c.tmp / "t")], "above 1e+15"),
    "activations: a hub model that is not cached, offline": (
        lambda c: ["lm", "activations", "--model", "EleutherAI/pythia-70m", "--out", str(c.tmp / "a")],
        "is not in the local Hugging Face cache and the hub"),
    # the study checks every setting before it writes anything
    "baseline: --context-length 1": (lambda c: baseline(c, "--context-length", "1"), "at least 2"),
    "baseline: --context-length beyond the model": (lambda c: baseline(c, "--context-length", "100000"),
                                                    "beyond"),
    "baseline: --device tpu": (lambda c: baseline(c, "--device", "tpu"), "device must be auto, cpu"),
    "baseline: --max-norm-ratio -1": (lambda c: baseline(c, "--max-norm-ratio", "-1"), "max_norm_ratio must be"),
    "baseline: --skip-positions the whole context": (lambda c: baseline(c, "--skip-positions", "256"),
                                                     "leaves no token"),
    "baseline: --batch-size 0": (lambda c: baseline(c, "--batch-size", "0"), "batch_size must be a positive"),
    "baseline: --lr nan": (lambda c: baseline(c, "--lr", "nan"), "lr must be positive and finite"),
    "baseline: a missing dataset": (lambda c: baseline(c, "--dataset", str(c.tmp / "none.txt")), "does not exist"),
    "baseline: an empty dataset": (lambda c: baseline(c, "--dataset", str(c.file("empty.txt", "\n\n"))),
                                   "holds no text"),
    "baseline: --judge-dtype int8": (lambda c: baseline(c, "--judge-dtype", "int8"), "--judge-dtype must be"),
    "baseline: a judge nobody serves": (lambda c: baseline(c, "--llm-url", "http://127.0.0.1:9/v1", "--llm-model",
                                                           "m"), "cannot reach the judge"),
    "baseline: a local judge that is not there": (lambda c: baseline(c, "--llm", str(c.tmp / "no-model")),
                                                  "is not a model directory"),
    # round four: nonsense that was accepted, inputs found wrong too late
    "baseline: --schedule foo": (lambda c: baseline(c, "--schedule", "foo"), "--schedule must be one of budget"),
    "baseline: --llm beside --llm-url": (lambda c: baseline(c, "--llm", "smollm2", "--llm-url",
                                                            "http://127.0.0.1:9/v1", "--llm-model", "m"),
                                         "names a local judge and --llm-url"),
    "autointerp: --llm smollm2, the default, beside --llm-url": (
        lambda c: ["lm", "autointerp", "--latents", str(c.runs / "latents"), "--llm", "smollm2", "--llm-url",
                   "http://127.0.0.1:9/v1", "--llm-model", "m", "--out", str(c.tmp / "ai")],
        "names a local judge and --llm-url"),
    "train: a manifest naming another model": (
        lambda c: train_on(edited_manifest(c, model="gpt2"), c), "names the model 'gpt2', which does not load"),
    "train: a manifest naming a model of another width": (
        lambda c: train_on(edited_manifest(c, model="smollm2"), c), "whose 576 dimensions are not the cache's 32"),
    "train: --k above the latents": (
        lambda c: ["lm", "train", "--acts", str(c.runs / "acts"), "--k", "5000", "--expansion", "1", "--device",
                   "cpu", "--out", str(c.tmp / "new-sae")], "--k 5000 is above the SAE's"),
    "latents: an all-zero cache": (
        lambda c: latents_on(acts_with_layer_2(c, torch.zeros_like), c), "all equal"),
    "latents: token ids outside the vocabulary": (
        lambda c: latents_on(acts_with(c, "tokens", lambda t: t.fill_(10 ** 6)), c), "outside the tokenizer's"),
    "toy: one input and one feature": (lambda c: ["toy", "--latents", "4", "--l1", "0.1", "--seeds", "1",
                                                  "--epochs", "1", "--num-samples", "100", "--num-inputs", "1",
                                                  "--num-features", "1", "--out", str(c.tmp / "t")],
                                       "num_inputs must be at least 2"),
    "toy: a config value of the wrong type under a flag": (
        lambda c: ["toy", "--preset", "quick", "--config", str(c.file("bad.toml", 'epochs = "ten"\n')), "--epochs",
                   "2", "--out", str(c.tmp / "t")], "epochs must be an int"),
    "compare: the same run twice": (
        lambda c: ["lm", "compare", str(c.runs / "eval"), str(c.runs / "eval"), "--out", str(c.tmp / "cmp")],
        "names " + "{eval} twice"),
    "compare: the same autointerp run twice": (
        lambda c: ["lm", "compare", str(c.runs / "eval"), "--autointerp", str(c.tmp / "ai"), str(c.tmp / "ai/."),
                   "--out", str(c.tmp / "cmp")], "--autointerp names"),
    "autointerp: a missing examples file, before the judge": (
        lambda c: ["lm", "autointerp", "--latents", str(latents_without_examples(c)), "--llm-url",
                   "http://127.0.0.1:9/v1", "--llm-model", "m", "--out", str(c.tmp / "ai")], "does not exist"),
    "autointerp: a cut examples file, before the judge": (
        lambda c: ["lm", "autointerp", "--latents", str(latents_cut(c)), "--llm-url", "http://127.0.0.1:9/v1",
                   "--llm-model", "m", "--out", str(c.tmp / "ai")], "is not a set of examples"),
    # the fair baselines' surfaces
    "eval: --fit-tokens 0": (lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--fit-tokens", "0", "--out",
                                        str(c.tmp / "ev")], "--fit-tokens: cannot read '0'"),
    "eval: --fit-tokens ten": (lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--fit-tokens", "ten",
                                          "--out", str(c.tmp / "ev")], "--fit-tokens: cannot read 'ten'"),
    "eval: --fit-tokens -5": (lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--fit-tokens=-5", "--out",
                                         str(c.tmp / "ev")], "--fit-tokens"),
    "eval: --out with another --fit-tokens": (
        lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--tokens", "256", "--fit-tokens", "1k", "--device",
                   "cpu", "--out", str(c.copy("eval"))], "other settings (fit_tokens"),
    "eval: a training sample of floats": (
        lambda c: eval_fly(c, lambda path: save_file({"tokens": torch.zeros(2, 64)}, str(path))), "not contexts"),
    "eval: an empty training sample": (
        lambda c: eval_fly(c, lambda path: save_file({"tokens": torch.zeros(0, 64, dtype=torch.int64)},
                                                     str(path))),
        "holds no training context"),
    "eval: a training sample outside the vocabulary": (
        lambda c: eval_fly(c, lambda path: save_file({"tokens": torch.full((2, 64), 10 ** 6)}, str(path))),
        "outside the model's vocabulary"),
    "eval: a cut training sample": (lambda c: eval_fly(c, lambda path: truncate_file(path)), "train_sample"),
    "baseline: --fit-tokens 0": (lambda c: baseline(c, "--fit-tokens", "0"), "argument --fit-tokens"),
    "baseline: --fit-tokens nonsense": (lambda c: baseline(c, "--fit-tokens", "many"), "argument --fit-tokens"),
    "baseline: --eval-tokens 0": (lambda c: baseline(c, "--eval-tokens", "0"), "argument --eval-tokens"),
    # layer groups' surfaces
    "eval: --group-layers 0": (lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--group-layers", "0",
                                          "--out", str(c.tmp / "ev")], "--group-layers must be a positive"),
    "eval: --group-layers two": (lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--group-layers", "two",
                                            "--out", str(c.tmp / "ev")], "invalid int value: 'two'"),
    "latents: --group-layers 0": (lambda c: latents_on(c.runs / "acts", c)[:-2] + ["--group-layers", "0", "--out",
                                                                                  str(c.tmp / "la")],
                                  "--group-layers must be a positive integer"),
    "latents: --group-layers -3": (lambda c: latents_on(c.runs / "acts", c)[:-2] + ["--group-layers=-3", "--out",
                                                                                   str(c.tmp / "la")],
                                   "--group-layers must be a positive integer"),
    "baseline: --device-memory lots": (lambda c: baseline(c, "--device-memory", "lots"),
                                       "--device-memory must be a size such as 80GB"),
    "baseline: --device-memory 0GB": (lambda c: baseline(c, "--device-memory", "0GB"),
                                      "--device-memory must be a positive size"),
    "baseline: --device-memory below the model": (lambda c: baseline(c, "--device-memory", "1MB"),
                                                  "more than its 1 MB"),
    # the probes' surfaces
    "probe: --probe-data that does not exist": (lambda c: probe_with(c, "--probe-data", str(c.tmp / "no.jsonl")),
                                                 "does not exist"),
    "probe: --probe-data not JSON": (lambda c: probe_with(c, "--probe-data", written(c, "a.jsonl", "{oops\n")),
                                     "line 1 is not JSON"),
    "probe: --probe-data of one label": (
        lambda c: probe_with(c, "--probe-data", written(c, "a.jsonl", '{"text": "a", "label": 1}\n' * 3)),
        "a probe needs two or more"),
    "probe: --probe-data without a label column": (
        lambda c: probe_with(c, "--probe-data", written(c, "a.csv", "text,kind\nhello,1\n")),
        "must have the columns text and label"),
    "probe: --probe-data of a label that is a list": (
        lambda c: probe_with(c, "--probe-data", written(c, "a.jsonl", '{"text": "a", "label": [1]}\n')),
        "example 1 has no label"),
    "probe: --probe-data a text file": (lambda c: probe_with(c, "--probe-data", written(c, "a.txt", "hello\n")),
                                        "must be a .jsonl or .csv file"),
    "probe: --probe-k 0": (lambda c: probe_with(c, "--probe-k", "0"), "--probe-k must name distinct positive"),
    "probe: --probe-k one": (lambda c: probe_with(c, "--probe-k", "one"),
                             "argument --probe-k: invalid comma list of whole numbers value: 'one'"),
    "probe: --probe-tasks words": (lambda c: probe_with(c, "--probe-tasks", "words"), "--probe-tasks takes each"),
    "probe: --probe-min-examples beyond the examples": (
        lambda c: probe_with(c, "--probe-min-examples", "5000"), "cannot hold --probe-min-examples 5000"),
    "probe: a directory of no SAE run": (
        lambda c: ["lm", "probe", "--sae", written(c, "nothing/README", "") and str(c.tmp / "nothing"), "--out",
                   str(c.tmp / "pr")], "give a directory written by"),
    "baseline: --scorers probing and nonsense": (lambda c: baseline(c, "--scorers", "probing,nonsense"),
                                                 "unknown scorer 'nonsense'"),
    "baseline: --probe-data without probing": (
        lambda c: baseline(c, "--scorers", "tokens", "--probe-data", written(c, "a.jsonl", "{}\n")),
        "add probing to --scorers"),
    # round five: the probes' files, the study's preflight, δ, --machine and config files
    "probe: --probe-data CSV with a cell over 131,072 characters": (
        lambda c: probe_with(c, "--probe-data", written(c, "a.csv", f"text,label\n{'a' * 200_000},1\nb,2\n")),
        "no label has --probe-min-examples 20"),
    "probe: --probe-data of 30 one-text classes": (
        lambda c: probe_with(c, "--probe-data", written(c, "a.jsonl", "".join(
            json.dumps({"text": f"text {i}", "label": i}) + "\n" for i in range(30)))),
        "no label has --probe-min-examples 20 texts"),
    "probe: every task below --probe-min-examples": (
        lambda c: probe_with(c, "--probe-train-tokens", "64", "--probe-test-tokens", "64",
                             "--probe-min-examples", "40"), "no task had --probe-min-examples 40"),
    "probe: --probe-k beyond the SAE's latents": (lambda c: probe_with(c, "--probe-k", "1,100000"),
                                                  "--probe-k 100000 is more than the 64 latents"),
    "probe: --acts another model's cache": (lambda c: probe_with(c, "--acts", str(narrower_cache(c))),
                                            "is it another model's cache?"),
    "baseline: --probe-data missing": (
        lambda c: baseline(c, "--scorers", "probing", "--probe-data", str(c.tmp / "no.jsonl")), "does not exist"),
    "baseline --plan: --probe-data missing": (
        lambda c: baseline(c, "--plan", "--scorers", "probing", "--probe-data", str(c.tmp / "no.jsonl")),
        "does not exist"),
    "baseline: --probe-data of one label": (
        lambda c: baseline(c, "--scorers", "probing", "--probe-data",
                           written(c, "a.jsonl", '{"text": "a", "label": 1}\n' * 3)), "a probe needs two or more"),
    "baseline --plan: --probe-data without a text column": (
        lambda c: baseline(c, "--plan", "--scorers", "probing", "--probe-data",
                           written(c, "a.csv", "words,label\nhello,1\n")), "must have the columns text and label"),
    "baseline: --probe-data not UTF-8": (
        lambda c: baseline(c, "--scorers", "probing", "--probe-data", str(c.file("a.jsonl", b"\xff\xfe{}\n"))),
        "is not UTF-8 text"),
    "baseline: --probe-data too few per class": (
        lambda c: baseline(c, "--scorers", "probing", "--probe-data", written(c, "a.jsonl", "".join(
            json.dumps({"text": f"t {i}", "label": i % 2}) + "\n" for i in range(30)))),
        "no label has --probe-min-examples"),
    "baseline: --delta-probing 1.5": (lambda c: baseline(c, "--delta-probing", "1.5"),
                                      "--delta-probing 1.5 covers the whole range"),
    "baseline: --delta-absorption 2": (lambda c: baseline(c, "--delta-absorption", "2"),
                                       "--delta-absorption 2.0 covers the whole range"),
    "baseline: config delta_absorption = 5": (
        configured(baseline, "[verdict]\ndelta_absorption = 5\n"),
        "--delta-absorption 5.0 covers the whole range"),
    "baseline --plan: --machine peak=abc": (
        lambda c: baseline(c, "--plan", "--machine", "8xA100-80GB,disk=2TB,peak=abc"),
        "peak must be a positive number of TFLOP/s, not 'abc'"),
    "baseline --plan: --machine peak=0": (
        lambda c: baseline(c, "--plan", "--machine", "8xA100-80GB,disk=2TB,peak=0"),
        "peak must be a positive number"),
    "baseline --plan: --machine peak=-5": (
        lambda c: baseline(c, "--plan", "--machine", "8xA100-80GB,disk=2TB,peak=-5"),
        "peak must be a positive number"),
    "baseline --plan: --machine peak=nan": (
        lambda c: baseline(c, "--plan", "--machine", "8xA100-80GB,disk=2TB,peak=nan"),
        "peak must be a positive number"),
    "baseline --plan: --machine cores=0": (lambda c: baseline(c, "--plan", "--machine", "cpu,disk=2TB,cores=0"),
                                           "cores must be a positive whole number"),
    "baseline --plan: --machine cores=-4": (lambda c: baseline(c, "--plan", "--machine", "cpu,disk=2TB,cores=-4"),
                                            "cores must be a positive whole number"),
    "baseline: config [probing] probe_data = 5": (configured(baseline, "[probing]\nprobe_data = 5\n"),
                                                  "probe_data must be a str"),
    "baseline: config cache = \"no\"": (configured(baseline, 'cache = "no"\n'), "cache must be a bool"),
    "baseline: config dictionaries named twice": (
        configured(baseline, 'dictionaries = "trained,trained"\n'),
        "must name each dictionary once"),
    "recovery: config matryoshka_fractions a range": (
        configured(recovery_with, 'matryoshka_fractions = "0.1:0.9:2"\n'),
        "cannot read '0.1:0.9:2' as a list"),
    "recovery: config matryoshka_fractions 2,-1": (
        configured(recovery_with, 'matryoshka_fractions = "2,-1"\n'),
        "matryoshka_fractions must be positive shares summing to 1"),
    "recovery: config matryoshka_fractions 1e30": (
        configured(recovery_with, 'matryoshka_fractions = "1e30"\n'),
        "matryoshka_fractions must be positive shares summing to 1"),
    "activations: --tokens 1b on the embedded text": (
        lambda c: ["lm", "activations", "--tokens", "1b", "--out", str(c.tmp / "a")],
        "more than the embedded Shakespeare text holds"),
    "baseline: 100M tokens of the embedded text": (
        lambda c: baseline(c, "--tokens", "100M"), "more than the embedded Shakespeare text holds"),
    "compare: the same latents twice": (
        lambda c: ["lm", "compare", str(c.runs / "eval"), "--latents", str(c.runs / "latents"),
                   str(c.runs / "latents"), "--out", str(c.tmp / "cmp")], "--latents names"),
}


def narrower_cache(c: Case) -> Path:
    """A copy of the activation cache as another model's would be: every layer 16 wide, the manifest saying so."""
    acts = c.copy("acts")
    manifest = json.loads((acts / "manifest.json").read_text())
    for entry in manifest["shards"]:
        edit_tensors(acts / entry["file"], lambda t: t.update({k: v[:, :16].contiguous() for k, v in t.items()
                                                                if k.startswith("layer.")}))
    (acts / "manifest.json").write_text(json.dumps({**manifest, "d_model": 16}))
    return acts


def probe_with(c: Case, *args: str) -> list[str]:
    return ["lm", "probe", "--sae", str(c.runs / "sae"), *args, "--device", "cpu", "--out", str(c.tmp / "pr")]


def written(c: Case, name: str, text: str) -> str:
    path = c.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def edited_manifest(c: Case, **changes) -> Path:
    acts = c.copy("acts")
    manifest = json.loads((acts / "manifest.json").read_text())
    (acts / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    return acts


def latents_on(acts: Path, c: Case) -> list[str]:
    return ["lm", "latents", "--sae", str(c.runs / "sae"), "--acts", str(acts), *LATENTS, "--layers", "2",
            "--out", str(c.tmp / "new-latents")]


def latents_without_examples(c: Case) -> Path:
    latents = c.copy("latents")
    next((latents / "examples").glob("layer.*.jsonl")).unlink()
    return latents


def latents_cut(c: Case) -> Path:
    latents = c.copy("latents")
    path = next((latents / "examples").glob("layer.*.jsonl"))
    path.write_text(path.read_text()[:200] + "\n")
    return latents


def truncate_file(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def eval_fly(c: Case, spoil) -> list[str]:
    """`lm eval` of a copy of the on-the-fly run whose training sample `spoil` rewrites."""
    fly = c.copy("fly")
    spoil(fly / "train_sample.safetensors")
    return ["lm", "eval", "--sae", str(fly), "--tokens", "256", "--device", "cpu", "--out", str(c.tmp / "ev")]


def _edited_held_out(c: Case, name: str, change) -> Path:
    """A copy of run `name` whose held-out token ids are changed (`None`: no held-out context left)."""
    directory = c.copy(name)
    path = held_out(directory)
    if change is None:
        save_file({"tokens": torch.zeros(0, 64, dtype=torch.int64)}, str(path))
    else:
        edit_tensors(path, lambda t: change(t["tokens"]))
    return directory


def run_case(args: list[str], cwd: Path, env: dict | None = None, file_limit: int | None = None):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit is then EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    environment = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", **(env or {})}
    return subprocess.run([sys.executable, "-m", "randsae", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=environment, preexec_fn=limit if file_limit else None)


def assert_one_line(result, code: int, words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]


@pytest.fixture(scope="module")
def fly_runs(runs):  # noqa: F811
    """The finished runs, with an on-the-fly `lm train` run among them (its training sample kept beside it)."""
    from randsae.cli import main

    if not (runs / "fly").exists():
        assert main(["-q", "lm", "train", "--model", str(runs / "model"), "--tokens", "2k", "--context-length",
                     "64", "--layers", "1", *TRAIN, "--out", str(runs / "fly")]) == 0
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_one_sentence_exit_2_and_damages_nothing(name, fly_runs, tmp_path):
    build, words = CASES[name]
    case = Case(fly_runs, tmp_path)
    args = build(case)
    words = words.replace("{eval}", str(fly_runs / "eval"))
    before = checksums(case.watched)
    result = run_case(["-q", *args], tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert_one_line(result, 2, words)
    assert checksums(case.watched) == before
    assert not (tmp_path / "study").exists() or name.startswith("baseline: stages.json"), \
        "the study wrote before its settings were checked"


FULL_DISK = {
    "train": lambda c: ["lm", "train", "--acts", str(c.runs / "acts"), *TRAIN, "--out", str(c.tmp / "out")],
    "toy --save-weights": lambda c: ["toy", "--latents", "64", "--l1", "0.1", "--seeds", "1", "--epochs", "1",
                                     "--num-samples", "300", "--num-inputs", "32", "--num-features", "32",
                                     "--save-weights", "--out", str(c.tmp / "out")],
    "latents": lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--out", str(c.tmp / "out")],
    "activations": lambda c: ["lm", "activations", "--model", c.model, "--tokens", "4k", "--context-length", "64",
                              "--layers", "0,2", "--out", str(c.tmp / "out")],
}


@pytest.mark.parametrize("name", list(FULL_DISK))
def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(name, runs, tmp_path):  # noqa: F811
    """Writes past a file-size limit fail as a full disk does (EFBIG for ENOSPC): one sentence naming where, exit
    2, no temporary or .partial file left, and the inputs untouched."""
    case = Case(runs, tmp_path)
    args = FULL_DISK[name](case)
    before = checksums([runs / "acts", runs / "sae"])
    result = run_case(["-q", *args], tmp_path, file_limit=12_000)
    lines = result.stderr.strip().splitlines()  # warnings the run gave before the disk filled may come first
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("randsae: error: the file-size limit was reached writing"), lines
    if name == "train":  # -q: the schedule the budget rule chose is a note, not a warning before the error
        assert len(lines) == 1, lines
    assert checksums([runs / "acts", runs / "sae"]) == before
    left = [p.name for p in (tmp_path / "out").rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not left, left


@pytest.mark.parametrize("fault", ["fail", "no_logprobs", "malformed", "nonsense"])
def test_a_judge_that_scores_nothing_fails_the_run(fault, runs, tmp_path):  # noqa: F811
    """A judge that answers no call usably: exit 1 and one sentence naming the call log — never a success with
    AUROC nan in every row."""
    with ScriptedJudge(**{fault: 1.0}) as judge:
        result = run_case(["-q", "lm", "autointerp", "--latents", str(runs / "latents"), "--llm-url", judge.url,
                           "--llm-model", "scripted", "--retries", "0", "--scorers", "fuzzing",
                           "--calibration-windows", "2", "--out", str(tmp_path / "ai")], tmp_path)
    assert_one_line(result, 1, "answered none of the known-answer windows of fuzzing usably")
    assert "llm_calls.jsonl" in result.stderr


def test_nonsense_logprobs_are_no_digits():
    """A null or numeric token, a logprob that is text or positive: neither digit, no TypeError."""
    from randsae.autointerp.prompts import probabilities

    nonsense = [{"token": None, "logprob": "high"}, {"token": 1, "logprob": 0.0}, "text",
                {"token": "[1", "logprob": 3.0, "top_logprobs": [{"token": "1", "logprob": None}]}]
    assert probabilities(nonsense, 2) == [None, None]
    assert probabilities([{"token": "[1", "logprob": -0.1, "top_logprobs": "x"}], 1)[0] == pytest.approx(1.0)


def test_every_file_a_run_writes_is_readable_like_any_new_file(runs, tmp_path):  # noqa: F811
    """SAE weights (written by safetensors) get the mode every other file gets, not 0600."""
    probe = tmp_path / "probe"
    probe.write_text("")
    mode = probe.stat().st_mode & 0o777
    for run in ("sae", "acts", "latents", "eval"):
        files = [p for p in (runs / run).rglob("*") if p.is_file()]
        modes = {p.relative_to(runs): oct(p.stat().st_mode & 0o777) for p in files}
        assert set(modes.values()) == {oct(mode)}, modes


def test_quiet_means_nothing_on_stderr_when_all_is_well(runs, tmp_path):  # noqa: F811
    """-q: no library warnings (matplotlib, torch, transformers) on a run that succeeds."""
    result = run_case(["-q", "lm", "eval", "--sae", str(runs / "sae"), "--tokens", "256", "--out",
                       str(tmp_path / "ev")], tmp_path, env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""


@pytest.mark.slow  # a whole study, end to end
def test_the_entropy_figure_draws_a_scorer_against_hard_negatives(runs, tmp_path):  # noqa: F811
    """`--scorers examples --negatives similar-tokens`: the scores and Fig. 20 of `examples@similar-tokens`, exit 0
    (it used to look the scorer up without its negatives and exit 2 after writing its scores)."""
    result = run_case(["-q", "lm", "autointerp", "--latents", str(runs / "latents"), "--scorers", "examples",
                       "--negatives", "similar-tokens", "--out", str(tmp_path / "ai")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ai" / "entropy_auroc.png").is_file()
    assert "examples@similar-tokens" in (tmp_path / "ai" / "summary.csv").read_text()


def test_a_judge_that_never_writes_an_explanation_fails_the_run(runs, tmp_path):  # noqa: F811
    """Every latent without an explanation has scored nothing: exit 1 and one sentence (after the judge's
    calibration, which it is given explanations for), not a warning and 0."""
    with ScriptedJudge(silent_explainer=True) as judge:
        result = run_case(["-q", "lm", "autointerp", "--latents", str(runs / "latents"), "--llm-url", judge.url,
                           "--llm-model", "scripted", "--retries", "0", "--scorers", "fuzzing,tokens",
                           "--calibration-windows", "2", "--out", str(tmp_path / "ai")], tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "wrote no explanation for any of the 4 latents" in result.stderr.strip().splitlines()[-1]


def test_the_2d_demo_of_one_sample_draws_without_a_warning(tmp_path):
    result = run_case(["-q", "toy2d", "--num-samples", "1", "--out", str(tmp_path / "d")], tmp_path,
                      env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "d" / "lomax_2d.png").is_file()


def test_code_and_docs_never_name_the_tracker():
    """The project speaks of itself, never of issue numbers."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("src/**/*.py"), *root.glob("tests/*.py"), *root.glob("docs/*.md"), root / "README.md",
             *root.glob("benchmarks/*.py"), root / "Makefile"]
    pattern = re.compile(r"\bissues? (?:#?\d+)|\(issue")
    named = [f"{p.relative_to(root)}:{n}" for p in files for n, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line) and p.name != "test_hostile.py"]
    assert not named, named


def test_a_study_says_when_the_text_gave_fewer_tokens_than_asked(tmp_path):
    from randsae.study.report import Study, training_tokens

    (tmp_path / "trained" / "sae").mkdir(parents=True)
    (tmp_path / "trained" / "sae" / "config.json").write_text(json.dumps({"source": {"tokens": 1_360_000}}))
    (tmp_path / "config.json").write_text(json.dumps({"settings": {"tokens": 1_000_000_000}}))
    study = Study(tmp_path)
    assert training_tokens(study) == "1,360,000 (asked 1,000,000,000: the text gives no more)"


@pytest.mark.parametrize("negatives", ["random", "similar-tokens", "neighbours"])
@pytest.mark.parametrize("scorer", ["fuzzing", "detection", "embedding", "tokens", "examples", "intruder"])
def test_fig_20_finds_every_scorer_against_every_kind_of_negatives(scorer, negatives, tmp_path):
    """Fig. 20 looks a scorer up by its result's name (`examples@similar-tokens`) and draws it; the intruder, which
    gives an accuracy and no AUROC, draws nothing and fails nothing."""
    import math

    from randsae.autointerp.records import LatentResult, ScorerResult
    from randsae.experiments.lm_autointerp import AutointerpSettings, figure_scorer
    from randsae.plots import plot_entropy_auroc
    from randsae.scorer_kinds import named

    name = named(scorer, negatives)
    auroc = math.nan if scorer == "intruder" else 0.7
    results = [LatentResult("m", "trained", 3, latent, 1.0 + latent, "an explanation", ["a"],
                            [ScorerResult(name, auroc + 0.01 * latent, 0.6, 10, 0)]) for latent in range(4)]
    settings = AutointerpSettings(scorers=[scorer], negatives=[negatives])
    drawn = figure_scorer(results, settings)
    if scorer == "intruder":
        assert drawn is None
        return
    assert drawn == (scorer, name)
    assert plot_entropy_auroc(results, tmp_path / "fig20.png", drawn[1]).is_file()


# every command, aimed at a directory that holds a user's own file and no record of a run
NEVER_OVERWRITE = {
    "toy": lambda c: ["toy", "--latents", "16", "--l1", "0.1", "--seeds", "1", "--epochs", "1", "--num-samples",
                      "300", "--num-inputs", "8", "--num-features", "16", "--no-plots"],
    "glove": lambda c: ["glove", "--vectors", str(c.runs / "vectors.txt"), "--latent-multiples", "1", "--l1",
                        "0.1", "--seeds", "1", "--epochs", "1", "--no-plots"],
    "plot": lambda c: ["plot", str(c.runs / "toy")],
    "toy2d": lambda c: ["toy2d", "--num-samples", "100"],
    "export": lambda c: ["export", str(c.runs / "sae"), "--format", "sparsify"],
    "recovery": lambda c: ["recovery", "--preset", "quick", "--samples", "4k", "--points", "1", "--no-plots"],
    "lm activations": lambda c: ["lm", "activations", "--model", str(c.runs / "model"), "--tokens", "2k",
                                 "--context-length", "64", "--layers", "0"],
    "lm train": lambda c: ["lm", "train", "--acts", str(c.runs / "acts"), *TRAIN],
    "lm eval": lambda c: ["lm", "eval", "--sae", str(c.runs / "sae"), "--tokens", "256"],
    "lm probe": lambda c: ["lm", "probe", "--sae", str(c.runs / "sae"), "--device", "cpu"],
    "lm latents": lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS],
    "lm autointerp": lambda c: ["lm", "autointerp", "--latents", str(c.runs / "latents")],
    "lm compare": lambda c: ["lm", "compare", str(c.runs / "eval")],
    "baseline": lambda c: ["baseline", "--preset", "demo", "--model", str(c.runs / "model"), "--layers", "0"],
}


@pytest.mark.parametrize("command", list(NEVER_OVERWRITE))
def test_no_command_writes_over_a_file_it_did_not_write(command, runs, tmp_path, capsys):  # noqa: F811
    """A non-empty --out that holds no record of a randsae run is refused in one sentence naming a file found
    there, and the user's files are byte-identical afterwards (a command used to overwrite a user's table.md
    or results.csv and exit 0)."""
    from randsae.cli import main

    if command == "glove":
        (runs / "vectors.txt").write_text("".join(f"w{i} " + " ".join(str((i * j) % 7 - 3) for j in range(8))
                                                  + "\n" for i in range(40)))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("my,own\n1,2\n")
    (out / "table.md").write_text("| my notes |\n")
    before = checksums([out])
    code = main(["-q", *NEVER_OVERWRITE[command](Case(runs, tmp_path)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "holds results.csv and no record of a randsae run" in err[0], err
    assert checksums([out]) == before and sorted(p.name for p in out.iterdir()) == ["results.csv", "table.md"]


def test_probe_data_reads_what_is_valid_however_it_is_written(tmp_path):
    """A JSON string holding U+2028 is JSON; a CSV's byte-order mark is no part of its first column; 1, 1.0 and
    "1.0" are one class (each used to be refused, or split into two classes)."""
    from randsae.lm.probe_tasks import read_probe_data

    lines = tmp_path / "a.jsonl"
    lines.write_text(json.dumps({"text": "one\u2028two", "label": 1}, ensure_ascii=False) + "\n"
                     + json.dumps({"text": "three", "label": 1.0}) + "\n"
                     + json.dumps({"text": "x", "label": 0}) + "\n", encoding="utf-8")
    assert read_probe_data(lines) == (["one\u2028two", "three", "x"], ["1", "1", "0"])
    table = tmp_path / "a.csv"
    table.write_bytes("\ufefftext,label\nhello,1.0\nworld,2\n".encode())
    assert read_probe_data(table) == (["hello", "world"], ["1", "2"])


DRAW = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
torch.set_flush_denormal(sys.argv[2] == "flush")  # a caller's denormal state must not reach the draw
from randsae.data.sharkey import generate
data = generate(20_000, 64, 256, seed=7)
print(hashlib.sha256(data.samples.numpy().tobytes() + data.coefficients.numpy().tobytes()).hexdigest())
"""


def test_the_toy_generator_gives_the_same_bytes_for_a_seed_under_concurrent_load():
    """Same seed, same bytes: four draws at once, on 1 or 2 threads, with and without denormals flushed by the
    caller, while two processes keep every core busy (the draw's matrix products and reductions must not depend
    on how the threads were scheduled)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        draws = [subprocess.Popen([sys.executable, "-c", DRAW, threads, state], stdout=subprocess.PIPE, text=True)
                 for threads, state in (("1", "keep"), ("2", "keep"), ("2", "flush"), ("1", "flush"))]
        digests = [draw.communicate(timeout=300)[0].strip() for draw in draws]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert len(digests[0]) == 64 and len(set(digests)) == 1, digests


def test_a_study_says_when_its_judge_is_not_used(tiny_dir, tmp_path):
    """--llm-url beside --scorers that ask no judge: said in one line, and the plan still made."""
    result = run_case(["-q", "baseline", "--preset", "demo", "--model", str(tiny_dir), "--layers", "0",
                       "--scorers", "probing", "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m", "--plan",
                       "--out", str(tmp_path / "s")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "WARNING randsae.study.stages.autointerp: --llm-url http://127.0.0.1:9/v1 names a judge, but no scorer of "
        "--scorers probing asks one: the judge is not used"]
