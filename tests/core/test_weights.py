"""Tests of the weight-rule walker on tiny hand-built rule tables and configs."""

from __future__ import annotations

import pytest

from weightport.core.ops import Flatten, T
from weightport.core.weights import Binding, Each, Fuse, Linear, Section, Switch, Tensor, walk
from weightport.errors import ConfigError, SpecError
from weightport.spec import Blocks


def names(bindings: list[Binding]) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.native, b.hf) for b in bindings]


def test_tensor_with_str_and_tuple_hf() -> None:
    rules = (Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
             Tensor("mixer.key_value.weight", ("k_proj.weight", "v_proj.weight"), ops=(T(),), dim=1))
    assert walk(rules, {}) == [
        Binding("embeddings.word_embeddings_weight", ("model.embed_tokens.weight",), (), 0, None),
        Binding("mixer.key_value.weight", ("k_proj.weight", "v_proj.weight"), (T(),), 1, None),
    ]


def test_fuse_with_sizes_from_config_paths() -> None:
    config = {"q_rows": 8, "kv": {"rows": 2}}
    [binding] = walk((Fuse("qkv.weight", "q.weight", "k.weight", "v.weight", sizes=("q_rows", "kv.rows", 2)),), config)
    assert binding == Binding("qkv.weight", ("q.weight", "k.weight", "v.weight"), (), 0, (8, 2, 2))


def test_missing_config_path_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"qkv.weight: config path 'kv_rows' does not exist"):
        walk((Fuse("qkv.weight", "q", "k", sizes=("q_rows", "kv_rows")),), {"q_rows": 8})


def test_linear_weight_and_bias() -> None:
    assert walk((Linear("layer_1", "gate_proj", "up_proj"), Linear("layer_2", "down_proj", ops=(T(),))), {}) == [
        Binding("layer_1.weight", ("gate_proj.weight", "up_proj.weight"), (), 0, None),
        Binding("layer_1.bias", ("gate_proj.bias", "up_proj.bias"), (), 0, None),
        Binding("layer_2.weight", ("down_proj.weight",), (T(),), 0, None),
        Binding("layer_2.bias", ("down_proj.bias",), (), 0, None),  # ops apply to the weight only
    ]


def test_section_prefixes_and_sub_config() -> None:
    rules = (Section("mixer", "self_attn", (
        Tensor("patch.weight", "patch.weight", ops=(Flatten(1, ("channels", "size", "size")),)),
    )),)
    [binding] = walk(rules, {"mixer": {"channels": 3, "size": 2}}, native="decoder.0", hf="model.layers.0")
    assert binding.native == "decoder.0.mixer.patch.weight"
    assert binding.hf == ("model.layers.0.self_attn.patch.weight",)
    assert binding.ops == (Flatten(1, (3, 2, 2)),)


def test_section_with_explicit_config_path() -> None:
    rules = (Section("norm", "ln", (Tensor("w", "weight", sizes=("size",)),), config="head.normalization"),)
    [binding] = walk(rules, {"head": {"normalization": {"size": 4}}})
    assert (binding.native, binding.hf, binding.sizes) == ("norm.w", ("ln.weight",), (4,))


def test_section_skipped_when_sub_config_is_none_or_absent() -> None:
    rules = (Section("pre_norm", "pre_ln", (Tensor("weight", "weight"),)), Tensor("x", "y"))
    assert names(walk(rules, {"pre_norm": None})) == [("x", ("y",))]
    assert names(walk(rules, {})) == [("x", ("y",))]
    assert names(walk(rules, {"pre_norm": {"type": "rms_norm"}})) == [("pre_norm.weight", ("pre_ln.weight",)),
                                                                     ("x", ("y",))]


def test_each_with_index_arithmetic() -> None:
    rules = (Each("heads.{i}", "model.mtp.{j}", (Tensor("norm.weight", "norm.weight", sizes=("size",)),), "heads",
                  lambda heads: [({"i": i, "j": i + 1}, head) for i, head in enumerate(heads)]),)
    bindings = walk(rules, {"heads": [{"size": 4}, {"size": 6}]})
    assert [(b.native, b.hf, b.sizes) for b in bindings] == [
        ("heads.0.norm.weight", ("model.mtp.1.norm.weight",), (4,)),
        ("heads.1.norm.weight", ("model.mtp.2.norm.weight",), (6,)),
    ]


def test_blocks_over_a_pattern_sequence() -> None:
    sequence = {"type": "pattern", "num_blocks": 3, "pattern": ["a", "b"],
                "blocks": {"a": {"mixer": {"type": "attention"}}, "b": {"mixer": {"type": "mamba"}}}}
    switch = Switch("mixer", "mixer", {"attention": ("self_attn", (Tensor("w", "q.weight"),)),
                                       "mamba": ("ssm", (Tensor("w", "in.weight"),))})
    assert names(walk((Blocks("decoder", "model.layers", (switch,)),), {"decoder": sequence})) == [
        ("decoder.0.mixer.w", ("model.layers.0.self_attn.q.weight",)),
        ("decoder.1.mixer.w", ("model.layers.1.ssm.in.weight",)),
        ("decoder.2.mixer.w", ("model.layers.2.self_attn.q.weight",)),
    ]


NORM = Switch("norm", "normalization", {
    "layer_norm": ("ln", (Tensor("weight", "weight"), Tensor("bias", "bias"))),
    "rms_norm": ("rms", (Tensor("weight", "scale"),)),
})


def test_switch_by_type() -> None:
    assert names(walk((NORM,), {"normalization": {"type": "layer_norm"}}, "head", "model")) == [
        ("head.norm.weight", ("model.ln.weight",)), ("head.norm.bias", ("model.ln.bias",))]
    assert names(walk((NORM,), {"normalization": {"type": "rms_norm"}}, "head", "model")) == [
        ("head.norm.weight", ("model.rms.scale",))]


def test_switch_unsupported_type() -> None:
    with pytest.raises(ConfigError, match=r"head.normalization has type 'gated_rms_norm', which this format cannot "
                                          r"hold \(supported: layer_norm, rms_norm\)"):
        walk((NORM,), {"normalization": {"type": "gated_rms_norm"}}, "head")


def test_experts_expand_expert_major() -> None:
    hf = ("experts.{expert}.w1.weight", "experts.{expert}.w3.weight")
    rule = Tensor("layer_1.weight", hf, experts="moe.experts")
    [binding] = walk((rule,), {"moe": {"experts": 2}}, hf="mlp")
    assert binding.hf == ("mlp.experts.0.w1.weight", "mlp.experts.0.w3.weight",
                          "mlp.experts.1.w1.weight", "mlp.experts.1.w3.weight")


def test_linear_with_experts() -> None:
    weight, bias = walk((Linear("layer_2", "experts.{expert}.w2", ops=(T(),), experts="experts"),), {"experts": 3})
    assert weight.hf == tuple(f"experts.{e}.w2.weight" for e in range(3)) and weight.ops == (T(),)
    assert bias.hf == tuple(f"experts.{e}.w2.bias" for e in range(3)) and bias.ops == ()


def test_nested_tuples_are_flattened() -> None:
    assert names(walk(((Tensor("a", "x"), (Tensor("b", "y"),)), Tensor("c", "z")), {})) == [
        ("a", ("x",)), ("b", ("y",)), ("c", ("z",))]


def test_not_a_rule_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="is not a weight rule"):
        walk(("a.weight",), {})
