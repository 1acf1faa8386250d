"""The paper's text by default, and data set repositories read whatever their layout: a loading script beside
JSON-lines or parquet files is not run (the installed `datasets` refuses scripts), its data files are read
directly; offline, a hub name is refused before anything runs."""

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from randsae.errors import BadInput
from randsae.lm.text import PAPER_CORPUS, data_files, documents

SCRIPT = "import datasets\n\nclass Sample(datasets.GeneratorBasedBuilder):\n    pass\n"
NON_ASCII = "naïve café — 東京の雨 — ἀρχή"


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def redpajama_like(root: Path) -> Path:
    """A directory laid out as togethercomputer/RedPajama-Data-1T-Sample: its loading script (named as the
    repository, which is what makes `datasets` look for it) beside one JSON-lines file per source (one of them
    compressed), a README, a hidden file."""
    root.mkdir(parents=True)
    (root / "RedPajama-Data-1T-Sample.py").write_text(SCRIPT)
    (root / "README.md").write_text("# a data card\n")
    (root / ".gitattributes").write_text("*.jsonl filter=lfs\n")
    (root / "arxiv_sample.jsonl").write_text(jsonl([
        {"text": "first arxiv document", "meta": {"source": "arxiv"}}, {"text": "", "meta": {}},
        {"text": NON_ASCII, "meta": {}}]), encoding="utf-8")
    with gzip.open(root / "book_sample.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(jsonl([{"text": "a book", "meta": {}}, {"text": None, "meta": {}}, {"text": "   ", "meta": {}}]))
    return root


def test_a_repository_with_a_loading_script_is_read_from_its_data_files(tmp_path, caplog):
    """Every data file, compressed or not, in name order; empty and null texts left out; non-ASCII text intact;
    what was read said in one sentence."""
    corpus = redpajama_like(tmp_path / "RedPajama-Data-1T-Sample")
    with caplog.at_level(logging.INFO, logger="randsae"):
        docs = list(documents(str(corpus)))
    assert docs == ["first arxiv document", NON_ASCII, "a book"]
    said = [r.getMessage() for r in caplog.records if "loading script" in r.getMessage()]
    assert len(said) == 1 and "reading its 2 json files directly (arxiv_sample.jsonl, book_sample.jsonl.gz)" \
        in said[0], said
    with pytest.raises(BadInput, match="has no column 'body'"):
        next(documents(str(corpus), text_column="body"))


def test_a_parquet_layout_with_a_script_reads_the_split_asked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "pq"
    (root / "data").mkdir(parents=True)
    (root / "pq.py").write_text(SCRIPT)
    for split, texts in (("train", ["train one", NON_ASCII]), ("test", ["held out"])):
        pq.write_table(pa.table({"text": texts, "label": list(range(len(texts)))}),
                       root / "data" / f"{split}-00000-of-00001.parquet")
    assert list(documents(str(root), split="train")) == ["train one", NON_ASCII]
    assert list(documents(str(root), split="test")) == ["held out"]


def test_data_files_are_the_commonest_format_and_a_repository_without_any_is_refused():
    names = ["x.py", "a/train_1.jsonl.zst", "a/train_2.jsonl", "a/test.jsonl", "b.parquet", ".hidden/c.jsonl"]
    assert data_files(names, "train") == ("json", ["a/train_1.jsonl.zst", "a/train_2.jsonl"])
    assert data_files(names, "validation") == ("json", ["a/test.jsonl", "a/train_1.jsonl.zst", "a/train_2.jsonl"])
    with pytest.raises(BadInput, match="ships a loading script and no data file"):
        data_files(["script.py", "README.md"], "train")


def randsae(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "randsae", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_offline_a_hub_name_is_refused_before_anything_runs(tiny_dir, tmp_path):
    """The paper preset reads RedPajama by default: offline, one sentence that says how to give a local copy,
    exit 2, nothing written — and --plan, made where the study will not run, names the corpus instead."""
    offline = {"HF_HUB_OFFLINE": "1"}
    study = randsae("baseline", "--model", str(tiny_dir), "--out", str(tmp_path / "study"), env=offline)
    assert study.returncode == 2 and len(study.stderr.strip().splitlines()) == 1, study.stderr
    assert f"--dataset {PAPER_CORPUS} is a Hugging Face hub data set and HF_HUB_OFFLINE is set; give a local " \
           "copy instead" in study.stderr
    acts = randsae("lm", "activations", "--model", str(tiny_dir), "--dataset", "someone/some-text", "--out",
                   str(tmp_path / "acts"), env=offline)
    assert acts.returncode == 2 and "--local-dir DIR" in acts.stderr and "Traceback" not in acts.stderr
    assert not (tmp_path / "study").exists() and not (tmp_path / "acts").exists()
    plan = randsae("baseline", "--model", str(tiny_dir), "--plan", "--machine", "1xH100-80GB,disk=1TB", "--out",
                   str(tmp_path / "study"), env=offline)
    assert plan.returncode == 0, plan.stderr
    assert f"Text: {PAPER_CORPUS} (about 1B tokens from 7 sources, by its data card), 100,000,000 training " \
           "tokens asked per variant." in plan.stdout


def test_activations_from_a_scripted_repository_directory(tiny_dir, tmp_path):
    """The whole path: `lm activations --dataset DIR` on a RedPajama-like directory caches its tokens."""
    corpus = redpajama_like(tmp_path / "RedPajama-Data-1T-Sample")
    (corpus / "c4_sample.jsonl").write_text(jsonl([{"text": f"common crawl page {i} " * 30} for i in range(40)]))
    result = randsae("-q", "lm", "activations", "--model", str(tiny_dir), "--dataset", str(corpus), "--tokens",
                     "2k", "--context-length", "32", "--layers", "0", "--out", str(tmp_path / "acts"))
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["dataset"] == str(corpus) and manifest["num_contexts"] >= 2000 // 32


def test_the_readmes_paper_command_plans_on_a_local_copy(tiny_dir, tmp_path):
    """The README's command with a local copy of RedPajama (laid out as the hub repository) standing in for the
    hub, the model swapped for a small one and --plan added: the study's preflight reads the copy's files."""
    line = next(text for text in (Path(__file__).parents[1] / "README.md").read_text().splitlines()
                if "--dataset data/RedPajama-Data-1T-Sample" in text)
    args = line.split("#")[0].split()[1:]
    copy = redpajama_like(tmp_path / "data" / "RedPajama-Data-1T-Sample")
    args = [str(copy) if a == "data/RedPajama-Data-1T-Sample" else str(tiny_dir) if a == "EleutherAI/pythia-160m"
            else str(tmp_path / "p160m") if a == "runs/p160m" else a for a in args]
    result = randsae(*args, "--plan", "--machine", "1xH100-80GB,disk=1TB", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Text: {copy} (read from this machine" in result.stdout
    assert not (tmp_path / "p160m").exists()
