
import numpy as np
import pytest
import torch

from randsae.cli import main
from randsae.data import glove
from randsae.experiments.glove import GloveConfig, run_glove
from randsae.io import read_rows


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANDSAE_CACHE", str(tmp_path / "cache"))


def write_glove(path, words, vectors):
    lines = (f"{w} {' '.join(f'{v:.6f}' for v in row)}\n" for w, row in zip(words, vectors, strict=True))
    path.write_text("".join(lines))
    return path


def test_embedded_vectors_are_all_400k_in_file_order():
    loaded = glove.load()
    assert loaded.vectors.shape == (400_000, 50) and loaded.vectors.dtype == np.float32
    assert len(loaded.words) == 400_000 and loaded.words[:4] == ["the", ",", ".", "of"]


def test_text_file_parsed_then_cached(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(45_000)] + ["naïve", "'s", "co-op"]
    vectors = rng.standard_normal((len(words), 7)).astype(np.float32)
    path = write_glove(tmp_path / "glove.test.7d.txt", words, vectors)
    first = glove.load(path)
    assert first.words == words
    np.testing.assert_allclose(first.vectors, vectors, atol=1e-6)
    assert list((tmp_path / "cache" / "glove").glob("*.npy"))
    def parse_again(path):
        raise AssertionError("the cached vectors were parsed again")

    monkeypatch.setattr(glove, "parse_text", parse_again)
    second = glove.load(path)
    assert second.words == words and np.array_equal(second.vectors, first.vectors)


def test_a_changed_file_is_parsed_again(tmp_path):
    path = write_glove(tmp_path / "v.txt", ["a", "b"], np.eye(2))
    glove.load(path)
    write_glove(path, ["a", "b", "c"], np.arange(6.0).reshape(3, 2))
    assert glove.load(path).words == ["a", "b", "c"]


@pytest.mark.parametrize("content, words", [
    ("a 1 2 3\nb 1 2\n", "line 2 has 2 numbers, expected 3"),
    ("a 1 2\nb 1 x\n", "line 2: 'x' is not a number"),
    ("a 1 2\nb 1 nan\n", "line 2"),
    ("", "is empty"),
    ("a 1 2\n\nb 1 2\n", "line 2 is empty"),
    ("lonely\n", "no numbers"),
])
def test_bad_files_name_the_file_and_line(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as err:
        glove.load(path)
    assert str(path) in str(err.value)


def test_a_bad_line_deep_in_a_large_file_is_found(tmp_path):
    lines = [f"w{i} 1 2 3" for i in range(30_000)]
    lines[25_432] = "w25432 1 2"
    path = tmp_path / "big.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 25433 has 2 numbers"):
        glove.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        glove.load(tmp_path / "nope.txt")


def test_glove_sweep_rows_schema_and_multiples(tmp_path):
    rng = np.random.default_rng(1)
    vectors = (rng.standard_normal((600, 3)) @ rng.standard_normal((3, 6))).astype(np.float32)
    path = write_glove(tmp_path / "v.txt", [f"w{i}" for i in range(600)], vectors)
    config = GloveConfig(vectors=str(path), latent_multiples=[2, 4], l1=[0.01, 1.0], epochs=2)
    rows = run_glove(config, tmp_path / "run", progress=False)
    assert len(rows) == 2 * 2 * 2 * 2
    table = read_rows(tmp_path / "run" / "results.csv")
    assert {r["latents"] for r in table} == {"12", "24"} and {r["input_dim"] for r in table} == {"6"}
    assert {r["data"] for r in table} == {"glove", "gaussian"}
    assert all(r["mmcs"] == "" for r in table)


def test_glove_cli_quick_shape_and_bad_vectors(tmp_path):
    vectors = np.random.default_rng(2).standard_normal((400, 4))
    path = write_glove(tmp_path / "v.txt", [f"w{i}" for i in range(400)], vectors)
    out = tmp_path / "run"
    assert main(["-q", "glove", "--vectors", str(path), "--latent-multiples", "2", "--l1", "0.1",
                 "--epochs", "1", "--transform", "mlp", "--out", str(out)]) == 0
    assert (out / "frontier_l0.png").exists() and len(read_rows(out / "results.csv")) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 3\n")
    assert main(["-q", "glove", "--vectors", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert main(["-q", "glove", "--data", "word2vec", "--out", str(tmp_path / "x")]) == 2


def test_rows_index_the_data_without_copying_it():
    from randsae.experiments.glove import glove_datasets
    vectors = torch.randn(1000, 5)
    dataset = glove_datasets(GloveConfig(), vectors)(0, "glove", "none")
    assert dataset.data.data_ptr() == vectors.data_ptr()
    assert len(dataset.train_rows) == 900 and len(dataset.val_rows) == 100
    assert not set(dataset.train_rows.tolist()) & set(dataset.val_rows.tolist())
