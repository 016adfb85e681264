"""What a plan reports: its JSON form (`plan --json`), caller notes kept beside layout notes, and the folding of
layer indices in messages."""

from __future__ import annotations

from weightport.core.plan import Ref, _brief, build, group
from weightport.core.weights import Tensor, walk
from test_runtime import plan


def test_as_dict_names_every_part_of_the_plan() -> None:
    the_plan = plan("from_hf", (Tensor("embed.weight", "model.embed.weight"),))
    assert the_plan.as_dict() == {
        "family": "toy",
        "direction": "from_hf",
        "notes": [],
        "steps": [{"op": "rename", "src": [{"name": "model.embed.weight", "shape": [10, 4], "dtype": "F32"}],
                   "dst": [{"name": "embed.weight", "shape": [10, 4], "dtype": "F32"}]}],
        "config": {},
    }


def test_build_keeps_the_callers_notes_and_config() -> None:
    bindings = walk((Tensor("embed.weight", "model.embed.weight"),), {})
    the_plan = build("fam", "to_hf", bindings, {"embed.weight": (2, 3)}, {"embed.weight": Ref("embed.weight",
                     (2, 3), "BF16")}, None, {"model_type": "x"}, notes=("a note from the caller",))
    assert the_plan.family == "fam" and the_plan.config == {"model_type": "x"}
    assert the_plan.notes == ("a note from the caller",)


def test_group_folds_runs_and_lists_other_indices() -> None:
    names = [f"m.layers.{i}.w" for i in (1, 2, 3)] + ["m.layers.5.v", "m.layers.0.u", "m.layers.2.u", "m.norm"]
    assert group(names) == ["m.layers.5.v", "m.layers.{0,2}.u", "m.layers.{1..3}.w", "m.norm"]
    assert group(["a", "b.7.c"]) == ["a", "b.7.c"]


def test_brief_shows_three_and_counts_the_rest() -> None:
    assert _brief(["a", "b", "c"]) == "a, b, c"
    assert _brief(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert _brief(["a", "b", "c"], limit=2) == "a, b and 1 more"
