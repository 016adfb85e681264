"""Mixtral in transformers 5's stacked expert layout: a model's `state_dict()` holds per layer
`mlp.experts.gate_up_proj` (E, 2I, H), `mlp.experts.down_proj` (E, H, I) and the router `mlp.gate.weight`, while
`save_pretrained` still writes the per-expert `block_sparse_moe.experts.{e}.w1/w2/w3.weight`. weightport reads both
(files and in memory) into the same native checkpoint, and exports the per-expert layout."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

import weightport
from helpers import assert_converts_as_saved, assert_same_tensors, cli, hf_config, native_meta, tensors
from weightport import stream
from weightport.errors import CoverageError

transformers = pytest.importorskip("transformers")
from test_transformers_models import BASE, build, logits  # noqa: E402 - needs transformers


def save_as_is(model: torch.nn.Module, config_from, folder) -> None:
    """`safetensors.torch.save_file(model.state_dict())` beside the model's config.json (tied tensors cloned: the
    safetensors library refuses shared storage)."""
    folder.mkdir()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text((config_from / "config.json").read_text())


@pytest.fixture
def mixtral(tmp_path):
    """A tiny random Mixtral saved both ways, and the native checkpoint of its `save_pretrained` folder."""
    model = build("mixtral", tmp_path / "saved")
    save_as_is(model, tmp_path / "saved", tmp_path / "stacked")
    weightport.convert(tmp_path / "saved", tmp_path / "native_saved")
    return model, tmp_path


def test_what_transformers_holds_and_writes(mixtral):
    model, root = mixtral
    stacked, saved = tensors(root / "stacked"), tensors(root / "saved")
    assert stacked["model.layers.1.mlp.experts.gate_up_proj"].shape == (4, 2 * 48, 32)
    assert stacked["model.layers.1.mlp.experts.down_proj"].shape == (4, 32, 48)
    assert stacked["model.layers.1.mlp.gate.weight"].shape == (4, 32)
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in saved and not any(".mlp." in k for k in saved)
    # gate (w1) rows come first in gate_up_proj
    assert torch.equal(stacked["model.layers.1.mlp.experts.gate_up_proj"][2, :48],
                       saved["model.layers.1.block_sparse_moe.experts.2.w1.weight"])
    loaded = transformers.MixtralForCausalLM.from_pretrained(root / "stacked").eval()
    assert torch.equal(logits(loaded, BASE["vocab_size"]), logits(model, BASE["vocab_size"]))


def test_the_stacked_layout_converts_like_the_per_expert_one_and_exports_per_expert(mixtral):
    model, root = mixtral
    plan = json.loads(cli("plan", root / "stacked", "--json").stdout)
    assert ("native decoder.{0..1}.mlp: read from HF layout 'state_dict' (an export writes 'save_pretrained')"
            in plan["notes"])
    assert {"op": "flatten(0,4x-1)", "src": [{"name": "model.layers.0.mlp.experts.gate_up_proj",
                                              "shape": [4, 96, 32], "dtype": "F32"}],
            "dst": [{"name": "decoder.0.mlp.layer_1.weight", "shape": [384, 32], "dtype": "F32"}]} in plan["steps"]
    assert_converts_as_saved(root, root / "stacked")
    exported = transformers.MixtralForCausalLM.from_pretrained(root / "back").eval()
    assert torch.equal(logits(exported, BASE["vocab_size"]), logits(model, BASE["vocab_size"]))


def test_a_tied_mixtral_state_dict_saved_as_is(tmp_path):
    """Both primitives at once: stacked experts and the tied copy of the embedding."""
    model = build("mixtral_tied_swa", tmp_path / "saved")
    save_as_is(model, tmp_path / "saved", tmp_path / "stacked")
    plan = weightport.convert(tmp_path / "stacked", tmp_path / "native")
    assert any("lm_head.weight is a tied copy" in n for n in plan.notes)
    weightport.convert(tmp_path / "saved", tmp_path / "native_saved")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(tmp_path / "native_saved"))
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "saved"))
    exported = transformers.MixtralForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert torch.equal(logits(exported, BASE["vocab_size"]), logits(model, BASE["vocab_size"]))


def test_each_layer_may_come_in_either_layout(mixtral):
    _, root = mixtral
    mixed = {k: v for k, v in tensors(root / "saved").items() if not k.startswith("model.layers.1.block_sparse")}
    mixed |= {k: v for k, v in tensors(root / "stacked").items() if k.startswith("model.layers.1.mlp.")}
    (root / "mixed").mkdir()
    save_file(mixed, root / "mixed" / "model.safetensors")
    (root / "mixed" / "config.json").write_text((root / "saved" / "config.json").read_text())
    plan = weightport.convert(root / "mixed", root / "native")
    assert "native decoder.1.mlp: read from HF layout 'state_dict' (an export writes 'save_pretrained')" in plan.notes
    assert_same_tensors(tensors(root / "native"), tensors(root / "native_saved"))


def test_no_complete_layout_is_refused_naming_what_each_lacks(mixtral):
    _, root = mixtral
    weights = load_file(root / "stacked" / "model.safetensors")
    del weights["model.layers.1.mlp.experts.down_proj"]
    save_file(weights, root / "stacked" / "model.safetensors")
    result = cli("convert", root / "stacked", root / "native", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("no HF layout of native decoder.1.mlp is complete: 'save_pretrained' lacks "
            "model.layers.1.block_sparse_moe.experts.0.w1.weight") in result.stderr
    assert "'state_dict' lacks model.layers.1.mlp.experts.down_proj" in result.stderr
    assert "missing tensor: model.layers.1.mlp.experts.down_proj" in result.stderr
    assert len(result.stderr.splitlines()) < 8  # not one line per per-expert tensor
    assert not (root / "native").exists()


# In memory


def test_import_hf_reads_a_state_dict_in_any_order(mixtral):
    model, root = mixtral
    config, expected = hf_config(root / "saved"), tensors(root / "native_saved")
    items = list(model.state_dict().items())
    random.Random(0).shuffle(items)
    assert_same_tensors(dict(weightport.import_hf(config, items)), expected)
    per_expert = list(tensors(root / "saved").items())
    assert_same_tensors(dict(weightport.import_hf(config, per_expert)), expected)
    native_config = native_meta(root / "native_saved")["config"]
    assert_same_tensors(dict(stream.export_hf(native_config, expected.items())), tensors(root / "saved"))


def test_import_hf_refuses_a_layer_in_two_layouts_and_reports_missing_tensors(mixtral):
    _, root = mixtral
    config = hf_config(root / "saved")
    stacked, saved = tensors(root / "stacked"), tensors(root / "saved")
    items = [(k, v) for k, v in stacked.items() if k != "model.layers.0.mlp.experts.down_proj"]
    items.append(("model.layers.0.block_sparse_moe.experts.0.w2.weight",
                  saved["model.layers.0.block_sparse_moe.experts.0.w2.weight"]))
    with pytest.raises(CoverageError, match=r"'model.layers.0.block_sparse_moe.experts.0.w2.weight' is in HF layout "
                                            r"'save_pretrained' of decoder.0.mlp, whose first tensor came in layout "
                                            r"'state_dict'"):
        list(weightport.import_hf(config, items))
    partial = [(k, v) for k, v in stacked.items() if k != "model.layers.1.mlp.experts.gate_up_proj"]
    with pytest.raises(CoverageError, match="never arrived") as err:
        list(weightport.import_hf(config, partial))
    assert "model.layers.1.mlp.experts.gate_up_proj" in str(err.value) and "block_sparse_moe" not in str(err.value)
