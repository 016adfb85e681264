"""`Carry`, on tiny hand-built rules: HF tensors under a carried prefix that no other rule reads go along unchanged,
kept natively under the names an export writes (the first naming of an `Alternatives`), and come back on export."""

from __future__ import annotations

import pytest

from weightport.core.plan import Ref, build
from weightport.core.weights import Alternatives, Carry, Renamed, Section, Tensor, carried_parts, walk
from weightport.errors import CoverageError

SAVED = (Section("", "language_model", (Tensor("embeddings.weight", "embed.weight"),)), Carry("vision_tower"))
RULES = (Alternatives("", {"saved": ("", SAVED), "modules": ("", (Renamed(SAVED, {
    "language_model": "model.language_model", "vision_tower": "model.vision_tower"}),))}),)
INVENTORY = {"embeddings.weight": (4, 2)}
TOWER = {"vision_tower.conv.weight": Ref("vision_tower.conv.weight", (3, 3), "BF16"),
         "vision_tower.norm.bias": Ref("vision_tower.norm.bias", (3,), "F32")}


def plan(direction: str, sources: dict, carried: dict | None = None):
    return build("toy", direction, walk(RULES, {}), INVENTORY, sources, None, {}, carried=carried)


@pytest.mark.parametrize("prefix", ["", "model."])
def test_carried_tensors_are_kept_under_the_exported_names_and_come_back(prefix):
    text = {"language_model.embed.weight" if not prefix else "model.language_model.embed.weight":
            Ref("x", (4, 2), "F32")}
    sources = {**{k: Ref(k, r.shape, r.dtype) for k, r in text.items()},
               **{prefix + k: Ref(prefix + k, r.shape, r.dtype) for k, r in TOWER.items()}}
    steps = plan("from_hf", sources).steps
    kept = {s.dst[0].name: (s.src[0].name, s.dst[0].dtype) for s in steps if s.op == "carry"}
    assert kept == {k: (prefix + k, r.dtype) for k, r in TOWER.items()}  # unchanged, named as an export writes
    back = plan("to_hf", {"embeddings.weight": Ref("embeddings.weight", (4, 2), "F32")}, TOWER).steps
    assert {s.dst[0].name for s in back if s.op == "carry"} == set(TOWER)


def test_an_empty_carried_part_is_fine_and_a_tensor_outside_every_part_is_refused():
    assert not [s for s in plan("from_hf", {"language_model.embed.weight": Ref("e", (4, 2), "F32")}).steps
                if s.op == "carry"]
    with pytest.raises(CoverageError, match="claimed by no rule: audio_tower.w"):
        plan("from_hf", {"language_model.embed.weight": Ref("e", (4, 2), "F32"),
                         "audio_tower.w": Ref("audio_tower.w", (1,), "F32")})
    with pytest.raises(CoverageError, match="carried tensor audio_tower.w lies in no part"):
        plan("to_hf", {"embeddings.weight": Ref("embeddings.weight", (4, 2), "F32")},
             {"audio_tower.w": Ref("audio_tower.w", (1,), "F32")})


def test_a_checkpoint_mixing_two_namings_is_refused():
    """A carried part named as the other layout names it, beside a text model in one layout: both layouts named."""
    with pytest.raises(CoverageError, match=r"1 tensor\(s\) of carried parts named as in HF layout 'modules' of the "
                                            r"whole model, the other tensors as in layout 'saved': name them all one "
                                            r"way \(model.vision_tower.x\)"):
        plan("from_hf", {"language_model.embed.weight": Ref("e", (4, 2), "F32"),
                         "model.vision_tower.x": Ref("model.vision_tower.x", (1,), "F32")})
    with pytest.raises(CoverageError, match=r"2 tensor\(s\) of carried parts named as in HF layout 'saved' .* "
                                            r"layout 'modules'"):
        plan("from_hf", {"model.language_model.embed.weight": Ref("e", (4, 2), "F32"), **TOWER})
    with pytest.raises(CoverageError, match="claimed by no rule: model.audio_tower.x"):  # in no layout's parts
        plan("from_hf", {"language_model.embed.weight": Ref("e", (4, 2), "F32"),
                         "model.audio_tower.x": Ref("model.audio_tower.x", (1,), "F32")})


def test_carried_parts_lists_the_exported_prefixes():
    assert carried_parts(RULES) == ["vision_tower"]
