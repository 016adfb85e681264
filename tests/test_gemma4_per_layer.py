"""Gemma 4's full-attention sizes as transformers 5.15+ writes them: `per_layer_config` holds, for each full layer,
only the sizes that differ from the sliding layers' (`{}` when none does). Every combination converts both ways with
the same config.json and logits, and exports in the flat layout of transformers 5.14 that it reads alike."""

from __future__ import annotations

import pytest
import torch

import weightport
from helpers import assert_same_tensors, hf_config, tensors

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("global_head_dim, shared_kv", [(16, False), (32, False), (16, True), (32, True)])
def test_per_layer_config_with_and_without_overrides(global_head_dim, shared_kv, tmp_path):
    config = transformers.Gemma4TextConfig(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_attention_heads=4, head_dim=16,
        global_head_dim=global_head_dim, num_key_value_heads=2, num_global_key_value_heads=1 if shared_kv else None,
        attention_k_eq_v=shared_kv, num_hidden_layers=3, hidden_size_per_layer_input=0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = transformers.Gemma4ForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "hf")
    expected = {"head_dim": global_head_dim} if global_head_dim != 16 else {}
    expected |= {"num_key_value_heads": 1} if shared_kv else {}
    assert hf_config(tmp_path / "hf")["per_layer_config"] == ({"2": expected} if expected else {})
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert hf_config(tmp_path / "back") == hf_config(tmp_path / "hf")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    weightport.convert(tmp_path / "native", tmp_path / "flat", hf_layout="transformers5")
    flat = hf_config(tmp_path / "flat")
    assert "per_layer_config" not in flat and flat["global_head_dim"] == global_head_dim
    tokens = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens).logits
        for folder in ("back", "flat"):
            loaded = transformers.Gemma4ForCausalLM.from_pretrained(tmp_path / folder).eval()
            assert torch.equal(loaded(tokens).logits, reference), folder
