"""What a released SAE's cfg.json says it reads: a block's output as it is, a block's input (`resid_pre`) as the
previous block's output (the same tensor), every other hook refused by name, and a hook that disagrees with
--layers refused."""

import json

import pytest

from randsae.errors import BadInput
from randsae.lm.sae_run import foreign_layers, hooked_block


@pytest.mark.parametrize("hook, block", [
    ("blocks.9.hook_resid_post", 9), ("model.layers.9", 9), ("gpt_neox.layers.4", 4), ("transformer.h.2", 2),
    ("blocks.3.hook_resid_pre", 2), ("blocks.1.hook_resid_pre", 0)])
def test_a_block_output_or_input_names_the_block_whose_output_it_is(hook, block):
    assert hooked_block({"metadata": {"hook_name": hook}}) == block
    assert hooked_block({"hook_name": hook}) == block


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.3.hook_attn_out", "blocks.3.hook_mlp_out",
                                  "blocks.3.hook_resid_mid", "blocks.3.attn.hook_z", "hook_embed"])
def test_any_other_hook_is_refused_by_name(hook):
    with pytest.raises(BadInput, match=f"reads {hook}, which randsae does not hook; it reads SAEs of a block's "):
        hooked_block({"metadata": {"hook_name": hook}}, "theirs")


def test_a_hook_and_layers_must_agree(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"metadata": {"hook_name": "blocks.4.hook_resid_pre"}}))
    assert foreign_layers(tmp_path, "all") == {3: tmp_path}
    assert foreign_layers(tmp_path, "3") == {3: tmp_path}
    with pytest.raises(BadInput, match="reads block 3's output .* not block 4's; give --layers 3"):
        foreign_layers(tmp_path, "4")
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": 8}))
    assert foreign_layers(tmp_path, "5") == {5: tmp_path}
    with pytest.raises(BadInput, match="names no hook; say which block's output it reads with --layers N"):
        foreign_layers(tmp_path, "all")
