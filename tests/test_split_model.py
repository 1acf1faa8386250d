"""A model split across devices (`--device-map`): on this CPU machine accelerate splits the tiny model between the
CPU and its disk offload — two devices' worth of blocks, the later ones read in as they run — and every variant's
block outputs and the eval's losses equal the whole model's. A bfloat16 model keeps its activations bfloat16 to
the cache."""

import gc
import json

import pytest
import torch

from randsae.errors import BadInput
from randsae.io import cache_dir
from randsae.lm.activations import residual_stream
from randsae.lm.models import loading, read_device_map
from randsae.lm.quality import evaluate_batch
from randsae.lm.source import load_variant
from randsae.metrics import TokenQuality
from randsae.sae.topk import TopKSAE

SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture
def device_map(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps(SPLIT))
    return path


@pytest.mark.parametrize("variant", ["trained", "rerandomized", "step0", "control"])
def test_every_variant_split_across_devices_gives_the_whole_models_activations_and_losses(tiny_dir, device_map,
                                                                                          variant):
    ids = torch.randint(0, 1000, (3, 16), generator=torch.Generator().manual_seed(0))
    record = {"variant": variant, "seed": 1}
    whole, _ = load_variant(str(tiny_dir), None, record, torch.device("cpu"))
    with loading(device_map=read_device_map(str(device_map))):
        split, _ = load_variant(str(tiny_dir), None, record, torch.device("cpu"))
    assert split.randsae_device_map["model.layers.2"] == "disk"
    assert split.model.layers[2].self_attn.q_proj.weight.device.type == "meta"  # offloaded: read in as it runs
    want, got = residual_stream(whole, ids, [0, 2]), residual_stream(split, ids, [0, 2])
    for layer in (0, 2):
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-5, atol=1e-6)
    sae = TopKSAE(32, 64, 4, seed=1)
    results = []
    for model in (whole, split):
        quality = {2: TokenQuality(32, 64, 4)}
        losses = {2: {"ce_sae": 0.0, "ce_zero": 0.0, "kl": 0.0}}
        clean = evaluate_batch(model, {2: sae}, ids, quality, losses)
        results.append((clean, losses[2], quality[2].result()["fvu"]))
    (clean_a, losses_a, fvu_a), (clean_b, losses_b, fvu_b) = results
    assert clean_b == pytest.approx(clean_a, rel=1e-5)
    assert fvu_b == pytest.approx(fvu_a, rel=1e-5)
    for key in losses_a:
        assert losses_b[key] == pytest.approx(losses_a[key], rel=1e-4, abs=1e-4), key
    offload = cache_dir("offload")
    assert any(offload.iterdir())  # the disk's blocks, kept while the model lives
    del split, model
    gc.collect()
    assert not any(offload.iterdir())  # and removed with it


def test_a_device_map_that_cannot_be_read_is_one_sentence(tmp_path):
    with pytest.raises(BadInput, match="auto or a JSON file"):
        read_device_map(str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(BadInput, match="must map module names to devices"):
        read_device_map(str(tmp_path / "bad.json"))
    assert read_device_map("auto") == "auto" and read_device_map(None) is None


def test_a_bfloat16_model_keeps_bfloat16_activations_to_the_cache(tiny_dir, tmp_path):
    from randsae.study.settings import settings_for

    settings = settings_for("demo", {"model": str(tiny_dir), "model_dtype": "bfloat16"})
    assert settings.cache_dtype == "bfloat16"
    assert settings_for("demo", {"model": str(tiny_dir)}).cache_dtype == "float16"  # the paper's, for float32
    with loading("bfloat16"):
        model, _ = load_variant(str(tiny_dir), None, {"variant": "trained", "seed": 1}, torch.device("cpu"))
    ids = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(0))
    assert residual_stream(model, ids, [1])[1].dtype == torch.bfloat16
