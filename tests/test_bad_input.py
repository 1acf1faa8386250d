"""Bad input across every command, as a careless or hostile user gives it: each case must exit 2 with one
line on stderr (no traceback), and leave every file already in its output directory (and in the inputs it
was given) byte-identical. Cases run as real subprocesses of `python -m randsae`."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from randsae.cli import main

TOY = ["--latents", "16", "--l1", "0.01,1", "--seeds", "1", "--epochs", "2", "--num-samples", "300",
       "--num-inputs", "8", "--num-features", "16"]
TRAIN = ["--k", "4", "--expansion", "2", "--batch-size", "256", "--device", "cpu"]
LATENTS = ["--min-examples", "2", "--sample", "2", "--explainer-examples", "4", "--test-examples", "10",
           "--quantiles", "5", "--non-activating", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir) -> Path:
    """One finished run of each kind, copied fresh into every case that touches it."""
    root = tmp_path_factory.mktemp("finished")
    assert main(["-q", "toy", *TOY, "--out", str(root / "toy")]) == 0
    (root / "model").symlink_to(tiny_dir)
    assert main(["-q", "lm", "activations", "--model", str(root / "model"), "--tokens", "4k", "--context-length",
                 "64", "--layers", "0,2", "--out", str(root / "acts")]) == 0
    assert main(["-q", "lm", "train", "--acts", str(root / "acts"), *TRAIN, "--out", str(root / "sae")]) == 0
    assert main(["-q", "lm", "eval", "--sae", str(root / "sae"), "--tokens", "256", "--device", "cpu",
                 "--out", str(root / "eval")]) == 0
    assert main(["-q", "lm", "latents", "--sae", str(root / "sae"), *LATENTS, "--out", str(root / "latents")]) == 0
    assert main(["-q", "lm", "activations", "--model", str(root / "model"), "--variant", "control", "--tokens",
                 "2k", "--context-length", "64", "--layers", "0,2", "--out", str(root / "control-acts")]) == 0
    return root


class Case:
    """Builds one bad invocation: fresh copies of finished runs (`copy`), other files (`file`)."""

    def __init__(self, runs: Path, tmp: Path):
        self.runs, self.tmp, self.watched = runs, tmp, []

    def copy(self, name: str) -> Path:
        target = self.tmp / name
        shutil.copytree(self.runs / name, target)
        self.watched.append(target)
        return target

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        self.watched.append(path)
        return path

    @property
    def model(self) -> str:
        return str(self.runs / "model")


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def edit_csv_line(path: Path, line: int, change) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = change(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def toy(c: Case, *args: str) -> list[str]:
    return ["toy", *TOY, *args, "--out", str(c.copy("toy"))]


def shard(acts: Path) -> Path:
    return acts / json.loads((acts / "manifest.json").read_text())["shards"][0]["file"]


def short_toy_row(c):
    out = c.copy("toy")
    edit_csv_line(out / "results.csv", 2, lambda line: line.rsplit(",", 3)[0])
    return ["toy", *TOY, "--seeds", "2", "--out", str(out)]


def garbage_toy_number(c):
    out = c.copy("toy")
    edit_csv_line(out / "results.csv", 3, lambda line: line.replace(",16,", ",sixteen,", 1))
    return ["plot", str(out)]


def manifest_copy(c, change):
    acts = c.copy("acts")
    edit_json(acts / "manifest.json", change)
    return ["lm", "train", "--acts", str(acts), *TRAIN, "--out", str(c.copy("sae"))]


def sae_copy(c, change_dir):
    sae = c.copy("sae")
    change_dir(sae)
    return ["lm", "eval", "--sae", str(sae), "--tokens", "256", "--out", str(c.tmp / "new-eval")]


def acts_into_used(c):
    return ["lm", "activations", "--model", c.model, "--variant", "control", "--tokens", "4k",
            "--context-length", "64", "--layers", "0,2", "--out", str(c.copy("acts"))]


def garbage_toy_config(c):
    out = c.copy("toy")
    (out / "config.json").write_text("{")
    return ["toy", *TOY, "--out", str(out)]


def truncated_shard(c):
    acts = c.copy("acts")
    truncate(shard(acts))
    return ["lm", "train", "--acts", str(acts), *TRAIN, "--out", str(c.copy("sae"))]


def truncated_held_out(c):
    acts = c.copy("acts")
    truncate(acts / "held_out.safetensors")
    return ["lm", "train", "--acts", str(acts), *TRAIN, "--out", str(c.tmp / "new")]


def sae_cfg(c, change):
    return sae_copy(c, lambda d: edit_json(d / "layer.2" / "cfg.json", change))


def latents_cmd(c, *args, acts=None):
    acts = ["--acts", str(acts)] if acts else []
    return ["lm", "latents", "--sae", str(c.copy("sae")), *acts, *LATENTS, *args, "--out", str(c.copy("latents"))]


def autointerp_cmd(c, *args):
    return ["lm", "autointerp", "--latents", str(c.copy("latents")), *args, "--out", str(c.tmp / "ai")]


def cache_without_layer_2(c):
    acts = c.copy("acts")
    edit_json(acts / "manifest.json", lambda m: {**m, "layers": [0]})
    return latents_cmd(c, acts=acts)


def corrupt_latent_shard(c):
    out = c.copy("latents")
    shutil.rmtree(out / "examples")  # so that the rerun reads its cache again
    truncate(out / "cache" / "shard-00000.safetensors", 0.9)
    return ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--out", str(out)]


def sae_arch(c, architecture):
    """layer.2 of the SAE run with its architecture replaced (None: d_in removed instead)."""
    sae = c.copy("sae") / "layer.2"
    edit_json(sae / "cfg.json", lambda g: {**g, "architecture": architecture} if architecture
              else {k: v for k, v in g.items() if k != "d_in"})
    return sae


def eval_short_row(c):
    ev = c.copy("eval")
    edit_csv_line(ev / "results.csv", 2, lambda line: line.rsplit(",", 5)[0])
    return ["lm", "compare", str(ev), "--out", str(c.tmp / "cmp")]


CASES = {
    # the superposition sweeps
    "toy: unknown data": (lambda c: toy(c, "--data", "glove2"), "unknown data"),
    "toy: negative epochs": (lambda c: toy(c, "--epochs", "-3"), "epochs must be a positive integer"),
    "toy: malformed --l1": (lambda c: toy(c, "--l1", "0.1:oops"), "cannot read coefficients"),
    "toy: --lr inf": (lambda c: toy(c, "--lr", "inf"), "lr must be positive and finite"),
    "toy: --lr nan": (lambda c: toy(c, "--lr", "nan"), "lr must be positive and finite"),
    "toy: --avg-active above the features": (lambda c: toy(c, "--avg-active", "600"), "avg_active_features"),
    "toy: --lambda-decay 2": (lambda c: toy(c, "--lambda-decay", "2"), "lambda_decay"),
    "toy: --latents 1e10": (lambda c: toy(c, "--latents", "10000000000"), "more than the"),
    "toy: --num-samples 1e12": (lambda c: toy(c, "--num-samples", "1000000000000"), "more than the"),
    "toy: --num-features 1e8": (lambda c: toy(c, "--num-features", "100000000", "--avg-active", "5"),
                                "more than the"),
    "toy: config that is a JSON list": (lambda c: toy(c, "--config", str(c.file("c.json", "[1, 2]"))),
                                        "not a table of settings"),
    "toy: lr = \"fast\"": (lambda c: toy(c, "--config", str(c.file("c.toml", 'lr = "fast"\n'))),
                           "lr must be a float"),
    "toy: device = 5": (lambda c: toy(c, "--config", str(c.file("c.toml", "device = 5\n"))),
                        "device must be a str"),
    "toy: val_fraction = \"0.1\"": (lambda c: toy(c, "--config", str(c.file("c.toml", 'val_fraction = "0.1"\n'))),
                                    "val_fraction must be a float"),
    "toy: standardize = \"no\"": (lambda c: toy(c, "--config", str(c.file("c.toml", 'standardize = "no"\n'))),
                                  "standardize must be a bool"),
    "toy: batch_size = 2.5": (lambda c: toy(c, "--config", str(c.file("c.toml", "batch_size = 2.5\n"))),
                              "batch_size must be an int"),
    "toy: unparsable TOML": (lambda c: toy(c, "--config", str(c.file("c.toml", "epochs = = 2\n"))),
                             "cannot parse config file"),
    "toy: --out is a file": (lambda c: ["toy", *TOY, "--out", str(c.file("a-file", "keep me"))], "is a file"),
    "toy: resume over a short row": (short_toy_row, "line 2 has 19 cells where its header has 22"),
    "toy: other batch size into a run": (lambda c: toy(c, "--batch-size", "64"), "holds results made with"),
    "toy: garbage config.json in the run": (garbage_toy_config, "is not valid JSON"),
    "toy: --format jpeg": (lambda c: toy(c, "--format", "png,jpeg"), "--format takes a comma list"),
    "toy: unknown --sparsity-stats": (lambda c: toy(c, "--sparsity-stats", "median"),
                                      "sparsity_stats must be one"),
    "plot: --format tiff": (lambda c: ["plot", str(c.copy("toy")), "--format", "tiff"], "--format takes"),
    "compare: --format gif": (lambda c: ["lm", "compare", str(c.copy("eval")), "--format", "gif", "--out",
                                         str(c.tmp / "cmp")], "--format takes"),
    "toy2d: 1e12 samples": (lambda c: ["toy2d", "--num-samples", "1000000000000", "--out", str(c.copy("toy"))],
                            "more than the"),
    "plot: a garbage number": (garbage_toy_number, "row 3: latents is 'sixteen'"),
    "plot: an lm eval directory": (lambda c: ["plot", str(c.copy("eval"))], "no column 'data'"),
    "glove: --vectors a directory": (lambda c: ["glove", "--vectors", str(c.copy("toy")), "--out",
                                                str(c.tmp / "g")], "is a directory"),
    "glove: --vectors not UTF-8": (lambda c: ["glove", "--vectors", str(c.file("v.txt", b"w\xff 1 2\n")), "--out",
                                              str(c.tmp / "g")], "not UTF-8"),
    "glove: --vectors ragged": (lambda c: ["glove", "--vectors", str(c.file("v.txt", "a 1 2\nb 1\n")), "--out",
                                           str(c.tmp / "g")], "line 2 has 1 numbers"),
    # language models: activations
    "activations: --out is a file": (lambda c: ["lm", "activations", "--model", c.model, "--out",
                                                str(c.file("f", "x"))], "is a file"),
    "activations: unknown variant": (lambda c: ["lm", "activations", "--variant", "shuffled", "--out",
                                                str(c.copy("acts"))], "unknown variant"),
    "activations: context beyond the model": (
        lambda c: ["lm", "activations", "--model", c.model, "--context-length", "100000", "--out",
                   str(c.copy("acts"))], "beyond"),
    "activations: layer beyond the model": (
        lambda c: ["lm", "activations", "--model", c.model, "--layers", "7", "--tokens", "2k", "--out",
                   str(c.copy("acts"))], "layers must lie in 0 … 2"),
    "activations: bad --dtype": (lambda c: ["lm", "activations", "--dtype", "int8", "--out", str(c.copy("acts"))],
                                 "dtype must be one of"),
    "activations: bad --tokens": (lambda c: ["lm", "activations", "--tokens", "lots", "--out",
                                             str(c.copy("acts"))], "as a count"),
    "activations: missing model dir": (lambda c: ["lm", "activations", "--model", str(c.tmp / "none" / "x"),
                                                  "--out", str(c.copy("acts"))], "not a model directory"),
    "activations: control into a trained cache": (acts_into_used, "holds a cache made with variant"),
    # training
    "train: truncated shard": (truncated_shard, "not a complete safetensors file"),
    "train: manifest is a list": (lambda c: manifest_copy(c, lambda m: [m]), "holds a JSON list"),
    "train: manifest without layers": (lambda c: manifest_copy(c, lambda m: {k: v for k, v in m.items()
                                                                           if k != "layers"}),
                                       "lacks the key 'layers'"),
    "train: manifest with layers as text": (lambda c: manifest_copy(c, lambda m: {**m, "layers": "0,2"}),
                                            "'layers' must be list"),
    "train: --lr inf": (lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--lr", "inf", "--out",
                                   str(c.copy("sae"))], "lr must be positive and finite"),
    "train: --auxk-alpha nan": (lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--auxk-alpha", "nan",
                                           "--out", str(c.copy("sae"))], "auxk_alpha must be finite"),
    "train: layer not in the cache": (lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--layers", "1",
                                                 "--out", str(c.copy("sae"))], "does not hold layer 1"),
    "train: an SAE that cannot fit in memory": (
        lambda c: ["lm", "train", "--acts", str(c.copy("acts")), "--expansion", "100000000", "--out",
                   str(c.tmp / "new")], "more than the"),
    "train: no source": (lambda c: ["lm", "train", "--out", str(c.copy("sae"))], "give either --acts"),
    "train: truncated held-out file": (truncated_held_out, "held_out.safetensors is not a complete"),
    # latent records
    "latents: an SAE run and a cache of another variant": (
        lambda c: latents_cmd(c, acts=c.copy("control-acts")), "were trained on activations with variant"),
    "latents: a cache without the layer": (cache_without_layer_2, "does not hold layer 2"),
    "latents: a layer the run did not train": (lambda c: latents_cmd(c, "--layers", "1"),
                                               "holds no SAE of layer 1"),
    "latents: --sample above the eligible latents": (
        lambda c: ["-q", "lm", "latents", "--sae", str(c.copy("sae")), *LATENTS, "--sample", "100000", "--out",
                   str(c.tmp / "new")], "fewer than --sample 100000"),  # -q: the error comes after the work
    "latents: a corrupt latent shard": (corrupt_latent_shard, "not a complete safetensors file"),
    "latents: --window 0": (lambda c: latents_cmd(c, "--window", "0"), "window must be a positive integer"),
    "latents: test set not a multiple of the strata": (lambda c: latents_cmd(c, "--test-examples", "11"),
                                                        "must be a multiple of quantiles"),
    "latents: not an SAE run": (lambda c: ["lm", "latents", "--sae", str(c.copy("acts")), "--out",
                                           str(c.copy("latents"))], "written by `randsae lm train`"),
    "latents: other settings into a finished run": (
        lambda c: ["lm", "latents", "--sae", str(c.runs / "sae"), *LATENTS, "--seed", "3", "--out",
                   str(c.copy("latents"))], "holds latents made with other settings"),
    "compare: --latents that are not latent records": (
        lambda c: ["lm", "compare", str(c.copy("eval")), "--latents", str(c.copy("sae")), "--out",
                   str(c.tmp / "cmp")], "written by `randsae lm latents`"),
    # auto-interpretability
    "autointerp: an unknown scorer": (lambda c: autointerp_cmd(c, "--scorers", "fuzzing,simulation"),
                                      "unknown scorer 'simulation'"),
    "autointerp: an unknown prompt format": (lambda c: autointerp_cmd(c, "--prompt-format", "short"),
                                             "--prompt-format must be one of delphi, simple"),
    "autointerp: --llm-model without --llm-url": (lambda c: autointerp_cmd(c, "--llm-model", "llama"),
                                                  "give --llm-url too"),
    "autointerp: a URL without a scheme": (lambda c: autointerp_cmd(c, "--llm-url", "localhost:8000/v1",
                                                                    "--llm-model", "m"), "must start with http"),
    "autointerp: concurrency 0": (lambda c: autointerp_cmd(c, "--llm-url", "http://127.0.0.1:1/v1", "--llm-model",
                                                           "m", "--concurrency", "0"), "--concurrency must be"),
    "autointerp: a judge nobody serves": (lambda c: autointerp_cmd(c, "--llm-url", "http://127.0.0.1:1/v1",
                                                                   "--llm-model", "m"), "cannot reach the judge"),
    "autointerp: --latents that are not latent records": (
        lambda c: ["lm", "autointerp", "--latents", str(c.copy("sae")), "--scorers", "tokens", "--out",
                   str(c.tmp / "ai")], "written by `randsae lm latents`"),
    "autointerp: neither --latents nor --calibrate": (lambda c: ["lm", "autointerp", "--out", str(c.tmp / "ai")],
                                                      "give --latents"),
    "autointerp: --calibrate with --latents": (lambda c: autointerp_cmd(c, "--calibrate"), "leave out --latents"),
    "compare: --autointerp that is not an autointerp run": (
        lambda c: ["lm", "compare", str(c.copy("eval")), "--autointerp", str(c.copy("latents")), "--out",
                   str(c.tmp / "cmp")], "written by `randsae lm autointerp`"),
    # export
    "export: a folder that is no SAE": (lambda c: ["export", str(c.copy("acts")), "--format", "sparsify", "--out",
                                                   str(c.tmp / "exp")], "holds no SAE"),
    "export: an unknown architecture": (lambda c: ["export", str(sae_arch(c, "matching_pursuit")), "--format",
                                                   "saelens", "--out", str(c.tmp / "exp")], "randsae reads topk"),
    "export: a cfg without d_in": (lambda c: ["export", str(sae_arch(c, None)), "--format", "sparsify", "--out",
                                              str(c.tmp / "exp")], "lacks the key 'd_in'"),
    "export: an unknown format": (lambda c: ["export", str(c.copy("sae")), "--format", "onnx", "--out",
                                             str(c.tmp / "exp")], "unknown export format 'onnx'"),
    # evaluation and comparison
    "eval: truncated SAE weights": (
        lambda c: sae_copy(c, lambda d: truncate(d / "layer.2" / "sae_weights.safetensors")),
        "not a complete safetensors file"),
    "eval: cfg without k": (lambda c: sae_cfg(c, lambda g: {k: v for k, v in g.items() if k != "k"}),
                            "lacks the key 'k'"),
    "eval: cfg with the wrong d_in": (lambda c: sae_cfg(c, lambda g: {**g, "d_in": 48}), "implies"),
    "eval: config.json without source": (lambda c: sae_copy(c, lambda d: edit_json(d / "config.json", lambda g: {
        "train": g["train"]})), "lacks the key 'source'"),
    "eval: config.json that is garbage": (lambda c: sae_copy(c, lambda d: (d / "config.json").write_text("nope")),
                                          "is not valid JSON"),
    "eval: not an SAE run": (lambda c: ["lm", "eval", "--sae", str(c.copy("toy")), "--out", str(c.copy("eval"))],
                             "config.json lacks the key 'source'"),
    "compare: short row": (eval_short_row, "has 23 cells where its header has 28"),
    "compare: no results": (lambda c: ["lm", "compare", str(c.copy("sae")), "--out", str(c.tmp / "cmp")],
                            "does not exist"),
    "compare: the same run twice": (lambda c: ["lm", "compare", str(c.copy("eval")), str(c.runs / "eval"), "--out",
                                               str(c.tmp / "cmp")], "both hold"),
}


def checksums(paths: list[Path]) -> dict[str, str]:
    sums = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_sentence_exit_2_and_damages_nothing(name, runs, tmp_path):
    build, words = CASES[name]
    case = Case(runs, tmp_path)
    args = build(case)
    assert args, "the case built no command"
    before = checksums(case.watched)
    result = subprocess.run([sys.executable, "-m", "randsae", *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert checksums(case.watched) == before
    empty = [p.name for p in tmp_path.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert not empty, f"the failed run left empty directories: {empty}"


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40
