"""Tests of the native config schema (`resolve`, `blocks`) and of the native parameter inventory."""

from __future__ import annotations

import pytest

from weightport.errors import ConfigError
from weightport.native.model import parameters
from weightport.native.schema import block_names, blocks, has_bias, resolve

# resolve


def test_resolve_applies_defaults_and_default_types() -> None:
    config = resolve("gpt", {})
    assert config["hidden_size"] == 1024 and config["tied_embedding_weight"] is False
    assert "type" not in config and "type" not in config["embeddings"]  # untyped kinds
    assert config["decoder"]["type"] == "fixed" and config["decoder"]["num_blocks"] == 12
    block = config["decoder"]["block"]
    assert block["type"] == "decoder"
    assert block["normalization"] == {"type": "layer_norm", "epsilon": 1e-5, "zero_centered": False,
                                      "weight": {}, "bias": {}}
    assert block["mixer"]["type"] == "attention" and block["mixer"]["rotary"] == {"type": "none"}
    assert block["mixer"]["query_layer"] == {"weight": {}, "bias": {"enabled": None}}
    assert block["mlp"]["type"] == "mlp" and block["mlp"]["activation"] == "gelu"
    assert block["pre_mixer_normalization"] is None and block["mixer"]["query_norm"] is None
    assert config["head"]["normalization"]["type"] == "layer_norm"
    assert config["peft"] == {"type": "none"}


def test_resolve_keeps_given_values() -> None:
    config = resolve("gpt", {"hidden_size": 64, "decoder": {"num_blocks": 2, "block": {
        "mixer": {"heads": 4, "head_groups": 2, "rotary": {"type": "llama3", "theta": 5e5}},
        "mlp": {"gated": True}, "normalization": {"type": "rms_norm", "epsilon": 1e-6},
        "pre_mlp_normalization": {"type": "rms_norm"}}}})
    block = config["decoder"]["block"]
    assert config["hidden_size"] == 64 and config["decoder"]["num_blocks"] == 2
    assert (block["mixer"]["heads"], block["mixer"]["head_groups"], block["mixer"]["head_size"]) == (4, 2, 128)
    assert block["mixer"]["rotary"] == {"type": "llama3", "theta": 5e5, "scale_factor": 8.0,
                                        "low_frequency_factor": 1.0, "high_frequency_factor": 4.0,
                                        "original_context_length": 8192}
    assert block["mlp"]["activation"] == "silu"  # the default activation of a gated MLP
    assert block["normalization"] == {"type": "rms_norm", "epsilon": 1e-6, "zero_centered": False, "weight": {}}
    assert block["pre_mlp_normalization"]["epsilon"] == 1e-5


def test_resolve_derives_yarn_attention_factor() -> None:
    rotary = resolve("rotary", {"type": "yarn", "scale_factor": 1.0})
    assert rotary["attention_factor"] == 1.0


def test_resolve_drops_inert_fields() -> None:
    """Fields that do not change the model, as real Fast-LLM training runs write them, anywhere they exist."""
    config = resolve("gpt", {
        "use_megatron_initialization": True, "lr_scale": 0.5,
        "embeddings": {"dropout": 0.1, "lr_scale": 2.0, "vocab_parallel": False,
                       "word_embeddings": {"initialization": {"type": "normal", "std": 0.02}, "lr_scale": 0.1}},
        "decoder": {"type": None, "block": {
            "dropout": 0.1, "mixer": {"lr_scale": 0.5, "implementation": "flash"},
            "mlp": {"type": "moe", "auxiliary_loss_coefficient": 0.1, "jitter_eps": 0.01,
                    "dropless_dynamic_shape": True, "layer_2": {"weight": {"weight_decay": False}}}}},
        "head": {"cross_entropy_splits": 2, "loss_implementation": "torch", "prediction_loss_coefficient": [1.0],
                 "losses": {"lm": {"type": "label"}}, "normalization": {"type": "rms_norm", "lr_scale": 0.3}},
    })
    assert "use_megatron_initialization" not in config and "lr_scale" not in config
    assert config["embeddings"]["word_embeddings"] == {} and "dropout" not in config["embeddings"]
    block = config["decoder"]["block"]
    assert config["decoder"]["type"] == "fixed"  # `type: null` (a verbose dump) is the default type
    assert "dropout" not in block and "lr_scale" not in block["mixer"] and "implementation" not in block["mixer"]
    assert "auxiliary_loss_coefficient" not in block["mlp"] and "jitter_eps" not in block["mlp"]
    assert block["mlp"]["experts"] == 2 and block["mlp"]["layer_2"]["weight"] == {}
    assert set(config["head"]) == {"normalization", "output_weight", "prediction_heads", "final_logit_softcap",
                                   "logits_scale_factor"}


def test_resolve_accepts_every_inert_field_a_training_run_writes() -> None:
    """The fields real Fast-LLM runs and verbose dumps write that do not change the model (issue inputs)."""
    plain = resolve("gpt", {"decoder": {"block": {"mlp": {"type": "moe"}, "mixer": {
        "type": "stochastic", "mixers": {"a": {}, "m": {"type": "mamba"}}}}}})
    given = resolve("gpt", {
        "type": None, "use_megatron_initialization": True,
        "head": {"type": None, "cross_entropy_splits": 4, "loss_implementation": "fused",
                 "prediction_loss_coefficient": [1.0]},
        "embeddings": {"type": None, "full_precision_residual": True},
        "decoder": {"block": {"mlp": {"type": "moe", "dropless_dynamic_shape": True, "router": {"type": None}},
                              "mixer": {"type": "stochastic", "predefined_layout_probabilities": [0.5, 0.5],
                                        "seed_shift": 123, "sampling_weights": {"a": 1.0},
                                        "mixers": {"a": {"use_flash_attention": False},
                                                   "m": {"type": "mamba", "cross_document_attention": False}}}}},
    })
    assert given == plain


def test_resolve_refuses_fields_fast_llm_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"unknown field\(s\) decoder.block.mlp.router.bias for linear"):
        resolve("gpt", {"decoder": {"block": {"mlp": {"type": "moe", "router": {"bias": {"enabled": False}}}}}})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) initialization for gpt"):
        resolve("gpt", {"initialization": {"std": 0.02}})
    with pytest.raises(ConfigError, match=r"embeddings.type = 'x', but a embeddings config has no types"):
        resolve("gpt", {"embeddings": {"type": "x"}})


def test_resolve_types_fields_that_fast_llm_types_with_a_subclass() -> None:
    gdn = resolve("mixer", {"type": "gdn"})
    assert gdn["normalization"]["type"] == "gated_rms_norm"
    with pytest.raises(ConfigError, match=r"normalization.type = 'rms_norm' is not a normalization type allowed "
                                          r"there \(allowed: gated_rms_norm\)"):
        resolve("mixer", {"type": "gdn", "normalization": {"type": "rms_norm"}})
    with pytest.raises(ConfigError, match=r"routed.type = 'mlp' is not a mlp type allowed there"):
        resolve("mlp", {"type": "hybrid_moe", "routed": {"type": "mlp"}})


def test_resolve_rejects_unknown_field_with_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown field\(s\) decoder.block.mixer.heds for mixer type 'attention'"):
        resolve("gpt", {"decoder": {"block": {"mixer": {"heds": 8}}}})


def test_resolve_rejects_field_of_another_type() -> None:
    with pytest.raises(ConfigError, match=r"unknown field\(s\) head.normalization.bias "
                                          r"for normalization type 'rms_norm'"):
        resolve("gpt", {"head": {"normalization": {"type": "rms_norm", "bias": {}}}})


def test_resolve_rejects_unknown_type_with_path() -> None:
    with pytest.raises(ConfigError, match=r"decoder.block.normalization.type = 'batch_norm' is not a "
                                          r"normalization type allowed there \(allowed: fixed_rms_norm, "
                                          r"gated_rms_norm, layer_norm"):
        resolve("gpt", {"decoder": {"block": {"normalization": {"type": "batch_norm"}}}})


def test_resolve_rejects_non_mapping_with_path() -> None:
    with pytest.raises(ConfigError, match=r"head.normalization should be a mapping, got 'rms_norm'"):
        resolve("gpt", {"head": {"normalization": "rms_norm"}})


def test_resolve_checks_heads() -> None:
    with pytest.raises(ConfigError, match=r"decoder.block.mixer has heads=6, head_groups=4"):
        resolve("gpt", {"decoder": {"block": {"mixer": {"heads": 6, "head_groups": 4}}}})


def test_resolve_pattern_blocks() -> None:
    sequence = resolve("block_sequence", {"type": "pattern", "pattern": ["a", "b"], "num_blocks": 3, "blocks": {
        "a": {}, "b": {"mlp": {"type": "moe", "experts": 4}}}}, ("decoder",))
    assert sequence["blocks"]["a"]["mlp"]["type"] == "mlp"
    assert sequence["blocks"]["b"]["mlp"]["experts"] == 4
    with pytest.raises(ConfigError, match=r"decoder.blocks.b.mixer.type = 'retnet'"):
        resolve("block_sequence", {"type": "pattern", "blocks": {"b": {"mixer": {"type": "retnet"}}}}, ("decoder",))


# blocks


def test_blocks_fixed() -> None:
    sequence = resolve("block_sequence", {"num_blocks": 3, "block": {"mlp": {"gated": True}}})
    assert blocks(sequence) == [sequence["block"]] * 3
    assert block_names(sequence) == ["", "", ""]


@pytest.mark.parametrize("num_blocks, expected", [
    (5, ["a", "b", "b", "a", "b"]),  # repeated
    (2, ["a", "b"]),  # truncated
])
def test_blocks_pattern(num_blocks: int, expected: list[str]) -> None:
    sequence = resolve("block_sequence", {"type": "pattern", "pattern": ["a", "b", "b"], "num_blocks": num_blocks,
                                          "blocks": {"a": {"mlp": {"intermediate_size": 1}},
                                                     "b": {"mlp": {"intermediate_size": 2}}}})
    sizes = {"a": 1, "b": 2}
    assert [block["mlp"]["intermediate_size"] for block in blocks(sequence)] == [sizes[n] for n in expected]
    assert block_names(sequence) == expected


def test_blocks_pattern_errors() -> None:
    with pytest.raises(ConfigError, match="non-empty list `pattern`, got None"):
        blocks(resolve("block_sequence", {"type": "pattern", "blocks": {"a": {}}}))
    with pytest.raises(ConfigError, match=r"pattern names \['c'\] have no entry in `blocks`"):
        blocks(resolve("block_sequence", {"type": "pattern", "pattern": ["a", "c"], "blocks": {"a": {}}}))


def test_has_bias() -> None:
    mixer = resolve("mixer", {"add_linear_biases": False, "dense_layer": {"bias": {"enabled": True}}})
    assert not has_bias(mixer, "query_layer") and has_bias(mixer, "dense_layer")


# parameters


def tiny(mixer: dict | None = None, mlp: dict | None = None, **top) -> dict:
    """A 1-block model: hidden 8, vocab 16, 4 heads of size 2 in 2 groups, MLP size 12."""
    return resolve("gpt", {"hidden_size": 8, "embeddings": {"vocab_size": 16}, "decoder": {"num_blocks": 1, "block": {
        "mixer": {"heads": 4, "head_groups": 2, "head_size": 2, **(mixer or {})},
        "mlp": {"intermediate_size": 12, **(mlp or {})}}}, **top})


def test_parameters_default_model() -> None:
    d = "decoder.0"
    assert parameters(tiny()) == {
        "embeddings.word_embeddings_weight": (16, 8),
        f"{d}.norm_1.weight": (8,), f"{d}.norm_1.bias": (8,), f"{d}.norm_2.weight": (8,), f"{d}.norm_2.bias": (8,),
        f"{d}.mixer.query.weight": (8, 8), f"{d}.mixer.query.bias": (8,),
        f"{d}.mixer.key_value.weight": (8, 8), f"{d}.mixer.key_value.bias": (8,),
        f"{d}.mixer.dense.weight": (8, 8), f"{d}.mixer.dense.bias": (8,),
        f"{d}.mlp.layer_1.weight": (12, 8), f"{d}.mlp.layer_1.bias": (12,),
        f"{d}.mlp.layer_2.weight": (12, 8), f"{d}.mlp.layer_2.bias": (8,),
        "head.final_norm.weight": (8,), "head.final_norm.bias": (8,),
        "head.output_weights": (16, 8),
    }


def test_parameters_tied() -> None:
    assert "head.output_weights" in parameters(tiny(tied_embedding_weight=False))
    assert "head.output_weights" not in parameters(tiny(tied_embedding_weight=True))


def test_parameters_without_biases() -> None:
    shapes = parameters(tiny(mixer={"add_linear_biases": False}, mlp={"add_linear_biases": False}))
    assert not [name for name in shapes if name.endswith(".bias") and (".mixer." in name or ".mlp." in name)]
    assert "decoder.0.norm_1.bias" in shapes  # layer norms keep theirs


def test_parameters_per_layer_bias() -> None:
    shapes = parameters(tiny(mixer={"add_linear_biases": False, "query_layer": {"bias": {"enabled": True}}},
                             mlp={"layer_2": {"bias": {"enabled": False}}}))
    biases = sorted(name for name in shapes if name.endswith(".bias") and name.startswith("decoder.0.m"))
    assert biases == ["decoder.0.mixer.query.bias", "decoder.0.mlp.layer_1.bias"]


def test_parameters_gated_mlp() -> None:
    shapes = parameters(tiny(mlp={"gated": True}))
    assert shapes["decoder.0.mlp.layer_1.weight"] == (24, 8) and shapes["decoder.0.mlp.layer_1.bias"] == (24,)
    assert shapes["decoder.0.mlp.layer_2.weight"] == (12, 8)


def test_parameters_shared_key_value() -> None:
    assert parameters(tiny())["decoder.0.mixer.key_value.weight"] == (8, 8)
    shapes = parameters(tiny(mixer={"shared_key_value": True}))
    assert shapes["decoder.0.mixer.key_value.weight"] == (4, 8) and shapes["decoder.0.mixer.key_value.bias"] == (4,)


def test_parameters_moe() -> None:
    shapes = parameters(tiny(mlp={"type": "moe", "experts": 4, "shared_experts": 1, "intermediate_size": 3,
                                  "gated": True, "add_linear_biases": False}))
    mlp = {name.removeprefix("decoder.0.mlp."): shape for name, shape in shapes.items() if ".mlp." in name}
    assert mlp == {"router.weight": (3, 8), "layer_1.weight": (24, 8), "layer_2.weight": (12, 8)}


def test_parameters_norm_types_and_extra_norms() -> None:
    shapes = parameters(resolve("gpt", {"hidden_size": 8, "embeddings": {"vocab_size": 16}, "decoder": {
        "num_blocks": 2, "block": {
            "mixer": {"heads": 4, "head_groups": 2, "head_size": 2, "add_linear_biases": False,
                      "key_norm": {"type": "rms_norm"}},
            "mlp": {"add_linear_biases": False},
            "normalization": {"type": "rms_norm"}, "post_mlp_normalization": {"type": "none"},
            "pre_mlp_normalization": {"type": "layer_norm"}}},
        "head": {"normalization": {"type": "fixed_rms_norm"}}}))
    assert shapes["decoder.1.norm_1.weight"] == (8,) and "decoder.1.norm_1.bias" not in shapes
    assert shapes["decoder.1.norm_2.bias"] == (8,)  # pre_mlp_normalization replaces the block's norm
    assert shapes["decoder.0.mixer.key_norm.weight"] == (2,)  # normalizes one head
    assert not [name for name in shapes if "post_mlp_norm" in name or "query_norm" in name]
    assert not [name for name in shapes if name.startswith("head.final_norm")]


def test_parameters_position_embeddings() -> None:
    shapes = parameters(tiny(embeddings={"vocab_size": 16, "num_position_embeddings": 32,
                                         "position_embeddings": {"enabled": True}}))
    assert shapes["embeddings.position_embeddings_weight"] == (32, 8)
    assert "embeddings.position_embeddings_weight" not in parameters(tiny())
