"""Tests of plans (coverage checks, grouping), on a tiny hand-built model (the runtime: test_runtime.py)."""

from __future__ import annotations

import pytest

from weightport.core.ops import T
from weightport.core.plan import Ref, build, group
from weightport.core.weights import Each, Fuse, Tensor, walk
from weightport.errors import CoverageError

LAYER = (
    Fuse("key_value.weight", "k_proj.weight", "v_proj.weight"),
    Fuse("query.weight", "q_a.weight", "q_b.weight", sizes=("q_a", "q_b")),
    Tensor("layer_2.weight", "down_proj.weight", ops=(T(),)),
)
RULES = (
    Tensor("embeddings.weight", "model.embed.weight"),
    Each("decoder.{i}", "model.layers.{i}", LAYER, "layers", lambda ls: [({"i": i}, x) for i, x in enumerate(ls)]),
    Tensor("head.weight", "lm_head.weight"),
)
CONFIG = {"layers": [{"q_a": 4, "q_b": 2}, {"q_a": 4, "q_b": 2}]}
BINDINGS = walk(RULES, CONFIG)


def inventory() -> dict[str, tuple[int, ...]]:
    out = {"embeddings.weight": (10, 4), "head.weight": (10, 4)}
    for i in range(2):
        out |= {f"decoder.{i}.key_value.weight": (4, 4), f"decoder.{i}.query.weight": (6, 4),
                f"decoder.{i}.layer_2.weight": (8, 4)}
    return out


def hf_shapes() -> dict[str, tuple[int, ...]]:
    out = {"model.embed.weight": (10, 4), "lm_head.weight": (10, 4)}
    for i in range(2):
        p = f"model.layers.{i}"
        out |= {f"{p}.k_proj.weight": (2, 4), f"{p}.v_proj.weight": (2, 4), f"{p}.q_a.weight": (4, 4),
                f"{p}.q_b.weight": (2, 4), f"{p}.down_proj.weight": (4, 8)}
    return out


def refs(shapes: dict[str, tuple[int, ...]], dtype: str = "F32") -> dict[str, Ref]:
    return {name: Ref(name, shape, dtype) for name, shape in shapes.items()}


def from_hf(sources: dict[str, Ref], inv: dict | None = None, bindings: list | None = None, dtype: str | None = None):
    return build("toy", "from_hf", BINDINGS if bindings is None else bindings, inventory() if inv is None else inv,
                 sources, dtype, {})


def to_hf(sources: dict[str, Ref], inv: dict | None = None):
    return build("toy", "to_hf", BINDINGS, inventory() if inv is None else inv, sources, None, {})


def coverage_error(call, *args, **kwargs) -> str:
    with pytest.raises(CoverageError) as err:
        call(*args, **kwargs)
    return str(err.value)


# Correct plans


def test_from_hf_plan() -> None:
    plan = from_hf(refs(hf_shapes()))
    assert plan.direction == "from_hf" and len(plan.steps) == 8
    by_native = {step.dst[0].name: step for step in plan.steps}
    assert set(by_native) == set(inventory())
    kv = by_native["decoder.1.key_value.weight"]
    assert [r.name for r in kv.src] == ["model.layers.1.k_proj.weight", "model.layers.1.v_proj.weight"]
    assert kv.dst == (Ref("decoder.1.key_value.weight", (4, 4), "F32"),)
    assert kv.op == "concat(dim=0)"
    assert by_native["decoder.0.layer_2.weight"].op == "transpose"
    assert by_native["embeddings.weight"].op == "rename"


def test_from_hf_plan_with_output_dtype() -> None:
    plan = from_hf(refs(hf_shapes(), "F32"), dtype="BF16")
    assert {step.dst[0].dtype for step in plan.steps} == {"BF16"}
    assert {step.op for step in plan.steps} >= {"cast(BF16)", "transpose + cast(BF16)", "concat(dim=0) + cast(BF16)"}


def test_to_hf_plan() -> None:
    plan = to_hf(refs(inventory(), "BF16"))
    assert plan.direction == "to_hf"
    produced = {ref.name: ref for step in plan.steps for ref in step.dst}
    assert produced == refs(hf_shapes(), "BF16")
    query = next(step for step in plan.steps if step.src[0].name == "decoder.0.query.weight")
    assert [(r.name, r.shape) for r in query.dst] == [("model.layers.0.q_a.weight", (4, 4)),
                                                      ("model.layers.0.q_b.weight", (2, 4))]
    assert query.op == "split(dim=0)"


def test_binding_of_a_tensor_absent_from_the_inventory_is_skipped() -> None:
    # Tied embeddings: no `head.weight` natively, no `lm_head.weight` in the HF files.
    inv = {k: v for k, v in inventory().items() if k != "head.weight"}
    hf = {k: v for k, v in hf_shapes().items() if k != "lm_head.weight"}
    assert len(from_hf(refs(hf), inv).steps) == 7
    assert len(to_hf(refs(inv), inv).steps) == 7


# Coverage problems, from_hf


def test_missing_source_tensor() -> None:
    sources = refs(hf_shapes())
    del sources["model.layers.1.v_proj.weight"]
    message = coverage_error(from_hf, sources)
    assert "(1 problem)" in message
    assert "missing tensor: model.layers.1.v_proj.weight" in message


def test_missing_tensors_are_grouped_by_layer() -> None:
    sources = {k: v for k, v in refs(hf_shapes()).items() if "down_proj" not in k}
    assert "missing tensor: model.layers.{0..1}.down_proj.weight" in coverage_error(from_hf, sources)


def test_extra_source_tensor() -> None:
    sources = refs(hf_shapes() | {"model.layers.0.rotary_emb.inv_freq": (2,)})
    assert "tensor claimed by no rule: model.layers.0.rotary_emb.inv_freq" in coverage_error(from_hf, sources)


def test_wrong_shape() -> None:
    sources = refs(hf_shapes() | {"model.layers.0.down_proj.weight": (8, 4)})
    message = coverage_error(from_hf, sources)
    assert "wrong shape: model.layers.0.down_proj.weight: file has [8, 4], config implies [4, 8]" in message


def test_hf_name_claimed_twice() -> None:
    bindings = walk((RULES[0], RULES[1], Tensor("head.weight", "model.embed.weight")), CONFIG)
    sources = {k: v for k, v in refs(hf_shapes()).items() if k != "lm_head.weight"}
    message = coverage_error(from_hf, sources, bindings=bindings)
    assert "tensor claimed twice: model.embed.weight (by embeddings.weight and head.weight)" in message


def test_native_tensor_with_no_rule() -> None:
    inv = inventory() | {"decoder.0.output_scale": (1,)}
    message = coverage_error(from_hf, refs(hf_shapes()), inv)
    assert "native tensor decoder.0.output_scale [1] has no rule in toy" in message


def test_native_tensor_with_two_rules() -> None:
    bindings = walk(RULES + (Tensor("head.weight", "output.weight"),), CONFIG)
    sources = refs(hf_shapes() | {"output.weight": (10, 4)})
    assert "native tensor head.weight is produced by 2 rules" in coverage_error(from_hf, sources, bindings=bindings)


def test_fused_size_does_not_divide() -> None:
    inv = inventory() | {"decoder.0.key_value.weight": (5, 4)}
    message = coverage_error(from_hf, refs(hf_shapes()), inv)
    assert "decoder.0.key_value.weight [5, 4] cannot be split into 2 parts of equal size" in message


def test_fused_sizes_do_not_add_up() -> None:
    inv = inventory() | {"decoder.1.query.weight": (7, 4)}
    message = coverage_error(from_hf, refs(hf_shapes()), inv)
    assert "decoder.1.query.weight [7, 4] cannot be split into 2 parts of (4, 2)" in message


def test_fused_parts_of_different_dtypes() -> None:
    sources = refs(hf_shapes()) | {"model.layers.0.v_proj.weight": Ref("model.layers.0.v_proj.weight", (2, 4), "BF16")}
    message = coverage_error(from_hf, sources)
    assert "decoder.0.key_value.weight is made of HF tensors of different dtypes ['BF16', 'F32']" in message


def test_several_problems_reported_together() -> None:
    shapes = hf_shapes() | {"model.layers.0.down_proj.weight": (8, 4), "model.extra.weight": (3,)}
    del shapes["model.layers.1.k_proj.weight"]
    message = coverage_error(from_hf, refs(shapes), inventory() | {"decoder.0.output_scale": (1,)})
    assert message.startswith("toy from_hf: the HF tensors do not match the config (4 problems):")
    for text in ("missing tensor: model.layers.1.k_proj.weight", "tensor claimed by no rule: model.extra.weight",
                 "wrong shape: model.layers.0.down_proj.weight", "native tensor decoder.0.output_scale"):
        assert text in message


# Coverage problems, to_hf


def test_to_hf_problems() -> None:
    sources = refs(inventory() | {"decoder.0.query.weight": (4, 4), "decoder.9.extra": (3,)})
    del sources["head.weight"]
    message = coverage_error(to_hf, sources)
    assert "toy to_hf: the native tensors do not match the config (3 problems)" in message
    assert "missing tensor: head.weight" in message
    assert "tensor claimed by no rule: decoder.9.extra" in message
    assert "wrong shape: decoder.0.query.weight: file has [4, 4], config implies [6, 4]" in message


# group


def test_group_folds_layer_indices() -> None:
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in (3, 1, 0, 2)] + ["model.norm.weight"]
    assert group(names) == ["model.layers.{0..3}.mlp.up_proj.weight", "model.norm.weight"]


def test_group_lists_non_contiguous_indices_and_keeps_lone_names() -> None:
    assert group(["model.layers.0.x", "model.layers.2.x", "model.layers.5.y"]) == [
        "model.layers.5.y", "model.layers.{0,2}.x"]

