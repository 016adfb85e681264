"""Tests of config rules in both directions, on tiny hand-built rule tables (no family involved)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from weightport.core.config_rules import (
    Choice, Computed, Constant, Derived, Entries, Ignore, Layout, Nested, Rename, from_hf, to_hf,
)
from weightport.core.spec import override, rule_key
from weightport.errors import ConfigError, SpecError

META = frozenset({"model_type", "torch_dtype", "id2label"})


def imp(rules: tuple, hf: dict) -> dict:
    return from_hf(rules, hf, "toy", META)[0]


def exp(rules: tuple, native: dict) -> dict:
    return to_hf(rules, native, "toy")


# Rename


def test_rename_both_directions() -> None:
    rules = (Rename("hidden_size", "d_model"), Rename("mixer.heads", "n_heads"))
    native = imp(rules, {"d_model": 8, "n_heads": 2})
    assert native == {"hidden_size": 8, "mixer": {"heads": 2}}
    assert exp(rules, native) == {"d_model": 8, "n_heads": 2}


ACT = Rename("activation", "hidden_act", values={"gelu_pytorch_tanh": "gelu", "gelu": "gelu", "silu": "silu"})


def test_rename_values_map() -> None:
    assert imp((ACT,), {"hidden_act": "gelu_pytorch_tanh"}) == {"activation": "gelu"}
    assert imp((ACT,), {"hidden_act": "gelu"}) == {"activation": "gelu"}
    # The first HF spelling of a native value is the one written.
    assert exp((ACT,), {"activation": "gelu"}) == {"hidden_act": "gelu_pytorch_tanh"}
    assert exp((ACT,), {"activation": "silu"}) == {"hidden_act": "silu"}


def test_rename_values_map_unsupported_both_directions() -> None:
    with pytest.raises(ConfigError, match=r"hidden_act = 'relu' is not supported "
                                          r"\(supported: gelu_pytorch_tanh, gelu, silu\)"):
        imp((ACT,), {"hidden_act": "relu"})
    with pytest.raises(ConfigError, match=r"activation = 'relu' has no HF spelling in toy"):
        exp((ACT,), {"activation": "relu"})


def test_rename_default_fills_absent_and_null() -> None:
    rules = (Rename("eps", "rms_norm_eps", default=1e-6),)
    assert imp(rules, {}) == {"eps": 1e-6}
    assert imp(rules, {"rms_norm_eps": None}) == {"eps": 1e-6}
    assert imp(rules, {"rms_norm_eps": 1e-5}) == {"eps": 1e-5}


def test_rename_callable_default_gets_its_section() -> None:
    rules = (Nested("mixer", "text_config", (
        Rename("heads", "n_heads"),
        Rename("head_groups", "n_kv_heads", default=lambda section: section["n_heads"]),
    )),)
    assert imp(rules, {"text_config": {"n_heads": 4}}) == {"mixer": {"heads": 4, "head_groups": 4}}
    assert imp(rules, {"text_config": {"n_heads": 4, "n_kv_heads": 1}}) == {"mixer": {"heads": 4, "head_groups": 1}}


def test_rename_null_without_default_is_kept() -> None:
    rules = (Rename("window_size", "sliding_window"),)
    assert imp(rules, {"sliding_window": None}) == {"window_size": None}
    assert exp(rules, {"window_size": None}) == {"sliding_window": None}


def test_rename_missing_key_without_default() -> None:
    with pytest.raises(ConfigError, match=r"missing key 'd_model'"):
        imp((Rename("hidden_size", "d_model"),), {})


def test_rename_callable_default_failure_is_a_collected_problem() -> None:
    rules = (Rename("heads", "n_heads"), Rename("head_groups", "n_kv_heads", default=lambda hf: hf["n_heads"]))
    with pytest.raises(ConfigError, match=r"missing key 'n_heads'"):
        imp(rules, {})


# Constant


def test_constant_native_set_on_import_checked_on_export() -> None:
    rules = (Constant(1.0, native="embeddings.scale", reason="no scaling"),)
    assert imp(rules, {}) == {"embeddings": {"scale": 1.0}}
    assert exp(rules, {"embeddings": {"scale": 1.0}}) == {}
    with pytest.raises(ConfigError, match=r"embeddings.scale = 2.0 cannot be represented: "
                                          r"toy requires 1.0 \(no scaling\)"):
        exp(rules, {"embeddings": {"scale": 2.0}})


def test_constant_native_claims_its_whole_subtree() -> None:
    rules = (Constant(None, native="mixer.query_norm"),)
    native = {"mixer": {"query_norm": {"type": "rms_norm", "epsilon": 1e-5}}}
    with pytest.raises(ConfigError, match=r"\(1 problem\)") as err:
        exp(rules, native)
    assert "mixer.query_norm = {'type': 'rms_norm', 'epsilon': 1e-05} cannot be represented" in str(err.value)
    assert "has no rule" not in str(err.value)


def test_constant_hf_written_on_export_unless_write_false() -> None:
    assert exp((Constant(False, hf="scale_embeddings"),), {}) == {"scale_embeddings": False}
    assert exp((Constant(False, hf="scale_embeddings", write=False),), {}) == {}


@pytest.mark.parametrize("write", [True, False])
def test_constant_hf_checked_on_import_when_present(write: bool) -> None:
    rules = (Constant(False, hf="scale_embeddings", write=write),)
    assert imp(rules, {}) == {}
    assert imp(rules, {"scale_embeddings": False}) == {}
    with pytest.raises(ConfigError, match=r"scale_embeddings = True, but toy requires False"):
        imp(rules, {"scale_embeddings": True})


# Derived and Computed

SIZES = (Rename("hidden_size", "hidden_size"), Rename("heads", "num_heads"))


def test_derived_import_and_export() -> None:
    rules = SIZES + (Derived("head_size", lambda hf: hf["hidden_size"] // hf["num_heads"], reason="HF has none"),)
    native = imp(rules, {"hidden_size": 12, "num_heads": 3})
    assert native == {"hidden_size": 12, "heads": 3, "head_size": 4}
    # Exported: claimed (no coverage error) but not written.
    assert exp(rules, native) == {"hidden_size": 12, "num_heads": 3}


def test_derived_failure_is_a_problem() -> None:
    rules = SIZES + (Derived("head_size", lambda hf: hf["hidden_size"] // hf["num_heads"], reason="HF has none"),)
    with pytest.raises(ConfigError, match=r"cannot derive head_size \(HF has none\): ZeroDivisionError"):
        imp(rules, {"hidden_size": 12, "num_heads": 0})


HEAD_DIM = Computed("head_dim", lambda hf: hf["hidden_size"] // hf["num_heads"], reason="transformers reads it")


def test_computed_export_and_import() -> None:
    rules = SIZES + (HEAD_DIM,)
    assert exp(rules, {"hidden_size": 12, "heads": 3}) == {"hidden_size": 12, "num_heads": 3, "head_dim": 4}
    assert imp(rules, {"hidden_size": 12, "num_heads": 3, "head_dim": 4}) == {"hidden_size": 12, "heads": 3}
    assert imp(rules, {"hidden_size": 12, "num_heads": 3}) == {"hidden_size": 12, "heads": 3}  # absent: fine


def test_computed_rejects_inconsistent_value() -> None:
    rules = SIZES + (HEAD_DIM,)
    with pytest.raises(ConfigError, match=r"head_dim = 5, but the rest of the config implies 4"):
        imp(rules, {"hidden_size": 12, "num_heads": 3, "head_dim": 5})


# Entries and Layout

BLOCK_A = (Constant("a", native="kind"), Rename("width", "width_a"))
BLOCK_B = (Constant("b", native="kind"), Rename("width", "width_b"))


def positions(sequence: dict) -> list[tuple[str, dict]]:
    if sequence["type"] == "fixed":
        return [("", sequence["block"])] * sequence["num_blocks"]
    pattern = sequence["pattern"]
    return [(pattern[i % len(pattern)], sequence["blocks"][pattern[i % len(pattern)]])
            for i in range(sequence["num_blocks"])]


LAYOUT = (Rename("seq.num_blocks", "layers"), Layout("seq", "layout", {"A": BLOCK_A, "B": BLOCK_B}, positions))


def test_entries_convert_every_named_entry_both_ways() -> None:
    rules = (Entries("mixers", "mixers", (Rename("heads", "heads"),)),)
    hf = {"mixers": {"x": {"heads": 2}, "y": {"heads": 4}}}
    native = imp(rules, hf)
    assert native == {"mixers": {"x": {"heads": 2}, "y": {"heads": 4}}}
    assert exp(rules, native) == hf
    with pytest.raises(ConfigError, match="unknown key 'mixers.y.window'"):
        imp(rules, {"mixers": {"y": {"heads": 4, "window": 3}}})


def test_layout_imports_the_list_as_the_pattern_and_exports_it_per_layer() -> None:
    native = imp(LAYOUT, {"layers": 4, "layout": ["A", "B"], "width_a": 8, "width_b": 16})
    assert native == {"seq": {"num_blocks": 4, "type": "pattern", "pattern": ["A", "B"],
                              "blocks": {"A": {"kind": "a", "width": 8}, "B": {"kind": "b", "width": 16}}}}
    assert exp(LAYOUT, native)["layout"] == ["A", "B", "A", "B"]
    per_layer = imp(LAYOUT, {"layers": 4, "layout": ["A", "B", "A", "B"], "width_a": 8, "width_b": 16})
    assert per_layer["seq"]["pattern"] == ["A", "B", "A", "B"]  # as Fast-LLM's importers write it
    assert exp(LAYOUT, per_layer) == exp(LAYOUT, native)


def test_layout_of_one_entry_can_be_fixed_and_blocks_are_named_by_their_constants() -> None:
    assert imp(LAYOUT, {"layers": 2, "layout": ["B", "B"], "width_b": 16})["seq"]["pattern"] == ["B", "B"]
    single = (LAYOUT[0], replace(LAYOUT[1], single_is_fixed=True))
    assert imp(single, {"layers": 2, "layout": ["B"], "width_b": 16}) == {
        "seq": {"num_blocks": 2, "block": {"kind": "b", "width": 16}}}
    native = {"seq": {"num_blocks": 3, "type": "pattern", "pattern": ["x", "y"],
                      "blocks": {"x": {"kind": "b", "width": 16}, "y": {"kind": "a", "width": 8}}}}
    assert exp(LAYOUT, native) == {"layers": 3, "layout": ["B", "A", "B"], "width_a": 8, "width_b": 16}


def test_layout_refuses_unknown_names_and_unmatched_blocks() -> None:
    with pytest.raises(ConfigError, match=r"layout names \['C'\]"):
        imp(LAYOUT, {"layers": 1, "layout": ["C"]})
    native = {"seq": {"num_blocks": 1, "type": "fixed", "block": {"kind": "c", "width": 1}}}
    with pytest.raises(ConfigError, match="matches no layer kind"):
        exp(LAYOUT, native)


# Ignore


def test_ignore_hf_key_and_subtree() -> None:
    rules = (Ignore("kept in metadata", hf="max_position_embeddings"), Ignore("not the model", hf="quantization"))
    hf = {"max_position_embeddings": 4096, "quantization": {"bits": 4, "group": {"size": 128}}}
    assert imp(rules, hf) == {}
    assert exp(rules, {}) == {}


def test_ignore_native_subtree() -> None:
    rules = (Rename("hidden_size", "hidden_size"), Ignore("unused", native="embeddings.positions"))
    native = {"hidden_size": 8, "embeddings": {"positions": {"count": 2048, "enabled": None}}}
    assert exp(rules, native) == {"hidden_size": 8}
    assert imp(rules, {"hidden_size": 8}) == {"hidden_size": 8}


# Choice

THETA = Rename("theta", "rope_theta", default=10000.0)
ROTARY = Choice("rotary", "rope_parameters", key="rope_type", default="default", options={
    "default": ("default", (THETA,)),
    "llama3": ("llama3", (THETA, Rename("scale_factor", "factor"))),
})


def test_choice_import_by_discriminator() -> None:
    hf = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}
    assert imp((ROTARY,), hf) == {"rotary": {"type": "llama3", "theta": 5e5, "scale_factor": 8.0}}


def test_choice_import_default_when_absent() -> None:
    assert imp((ROTARY,), {}) == {"rotary": {"type": "default", "theta": 10000.0}}
    assert imp((ROTARY,), {"rope_parameters": {"rope_theta": 1e6}}) == {"rotary": {"type": "default", "theta": 1e6}}


def test_choice_import_unsupported_lists_supported() -> None:
    with pytest.raises(ConfigError, match=r"rope_parameters.rope_type = 'yarn' is not supported "
                                          r"\(supported: default, llama3\)"):
        imp((ROTARY,), {"rope_parameters": {"rope_type": "yarn"}})


def test_choice_without_default_requires_the_discriminator() -> None:
    rule = Choice("mlp", "", key="mlp_type", options={"mlp": ("dense", ()), "moe": ("sparse", ())})
    with pytest.raises(ConfigError, match=r"mlp_type = None is not supported \(supported: dense, sparse\)"):
        imp((rule,), {})


def test_choice_export() -> None:
    native = {"rotary": {"type": "llama3", "theta": 5e5, "scale_factor": 8.0}}
    assert exp((ROTARY,), native) == {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}


def test_choice_export_unsupported_type() -> None:
    with pytest.raises(ConfigError, match=r"rotary.type = 'yarn' cannot be exported as toy "
                                          r"\(supported: default, llama3\)"):
        exp((ROTARY,), {"rotary": {"type": "yarn", "theta": 1.0}})


def test_choice_native_and_hf_names_differ() -> None:
    rule = Choice("mlp", "", key="mlp_type", options={
        "mlp": ("dense", (Rename("intermediate_size", "ffn_size"),)),
        "moe": ("sparse", (Rename("intermediate_size", "expert_ffn_size"), Rename("experts", "num_experts"))),
    })
    hf = {"mlp_type": "sparse", "expert_ffn_size": 16, "num_experts": 4}
    native = imp((rule,), hf)
    assert native == {"mlp": {"type": "moe", "intermediate_size": 16, "experts": 4}}
    assert exp((rule,), native) == hf
    assert exp((rule,), {"mlp": {"type": "mlp", "intermediate_size": 8}}) == {"mlp_type": "dense", "ffn_size": 8}


def test_choice_null_section_uses_default() -> None:
    assert imp((ROTARY,), {"rope_parameters": None}) == {"rotary": {"type": "default", "theta": 10000.0}}


# Nested


def test_nested_both_directions() -> None:
    rules = (Nested("decoder.block", "text_config", (Rename("mixer.heads", "num_heads"),)),
             Nested("", "vision_config", (Rename("patch_size", "patch_size"),)))
    hf = {"text_config": {"num_heads": 4}, "vision_config": {"patch_size": 14}}
    native = imp(rules, hf)
    assert native == {"decoder": {"block": {"mixer": {"heads": 4}}}, "patch_size": 14}
    assert exp(rules, native) == hf


# Coverage


def test_unknown_hf_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'mystery' \(value 1\)"):
        imp((Rename("hidden_size", "hidden_size"),), {"hidden_size": 8, "mystery": 1})


def test_unknown_nested_hf_key() -> None:
    rules = (Nested("", "text_config", (Rename("hidden_size", "hidden_size"),)),)
    with pytest.raises(ConfigError, match=r"unknown key 'text_config.extra' \(value 2\)"):
        imp(rules, {"text_config": {"hidden_size": 8, "extra": 2}})


def test_metadata_keys_allowed_at_top_level_and_nested() -> None:
    rules = (Nested("", "text_config", (Rename("hidden_size", "hidden_size"),)),)
    hf = {"text_config": {"hidden_size": 8, "model_type": "toy_text", "torch_dtype": "bfloat16"},
          "model_type": "toy", "id2label": {"0": "A", "1": "B"}}
    assert imp(rules, hf) == {"hidden_size": 8}


def test_export_native_field_without_rule() -> None:
    rules = (Rename("hidden_size", "hidden_size"),)
    with pytest.raises(ConfigError, match=r"native field mixer.heads = 4 has no rule in toy"):
        exp(rules, {"hidden_size": 8, "mixer": {"heads": 4}})
    assert exp(rules, {"hidden_size": 8, "peft": {}}) == {"hidden_size": 8}  # an empty sub-config needs no rule


TWO_EPS = (Rename("block.eps", "rms_norm_eps"), Rename("head.eps", "rms_norm_eps"))


def test_two_rules_same_hf_key_equal_values() -> None:
    assert exp(TWO_EPS, {"block": {"eps": 1e-5}, "head": {"eps": 1e-5}}) == {"rms_norm_eps": 1e-5}
    assert imp(TWO_EPS, {"rms_norm_eps": 1e-5}) == {"block": {"eps": 1e-5}, "head": {"eps": 1e-5}}


def test_two_rules_same_hf_key_different_values() -> None:
    with pytest.raises(ConfigError, match=r"rms_norm_eps would be both 1e-05 and 1e-06 \(from head.eps\)"):
        exp(TWO_EPS, {"block": {"eps": 1e-5}, "head": {"eps": 1e-6}})


def test_all_import_problems_in_one_error() -> None:
    rules = (Rename("hidden_size", "hidden_size"), ACT, Constant(False, hf="scale_embeddings"), ROTARY)
    hf = {"hidden_act": "relu", "scale_embeddings": True, "rope_parameters": {"rope_type": "yarn"}, "mystery": 1}
    with pytest.raises(ConfigError) as err:
        imp(rules, hf)
    message = str(err.value)
    assert "(5 problems)" in message
    for text in ("missing key 'hidden_size'", "hidden_act = 'relu' is not supported", "scale_embeddings = True",
                 "rope_type = 'yarn' is not supported", "unknown key 'mystery'"):
        assert text in message


def test_all_export_problems_in_one_error() -> None:
    rules = (ACT, Constant(1.0, native="scale"), ROTARY) + TWO_EPS
    native = {"activation": "relu", "scale": 2.0, "rotary": {"type": "yarn"}, "block": {"eps": 1.0},
              "head": {"eps": 2.0}, "extra": 0}
    with pytest.raises(ConfigError) as err:
        exp(rules, native)
    message = str(err.value)
    assert "(5 problems)" in message
    for text in ("activation = 'relu' has no HF spelling", "scale = 2.0 cannot be represented",
                 "rotary.type = 'yarn' cannot be exported", "rms_norm_eps would be both", "native field extra = 0"):
        assert text in message


def test_not_a_rule_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="is not a config rule"):
        imp(("hidden_size",), {})
    with pytest.raises(SpecError, match="is not a config rule"):
        exp(("hidden_size",), {})


# override and rule_key


def test_rule_key() -> None:
    assert rule_key(Rename("mixer.heads", "n_heads")) == "mixer.heads"
    assert rule_key(Constant(1.0, native="scale")) == "scale"
    assert rule_key(Constant("toy", hf="model_type")) == "hf:model_type"
    assert rule_key(Computed("head_dim", len, reason="r")) == "hf:head_dim"
    assert rule_key(Ignore("r", hf="max_position_embeddings")) == "hf:max_position_embeddings"
    assert rule_key(Ignore("r", native="embeddings.positions")) == "embeddings.positions"
    assert rule_key(ROTARY) == "rotary"
    with pytest.raises(SpecError, match="names neither"):
        rule_key(Constant(1.0))


def test_override_replaces_by_key_and_appends() -> None:
    bias = Rename("mixer.add_linear_biases", "attention_bias", default=False)
    heads = Rename("mixer.heads", "n_heads")
    no_bias = Constant(False, native="mixer.add_linear_biases")
    window = Rename("mixer.window_size", "sliding_window", default=None)
    assert override((heads, bias), (no_bias, window)) == (heads, no_bias, window)
    assert override((heads, bias), ()) == (heads, bias)


def test_override_rejects_two_replacements_for_one_key() -> None:
    with pytest.raises(SpecError, match="same path"):
        override((), (Rename("a", "x"), Constant(1, native="a")))
