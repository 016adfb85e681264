"""weightport's native schema (`weightport.native.schema.KINDS`) against Fast-LLM's own config classes, read from the
real Fast-LLM: the same kinds, `type` names, default types, fields and defaults, so the two cannot drift apart."""

from __future__ import annotations

import json

import pytest

from oracle import HERE, needs_fastllm, python
from weightport.native import schema

pytestmark = needs_fastllm


@pytest.fixture(scope="module")
def fast_llm(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("schema") / "fast_llm_schema.json"
    python(HERE / "fast_llm_schema.py", out)
    return json.loads(out.read_text())


class Comparison:
    """Walks weightport's kinds and Fast-LLM's classes side by side from the model roots, collecting differences."""

    def __init__(self, fast_llm: dict):
        self.classes, self.problems, self.seen = fast_llm["classes"], [], set()

    def kind(self, kind: str, cls: str, only: tuple[str, ...], where: str) -> None:
        if (kind, cls, only) in self.seen:
            return
        self.seen.add((kind, cls, only))
        ours, theirs = schema.KINDS[kind], self.classes[cls]
        if not ours.typed:
            if theirs["types"]:
                self.problems.append(f"{where}: Fast-LLM's {cls} has types {sorted(theirs['types'])}; ours has none")
            self.fields(ours.types[ours.default_type], theirs, where)
            return
        names = set(only or ours.types)
        if only and not names <= set(theirs["types"]) or not only and names != set(theirs["types"]):
            self.problems.append(f"{where}: types {sorted(names)} != Fast-LLM's {sorted(theirs['types'])}")
        default = self.classes[theirs["default"]]["type_name"] if theirs["default"] else None
        if default != (only[0] if only else ours.default_type):
            self.problems.append(f"{where}: default type {only[:1] or ours.default_type!r} != Fast-LLM's {default!r}")
        for name in sorted(names & set(theirs["types"])):
            self.fields(ours.types[name], self.classes[theirs["types"][name]], f"{where}[{name}]")

    def fields(self, ours: dict, theirs: dict, where: str) -> None:
        fields = theirs["fields"]
        for name in sorted(set(fields) - set(ours)):
            self.problems.append(f"{where}.{name}: a Fast-LLM field that weightport does not know")
        for name in sorted(set(ours) - set(fields)):
            self.problems.append(f"{where}.{name}: not a field of Fast-LLM's class")
        for name in sorted(set(ours) & set(fields)):
            self.field(ours[name], fields[name], f"{where}.{name}")

    def field(self, ours, theirs: dict, where: str) -> None:
        default = theirs["default"].get("value", "<no default>")
        if isinstance(ours, schema.Inert):
            if theirs["hint"] == "architecture":
                self.problems.append(f"{where}: inert here, but an architecture field in Fast-LLM")
            return
        if not theirs["configs"]:
            if not isinstance(ours, schema.Value):
                self.problems.append(f"{where}: a plain value in Fast-LLM, a {type(ours).__name__} here")
            elif ours.default != default or type(ours.default) is bool is not type(default):
                self.problems.append(f"{where}: default {ours.default!r} != Fast-LLM's {default!r}")
            return
        (container, cls), *_ = theirs["configs"]
        if isinstance(ours, schema.Sub) and container == "config":
            if ours.optional != (default is None):
                self.problems.append(f"{where}: optional={ours.optional}, but Fast-LLM's default is {default!r}")
            self.kind(ours.kind, cls, ours.only, where)
        elif isinstance(ours, schema.Named) and container == "dict":
            self.kind(ours.kind, cls, (), f"{where}.*")
        else:
            self.problems.append(f"{where}: a {container} of {cls} in Fast-LLM, a {type(ours).__name__} here")


def test_native_schema_is_fast_llms(fast_llm):
    comparison = Comparison(fast_llm)
    for model, cls in fast_llm["roots"].items():
        comparison.kind(model, cls, (), model)
    assert comparison.problems == []
    assert {kind for kind, _, _ in comparison.seen} == set(schema.KINDS), "kinds Fast-LLM does not reach"


def test_the_comparison_sees_a_difference(fast_llm, monkeypatch):
    """The walk above is not vacuous: a field added, a default changed or a type dropped is reported."""
    embeddings = schema.KINDS["embeddings"].types["embeddings"]
    monkeypatch.setitem(embeddings, "scale", schema.Value(1.0))
    monkeypatch.setitem(embeddings, "vocab_size", schema.Value(32000))
    monkeypatch.delitem(schema.KINDS["rotary"].types, "yarn")
    comparison = Comparison(fast_llm)
    comparison.kind("gpt", fast_llm["roots"]["gpt"], (), "gpt")
    assert any("embeddings.scale: not a field" in p for p in comparison.problems)
    assert any("embeddings.vocab_size: default 32000 != Fast-LLM's 49152" in p for p in comparison.problems)
    assert any("rotary: types" in p for p in comparison.problems)
