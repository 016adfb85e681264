"""Tests of the two primitives for HF checkpoints as transformers writes them, on tiny hand-built rules: tied copies
(`Tensor(tied=)`: an HF tensor the native model keeps only once, checked equal and dropped) and alternative HF
layouts (`Alternatives`: the plan reads the one the source holds, exports write the first)."""

from __future__ import annotations

import numpy as np
import pytest

from weightport.core import runtime
from weightport.core.ops import Flatten, T
from weightport.core.plan import Ref, build, choose
from weightport.core.weights import Alternatives, Binding, Each, Renamed, Section, Tensor, walk
from weightport.errors import CoverageError, SpecError

TIED = (
    Section("", "model", (Tensor("embeddings.weight", "embed.weight"),)),
    Tensor("head.weight", "lm_head.weight", tied="embeddings.weight"),
)
EXPERTS = Alternatives("mlp", {
    "per_expert": ("moe", (Tensor("layer_1.weight", "experts.{expert}.w1.weight", experts="experts"),)),
    "stacked": ("mlp", (Tensor("layer_1.weight", "experts.w1", ops=(Flatten(0, ("experts", -1)),)),)),
})
LAYERS = (Each("decoder.{i}", "layers.{i}", (EXPERTS,), "layers",
               lambda layers: [({"i": i}, layer) for i, layer in enumerate(layers)]),)
CONFIG = {"layers": [{"mlp": {"experts": 2}}, {"mlp": {"experts": 2}}]}
INVENTORY = {f"decoder.{i}.mlp.layer_1.weight": (6, 4) for i in range(2)}
PER_EXPERT = {f"layers.{i}.moe.experts.{e}.w1.weight": (3, 4) for i in range(2) for e in range(2)}
STACKED = {f"layers.{i}.mlp.experts.w1": (2, 3, 4) for i in range(2)}


def refs(shapes: dict[str, tuple[int, ...]], dtype: str = "F32") -> dict[str, Ref]:
    return {name: Ref(name, shape, dtype) for name, shape in shapes.items()}


def coverage_error(call, *args) -> str:
    with pytest.raises(CoverageError) as err:
        call(*args)
    return str(err.value)


# Tied copies


def test_a_tied_rule_names_its_original_with_the_same_prefix() -> None:
    [_, head] = walk(TIED, {}, native="text", hf="language_model")
    assert head == Binding("text.head.weight", ("language_model.lm_head.weight",), (), 0, None,
                           tied="text.embeddings.weight")


def tied_plan(sources: dict[str, Ref], direction: str = "from_hf"):
    shape = (sources.get("model.embed.weight") or sources["embeddings.weight"]).shape
    return build("toy", direction, walk(TIED, {}), {"embeddings.weight": shape}, sources, None, {})


def test_a_tied_copy_becomes_a_check_step_first_and_a_note() -> None:
    plan = tied_plan(refs({"model.embed.weight": (8, 4), "lm_head.weight": (8, 4)}, "BF16"))
    check, rename = plan.steps
    assert (check.op, [r.name for r in check.src], check.dst) == (
        "check equal + drop", ["lm_head.weight", "model.embed.weight"], ())
    assert rename.dst == (Ref("embeddings.weight", (8, 4), "BF16"),)
    assert plan.as_dict()["steps"][0] == {"op": "check equal + drop", "dst": [], "src": [
        {"name": "lm_head.weight", "shape": [8, 4], "dtype": "BF16"},
        {"name": "model.embed.weight", "shape": [8, 4], "dtype": "BF16"}]}
    assert any("lm_head.weight is a tied copy of model.embed.weight" in note for note in plan.notes)


def test_without_the_copy_there_is_no_check_and_exports_write_no_copy() -> None:
    assert [s.op for s in tied_plan(refs({"model.embed.weight": (8, 4)})).steps] == ["rename"]
    exported = tied_plan(refs({"embeddings.weight": (8, 4)}), "to_hf")
    assert [r.name for s in exported.steps for r in s.dst] == ["model.embed.weight"]


@pytest.mark.parametrize("shape, dtype", [((8, 3), "F32"), ((8, 4), "BF16")])
def test_a_copy_of_another_shape_or_dtype_is_refused_from_headers(shape, dtype) -> None:
    sources = {"model.embed.weight": Ref("model.embed.weight", (8, 4), "F32"),
               "lm_head.weight": Ref("lm_head.weight", shape, dtype)}
    message = coverage_error(tied_plan, sources)
    assert "lm_head.weight" in message and "cannot be a tied copy of model.embed.weight" in message
    assert "claimed by no rule" not in message


def test_an_untied_model_reads_the_copy_as_its_own_tensor() -> None:
    plan = build("toy", "from_hf", walk(TIED, {}), {"embeddings.weight": (8, 4), "head.weight": (8, 4)},
                 refs({"model.embed.weight": (8, 4), "lm_head.weight": (8, 4)}), None, {})
    assert [(s.op, s.dst[0].name) for s in plan.steps] == [("rename", "embeddings.weight"), ("rename", "head.weight")]


def test_a_tied_copy_of_a_fused_tensor_is_a_spec_error() -> None:
    rules = (Tensor("kv.weight", ("k.weight", "v.weight")), Tensor("head.weight", "lm_head.weight", tied="kv.weight"))
    with pytest.raises(SpecError, match="one HF tensor"):
        build("toy", "from_hf", walk(rules, {}), {"kv.weight": (8, 4)},
              refs({"k.weight": (4, 4), "v.weight": (4, 4), "lm_head.weight": (8, 4)}), None, {})


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    embed = np.random.default_rng(seed).integers(0, 2**32, (64, 8), dtype=np.uint32)
    return {"model.embed.weight": embed, "lm_head.weight": embed.copy()}


def read(tensors: dict[str, np.ndarray]):  # noqa: ANN201 - a Source.read_range over raw arrays
    return lambda ref, offset, size: tensors[ref.name].reshape(-1).view(np.uint8)[offset : offset + size].copy()


@pytest.mark.parametrize("chunk", [runtime.CHUNK, 100])  # one read, or reads that end mid-row
def test_check_copy_passes_equal_bits_and_names_the_first_difference(monkeypatch, chunk) -> None:
    monkeypatch.setattr(runtime, "CHUNK", chunk)
    [check, _] = tied_plan(refs({"model.embed.weight": (64, 8), "lm_head.weight": (64, 8)})).steps
    tensors = arrays()
    runtime.check_copy(check, read(tensors))
    tensors["lm_head.weight"][37, 5] ^= 1  # one bit of one element
    message = coverage_error(runtime.check_copy, check, read(tensors))
    assert "lm_head.weight differs from model.embed.weight (first at element [37, 5])" in message
    assert "tie_word_embeddings" in message


def test_run_checks_and_writes_nothing_for_the_copy() -> None:
    plan = tied_plan(refs({"model.embed.weight": (64, 8), "lm_head.weight": (64, 8)}))
    tensors, written = arrays(), {}

    class Arrays:
        read_range = staticmethod(read(tensors))

        def move(self, src: Ref, src_offset: int, dst: Ref, dst_offset: int, size: int) -> None:
            written[dst.name] = tensors[src.name].reshape(-1).view(np.uint8)[src_offset : src_offset + size].copy()

    runtime.run(plan, Arrays(), Arrays(), workers=2)
    assert list(written) == ["embeddings.weight"]
    tensors["lm_head.weight"][0, 0] += 1
    assert "first at element [0, 0]" in coverage_error(runtime.run, plan, Arrays(), Arrays())


# Alternative HF layouts


def layout_plan(sources: dict[str, tuple[int, ...]], direction: str = "from_hf"):
    return build("toy", direction, walk(LAYERS, CONFIG), INVENTORY, refs(sources), None, {})


def test_alternatives_tag_each_option_with_its_site() -> None:
    bindings = walk(LAYERS, CONFIG)
    assert [(b.native, b.hf, b.alternative) for b in bindings[:2]] == [
        ("decoder.0.mlp.layer_1.weight", ("layers.0.moe.experts.0.w1.weight", "layers.0.moe.experts.1.w1.weight"),
         ("decoder.0.mlp", "per_expert")),
        ("decoder.0.mlp.layer_1.weight", ("layers.0.mlp.experts.w1",), ("decoder.0.mlp", "stacked")),
    ]
    assert bindings[1].ops == (Flatten(0, (2, -1)),)


def test_each_layout_is_read_and_exports_write_the_first() -> None:
    first = layout_plan(PER_EXPERT)
    assert [s.op for s in first.steps] == ["concat(dim=0)"] * 2 and not any("layout" in n for n in first.notes)
    second = layout_plan(STACKED)
    assert [s.op for s in second.steps] == ["flatten(0,2x-1)"] * 2
    assert "native decoder.{0..1}.mlp: read from HF layout 'stacked' (an export writes 'per_expert')" in second.notes
    exported = layout_plan(INVENTORY, "to_hf")
    assert sorted(r.name for s in exported.steps for r in s.dst) == sorted(PER_EXPERT)


def test_each_site_takes_its_own_layout() -> None:
    mixed = {k: v for k, v in PER_EXPERT.items() if k.startswith("layers.0")} | {"layers.1.mlp.experts.w1": (2, 3, 4)}
    assert [s.op for s in layout_plan(mixed).steps] == ["concat(dim=0)", "flatten(0,2x-1)"]


def test_no_complete_layout_names_what_each_lacks_and_keeps_the_closest() -> None:
    sources = {k: v for k, v in STACKED.items() if k != "layers.1.mlp.experts.w1"} | {
        "layers.1.moe.experts.0.w1.weight": (3, 4)}
    message = coverage_error(layout_plan, sources)
    assert ("no HF layout of native decoder.1.mlp is complete: 'per_expert' lacks layers.1.moe.experts.1.w1.weight; "
            "'stacked' lacks layers.1.mlp.experts.w1") in message
    assert "missing tensor: layers.1.moe.experts.1.w1.weight" in message  # per_expert holds more: kept
    assert "claimed by no rule" not in message


def test_choose_without_a_source_keeps_the_first_option_and_leaves_other_bindings() -> None:
    plain = Binding("x", ("y",), (), 0, None)
    kept, notes, problems = choose([plain, *walk(LAYERS, CONFIG)])
    assert kept[0] is plain and {b.alternative[1] for b in kept[1:]} == {"per_expert"}
    assert notes == problems == []


def test_alternatives_inside_alternatives_are_a_spec_error() -> None:
    nested = Alternatives("", {"a": ("", (EXPERTS,)), "b": ("x", (Tensor("mlp.layer_1.weight", "w"),))})
    with pytest.raises(SpecError, match="Alternatives inside Alternatives"):
        walk((nested,), CONFIG["layers"][0])


def test_an_option_may_transpose_and_stack() -> None:
    rules = (Alternatives("", {"a": ("", (Tensor("w", "w.{expert}", ops=(T(),), experts="n"),)),
                               "b": ("", (Tensor("w", "stacked", ops=(T(), Flatten(0, ("n", -1)))),))}),)
    plan = build("toy", "from_hf", walk(rules, {"n": 2}), {"w": (6, 4)}, refs({"stacked": (2, 4, 3)}), None, {})
    assert [s.op for s in plan.steps] == ["transpose + flatten(0,2x-1)"]


# A whole model's other naming: `Renamed` rules as an option at the top of the table


def test_renamed_replaces_prefixes_relative_to_its_section_first_match_whole_parts_only() -> None:
    rules = (Section("", "outer", (Renamed((
        Tensor("a", "language_model.model.x"), Tensor("b", "language_model.lm_head"), Tensor("c", "tower.y"),
        Tensor("d", "towers.y"), Tensor("e", "other.z")),
        {"language_model.model": "model.language_model", "language_model": "model.text", "tower": "model.tower"}),)),)
    assert [b.hf for b in walk(rules, {})] == [
        ("outer.model.language_model.x",), ("outer.model.text.lm_head",), ("outer.model.tower.y",),
        ("outer.towers.y",), ("outer.other.z",)]


SAVED = (
    Section("vision", "vision_tower", (Tensor("patch.weight", "patch_conv.weight"),)),
    Section("", "language_model", TIED),
)
NAMINGS = (Alternatives("", {"save_pretrained": ("", SAVED), "state_dict": ("", (Renamed(SAVED, {
    "language_model.model": "model.language_model", "language_model.lm_head": "lm_head",
    "vision_tower": "model.vision_tower"}),))}),)
CHECKPOINT = {"vision_tower.patch_conv.weight": (4, 3), "language_model.model.embed.weight": (8, 4),
              "language_model.lm_head.weight": (8, 4)}
MODULES = {"model.vision_tower.patch_conv.weight": (4, 3), "model.language_model.embed.weight": (8, 4),
           "lm_head.weight": (8, 4)}
NATIVE = {"vision.patch.weight": (4, 3), "embeddings.weight": (8, 4), "head.weight": (8, 4)}


def naming_plan(sources: dict, direction: str = "from_hf", tied: bool = False):
    inventory = {k: v for k, v in NATIVE.items() if not (tied and k == "head.weight")}
    return build("toy", direction, walk(NAMINGS, {"vision": {}}), inventory, refs(sources), None, {})


def test_either_naming_of_the_whole_model_is_read_and_exports_write_the_first() -> None:
    assert not any("layout" in n for n in naming_plan(CHECKPOINT).notes)
    plan = naming_plan(MODULES)
    assert "the whole model: read from HF layout 'state_dict' (an export writes 'save_pretrained')" in plan.notes
    assert [(s.src[0].name, s.dst[0].name) for s in plan.steps] == [
        ("model.vision_tower.patch_conv.weight", "vision.patch.weight"),
        ("model.language_model.embed.weight", "embeddings.weight"), ("lm_head.weight", "head.weight")]
    assert sorted(r.name for s in naming_plan(NATIVE, "to_hf").steps for r in s.dst) == sorted(CHECKPOINT)


def test_a_tied_copy_pairs_with_its_original_in_its_own_naming() -> None:
    plan = naming_plan(MODULES, tied=True)
    assert [r.name for r in plan.steps[0].src] == ["lm_head.weight", "model.language_model.embed.weight"]
    saved = naming_plan(CHECKPOINT, tied=True)
    assert [r.name for r in saved.steps[0].src] == ["language_model.lm_head.weight",
                                                    "language_model.model.embed.weight"]
    crossed = {k: v for k, v in MODULES.items() if k != "lm_head.weight"} | {"language_model.lm_head.weight": (8, 4)}
    message = coverage_error(naming_plan, crossed, "from_hf", True)
    assert "tensor claimed by no rule: language_model.lm_head.weight" in message


def test_mixed_namings_are_refused_naming_what_each_lacks() -> None:
    mixed = {k: v for k, v in CHECKPOINT.items() if k != "language_model.lm_head.weight"} | {"lm_head.weight": (8, 4)}
    message = coverage_error(naming_plan, mixed)
    assert ("no HF layout of the whole model is complete: 'save_pretrained' lacks language_model.lm_head.weight; "
            "'state_dict' lacks model.language_model.embed.weight, model.vision_tower.patch_conv.weight") in message
    assert "missing tensor: language_model.lm_head.weight" in message
    assert "tensor claimed by no rule: lm_head.weight" in message


def test_a_binding_every_option_has_alike_belongs_to_none() -> None:
    rules = (Alternatives("", {"a": ("", (Tensor("x", "model.x"), Tensor("y", "a.y"))),
                               "b": ("", (Renamed((Tensor("x", "model.x"), Tensor("y", "a.y")), {"a": "b"}),))}),)
    assert [(b.hf, b.alternative) for b in walk(rules, {})] == [
        (("model.x",), None), (("a.y",), ("", "a")), (("b.y",), ("", "b"))]
    clash = (Alternatives("", {"a": ("", (Tensor("x", "model.x"),)), "b": ("", (Tensor("y", "model.x"),))}),)
    with pytest.raises(SpecError, match="HF tensor model.x is bound differently in 'a' and 'b'"):
        walk(clash, {})
