"""Tiny real transformers models (fixed seed, random weights) through native and back: bit-exact tensors, the
whole config.json back, and the same logits from the converted checkpoint as from the source model. The native
tensors are those computed from the model's own parameters in plain torch (tests/reference.py), and an export that
records no HF model writes what save_pretrained wrote, but for what the native model cannot hold, named."""

from __future__ import annotations

import math

import pytest
import torch

import weightport
from helpers import (
    assert_same_config, assert_same_tensors, hf_config, model_inputs, native_meta, saved_by_fast_llm, tensors,
)
from reference import native_tensors
from weightport import families
from weightport.core.paths import MISSING

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "beta_fast": 32.0, "beta_slow": 1.0}
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama_tied_bf16": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True, "dtype": "bfloat16"}),
    "llama_mha_biases_gelu": ("LlamaConfig", "LlamaForCausalLM",
                              {"num_key_value_heads": 4, "attention_bias": True, "mlp_bias": True,
                               "hidden_act": "gelu"}),
    "llama_mqa_head_dim": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 1, "head_dim": 16}),
    "llama_llama3_relu": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LLAMA3, "hidden_act": "relu"}),
    "llama_yarn_tanh_gelu": ("LlamaConfig", "LlamaForCausalLM",
                             {"rope_parameters": YARN, "hidden_act": "gelu_pytorch_tanh"}),
    "mistral_swa": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 8}),
    "mistral_tied_bf16": ("MistralConfig", "MistralForCausalLM", {"tie_word_embeddings": True, "dtype": "bfloat16"}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "mixtral_tied_swa": ("MixtralConfig", "MixtralForCausalLM",
                         {"num_local_experts": 3, "num_experts_per_tok": 1, "tie_word_embeddings": True,
                          "sliding_window": 8}),
    "qwen2_tied_head_dim_bf16": ("Qwen2Config", "Qwen2ForCausalLM",
                                 {"tie_word_embeddings": True, "head_dim": 16, "dtype": "bfloat16"}),
    "gemma4_dense": ("Gemma4TextConfig", "Gemma4ForCausalLM", {
        "head_dim": 8, "global_head_dim": 16, "hidden_size_per_layer_input": 0, "num_hidden_layers": 3,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"], "sliding_window": 8,
        "tie_word_embeddings": False}),
    "gemma4_repeating_layers": ("Gemma4TextConfig", "Gemma4ForCausalLM", {
        "head_dim": 8, "global_head_dim": 16, "hidden_size_per_layer_input": 0, "num_hidden_layers": 4,
        "layer_types": ["sliding_attention", "full_attention"] * 2, "sliding_window": 8}),
    "gemma4_moe_kv_shared_bf16": ("Gemma4TextConfig", "Gemma4ForCausalLM", {
        "head_dim": 8, "global_head_dim": 16, "num_global_key_value_heads": 1, "attention_k_eq_v": True,
        "hidden_size_per_layer_input": 0, "num_hidden_layers": 3, "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention", "full_attention"], "enable_moe_block": True,
        "num_experts": 3, "top_k_experts": 2, "moe_intermediate_size": 16, "final_logit_softcapping": 30.0,
        "dtype": "bfloat16"}),
}


def build(name: str, folder) -> torch.nn.Module:
    config_cls, model_cls, overrides = CASES[name]
    dtype = getattr(torch, overrides.get("dtype", "float32"))
    config = getattr(transformers, config_cls)(**{**BASE, **overrides})
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    with torch.no_grad():
        for param in model.parameters():  # norms too, so a mis-mapped tensor cannot hide behind ones
            param.data = param.data.normal_(0, 0.05).to(dtype)  # buffers (rotary) stay fp32, as when loaded
    model = model.eval()
    model.save_pretrained(folder)
    return model


def logits(model: torch.nn.Module, vocab: int) -> torch.Tensor:
    tokens = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("name", CASES)
def test_through_native_and_back(name, tmp_path):
    source = build(name, tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), native_tensors(source))  # Fast-LLM's layout
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    assert_same_config(hf_config(tmp_path / "back"), hf_config(tmp_path / "hf"))
    converted = getattr(transformers, CASES[name][1]).from_pretrained(tmp_path / "back").eval()
    assert torch.equal(logits(source, BASE["vocab_size"]), logits(converted, BASE["vocab_size"]))
    # and native -> hf -> native gives back the native checkpoint
    weightport.convert(tmp_path / "back", tmp_path / "native2")
    assert_same_tensors(tensors(tmp_path / "native2"), tensors(tmp_path / "native"))
    assert native_meta(tmp_path / "native2") == native_meta(tmp_path / "native")


# What an export that records no HF model writes otherwise than save_pretrained did, beyond max_position_embeddings
# (native models have no position limit: the class default is written) and transformers_version (the release the
# export's layout was checked against): {case: {key: (weightport's value, save_pretrained's)}}.
NOT_HELD = {
    # Fast-LLM's gelu is the tanh approximation; the exact spelling is kept only in weightport's record
    "llama_mha_biases_gelu": {"hidden_act": ("gelu_pytorch_tanh", "gelu")},
    # the native rotary holds yarn's attention factor as a number: the one transformers derives when it is absent
    "llama_yarn_tanh_gelu": {"rope_parameters.attention_factor": (0.1 * math.log(4.0) + 1.0, MISSING)},
    # the native head size, where MixtralConfig's default (null) means hidden_size // num_attention_heads
    "mixtral": {"head_dim": (8, None)},
    "mixtral_tied_swa": {"head_dim": (8, None)},
    # Llava: exact gelu as above, and the vision tower's image_size (no native field) at PixtralVisionConfig's default;
    # its rotary spelled as transformers 5.14 spells it (the layout an export writes for Llava)
    "llava": {"projector_hidden_act": ("gelu_pytorch_tanh", "gelu"), "vision_config.hidden_act": ("gelu_pytorch_tanh",
              "gelu"), "vision_config.image_size": (1024, 16), "vision_config.rope_parameters.rope_type": ("default",
                                                                                                       "axial")},
}


def assert_exports_without_a_record_as_saved(root, name: str, max_positions: int) -> None:
    """`root/hf` (written by save_pretrained) imported, saved as Fast-LLM saves it, and exported in the config.json
    layout of `root/hf`: the same tensors, and the same config.json key for key but for the named differences."""
    saved = hf_config(root / "hf")
    weightport.convert(root / "hf", root / "native")
    saved_by_fast_llm(root / "native", root / "by_fast_llm")
    layout = "transformers5.15" if "per_layer_config" in saved else "transformers5"  # as transformers 5.24 writes
    weightport.convert(root / "by_fast_llm", root / "back", format=families.detect(saved), hf_layout=layout)
    assert_same_tensors(tensors(root / "back"), tensors(root / "hf"))
    text = "text_config." if "text_config" in saved else ""
    expected = {f"{text}max_position_embeddings": (max_positions, BASE["max_position_embeddings"])} | NOT_HELD.get(
        name, {})
    version = {"transformers5": "5.14.1", "transformers5.15": "5.24.0"}[layout]
    if version != saved["transformers_version"]:
        expected["transformers_version"] = (version, saved["transformers_version"])
    assert_same_config(hf_config(root / "back"), saved, expected=expected)


@pytest.mark.parametrize("name", CASES)
def test_an_export_without_a_record_writes_what_save_pretrained_wrote(name, tmp_path):
    build(name, tmp_path / "hf")
    config_cls = getattr(transformers, CASES[name][0])
    assert_exports_without_a_record_as_saved(tmp_path, name, config_cls().max_position_embeddings)


def test_dtype_option_casts_and_records_it(tmp_path):
    build("llama", tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native", dtype="bfloat16")
    assert {t.dtype for t in tensors(tmp_path / "native").values()} == {torch.bfloat16}
    weightport.convert(tmp_path / "native", tmp_path / "back", dtype="float32")
    assert hf_config(tmp_path / "back")["dtype"] == "float32"
    back, source = tensors(tmp_path / "back"), tensors(tmp_path / "hf")
    assert all(torch.equal(back[k], source[k].to(torch.bfloat16).to(torch.float32)) for k in source)


def test_gemma4_both_config_layouts(tmp_path):
    """transformers >= 5.15 writes per_layer_config; the <= 5.14 layout (global_head_dim) is written on request,
    and transformers reads both as the same model."""
    source = build("gemma4_moe_kv_shared_bf16", tmp_path / "hf")
    assert "per_layer_config" in hf_config(tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "old", hf_layout="transformers5")
    old = hf_config(tmp_path / "old")
    assert "per_layer_config" not in old and old["global_head_dim"] == 16 and old["num_global_key_value_heads"] == 1
    converted = transformers.Gemma4ForCausalLM.from_pretrained(tmp_path / "old").eval()
    assert torch.equal(logits(source, BASE["vocab_size"]), logits(converted, BASE["vocab_size"]))
    weightport.convert(tmp_path / "old", tmp_path / "native2")
    weightport.convert(tmp_path / "native2", tmp_path / "new", hf_layout="transformers5.15")
    assert hf_config(tmp_path / "new")["per_layer_config"] == hf_config(tmp_path / "hf")["per_layer_config"]


def build_llava(folder, *, tied: bool, text: str) -> torch.nn.Module:
    text_config = getattr(transformers, text)(**{**BASE, "tie_word_embeddings": tied})
    vision = transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                              num_attention_heads=4, patch_size=4, image_size=16, head_dim=8)
    config = transformers.LlavaConfig(text_config=text_config, vision_config=vision, image_token_index=95,
                                      projector_hidden_act="gelu", vision_feature_layer=-1,
                                      vision_feature_select_strategy="full", tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05)
    model.eval().save_pretrained(folder)
    return model


LLAVAS = [(False, "MistralConfig"), (True, "MistralConfig"), (False, "LlamaConfig"), (True, "LlamaConfig")]


@pytest.mark.parametrize("tied, text", LLAVAS)
def test_llava_through_native_and_back_with_an_image(tmp_path, tied, text):
    source = build_llava(tmp_path / "hf", tied=tied, text=text)
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), native_tensors(source))  # Fast-LLM's layout
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    assert_same_config(hf_config(tmp_path / "back"), hf_config(tmp_path / "hf"))
    converted = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    inputs = model_inputs(hf_config(tmp_path / "hf"))
    with torch.no_grad():
        assert torch.equal(source(**inputs).logits, converted(**inputs).logits)


@pytest.mark.parametrize("tied, text", LLAVAS)
def test_a_llava_export_without_a_record_writes_what_save_pretrained_wrote(tmp_path, tied, text):
    build_llava(tmp_path / "hf", tied=tied, text=text)
    assert_exports_without_a_record_as_saved(tmp_path, "llava", getattr(transformers, text)().max_position_embeddings)
