"""Dotted paths into nested dicts (`weightport.core.paths`): the message form, removal, and leaves with lists."""

from __future__ import annotations

from weightport.core.paths import MISSING, dotted, get, leaves, put, remove, split


def test_dotted_quotes_only_keys_that_hold_a_dot():
    assert dotted(("decoder", "block", "heads")) == "decoder.block.heads"
    assert dotted(("transformers.js_config", "x")) == '"transformers.js_config".x'
    assert dotted(()) == "<root>"
    assert split("") == () and split("a.b") == ("a", "b")


def test_get_put_and_missing():
    tree: dict = {}
    put(tree, ("a", "b", "c"), 1)
    assert tree == {"a": {"b": {"c": 1}}}
    assert get(tree, ("a", "b", "c")) == 1
    assert get(tree, ("a", "x")) is MISSING
    assert get(tree, ("a", "b", "c", "d"), None) is None


def test_remove_prunes_dicts_left_empty_and_keeps_the_rest():
    tree = {"a": {"b": {"c": 1}}, "d": {"e": 2, "f": 3}}
    remove(tree, ("a", "b", "c"))
    assert tree == {"d": {"e": 2, "f": 3}}
    remove(tree, ("d", "e"))
    assert tree == {"d": {"f": 3}}
    remove(tree, ("d", "absent"))
    remove(tree, ("absent", "x"))
    assert tree == {"d": {"f": 3}}
    remove(tree, ("d", "f"))
    assert tree == {}
    deep = {"a": {"b": {"c": 1}, "x": 2}}
    remove(deep, ("a", "b", "c"))  # prunes b only: a still holds x
    assert deep == {"a": {"x": 2}}
    top = {"k": 1}
    remove(top, ("k",))
    assert top == {}


def test_leaves_index_list_items_at_every_depth_only_when_asked():
    tree = {"blocks": [{"heads": 4, "sizes": [1, 2]}, {"heads": 8, "sizes": []}], "empty": {}, "none": None}
    assert leaves(tree) == {
        ("blocks",): tree["blocks"],
        ("empty",): {},
        ("none",): None,
    }
    assert leaves(tree, lists=True) == {
        ("blocks", "0", "heads"): 4,
        ("blocks", "0", "sizes", "0"): 1,
        ("blocks", "0", "sizes", "1"): 2,
        ("blocks", "1", "heads"): 8,
        ("blocks", "1", "sizes"): [],
        ("empty",): {},
        ("none",): None,
    }
    assert leaves([5, 6], lists=True) == {("0",): 5, ("1",): 6}
    assert leaves(3, prefix=("x",)) == {("x",): 3}
