"""Released SAEs by name: `sae-lens:RELEASE/ID` through SAELens's own registry and loader, and
`hf:REPO/PATH`, both from a populated Hugging Face cache with the hub out of reach (a loopback port nobody
serves), each a directory randsae reads; unknown names and names not cached are one sentence (exit 2)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from randsae.errors import BadInput
from randsae.sae import JumpReLUSAE, ReluSAE, load

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RELEASE, SAE_ID = "pythia-70m-deduped-res-sm", "blocks.0.hook_resid_post"
REPO, FOLDER = "ctigges/pythia-70m-deduped__res-sm_processed", "0-res-sm"  # what SAELens's registry says


def cached(hub: Path, repo: str, folder: str, sae) -> Path:
    """`sae` saved by SAELens where the Hugging Face client keeps `repo`'s files at its main revision."""
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    sae.save_model(root / "snapshots" / COMMIT / folder)
    return root / "snapshots" / COMMIT / folder


@pytest.fixture
def hub(tmp_path, monkeypatch, port):
    """A Hugging Face cache of two SAEs, the hub unreachable, randsae's own cache empty."""
    from huggingface_hub import constants
    from sae_lens import SAE, JumpReLUSAEConfig, StandardSAEConfig

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("RANDSAE_CACHE", str(tmp_path / "randsae"))
    torch.manual_seed(0)
    standard = SAE.from_dict(StandardSAEConfig(d_in=512, d_sae=1024).to_dict())
    jumprelu = SAE.from_dict(JumpReLUSAEConfig(d_in=32, d_sae=128).to_dict())
    with torch.no_grad():
        for p in (*standard.parameters(), *jumprelu.parameters()):
            p.normal_(0, 0.1)
        standard.b_dec.zero_()  # randsae's ReLU SAE has no decoder bias (a non-zero one is refused)
    jumprelu.cfg.metadata.hook_name = "blocks.2.hook_resid_post"  # TransformerLens's name for block 2's output
    cached(cache, REPO, FOLDER, standard)
    cached(cache, "someone/my-saes", "res/model.layers.2", jumprelu)
    return {"standard": standard, "jumprelu": jumprelu, "cache": cache}


def test_a_registry_name_resolves_offline_through_saelens_and_is_kept(hub):
    from randsae.sae.names import resolve

    path = resolve(f"sae-lens:{RELEASE}/{SAE_ID}")
    sae = load(path)
    assert isinstance(sae, ReluSAE) and sae.num_latents == 1024
    assert torch.allclose(sae.W_dec, hub["standard"].W_dec)
    assert path.is_relative_to(Path(os.environ["RANDSAE_CACHE"]))  # converted once, kept
    assert resolve(f"sae-lens:{RELEASE}/{SAE_ID}") == path


def test_a_hub_folder_resolves_offline(hub):
    from randsae.lm.sae_run import foreign_layers
    from randsae.sae.names import resolve

    path = resolve("hf:someone/my-saes/res/model.layers.2")
    sae = load(path)
    assert isinstance(sae, JumpReLUSAE)
    assert torch.allclose(sae.threshold, hub["jumprelu"].threshold)
    assert list(foreign_layers(path, "all")) == [2]  # its hook names the block it reads
    assert list(foreign_layers(resolve("hf:someone/my-saes/res"), "all")) == [2]


@pytest.mark.parametrize(("name", "says"), [
    ("sae-lens:pythia-70m-dedup-res-sm/x", "is not a release in SAELens's registry; did you mean "
                                           "pythia-70m-deduped-res-sm"),
    (f"sae-lens:{RELEASE}/blocks.0.hook_resid_pst",
     f"has no SAE 'blocks.0.hook_resid_pst'; did you mean {SAE_ID}"),
    (f"sae-lens:{RELEASE}", "names no SAE"),
    (f"sae-lens:{RELEASE}/blocks.1.hook_resid_post", "is not in the local Hugging Face cache and the hub"),
    ("hf:someone/other-saes/x", "is not in the local Hugging Face cache and the hub"),
    ("hf:someone/my-saes/nothing-here", "has no folder 'nothing-here'"),
    ("hf:someone", "is not hf:OWNER/REPO[/PATH]"),
])
def test_a_name_that_cannot_be_had_is_one_sentence(hub, name, says):
    from randsae.sae.names import resolve

    with pytest.raises(BadInput, match=None) as caught:
        resolve(name)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_study_refuses_a_name_not_cached_in_one_sentence_and_writes_nothing(hub, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "randsae", "baseline", "--preset", "demo", "--sae",
                             f"sae-lens:{RELEASE}/blocks.3.hook_resid_post", "--out", str(out)],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert result.returncode == 2, result.stderr
    assert "not in the local Hugging Face cache" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
