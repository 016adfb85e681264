"""Static checks over every registered family: the fixture config.json converts both ways unchanged, every
native architecture field is claimed by a rule, and what a family cannot hold is refused with its path."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

import weightport

from helpers import assert_same_config, assert_same_tensors, hf_config, native_meta, tensors
from weightport import api, families, synth
from weightport.core.config_rules import Choice, Ignore, Nested
from weightport.core.spec import rule_key
from weightport.errors import ConfigError
from weightport.native.schema import canonical

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
ROPE = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "attention_factor": 1.1,
             "beta_fast": 32.0, "beta_slow": 1.0, "original_max_position_embeddings": 64},
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def all_rules(rules: tuple):
    for rule in rules:
        yield rule
        if isinstance(rule, Nested):
            yield from all_rules(rule.rules)
        elif isinstance(rule, Choice):
            for _, sub in rule.options.values():
                yield from all_rules(sub)


@pytest.mark.parametrize("name", families.FAMILIES)
def test_family_declaration_is_well_formed(name):
    spec = families.load(name)
    keys = [rule_key(r) for r in spec.config]
    assert len(keys) == len(set(keys)), "two rules claim the same path"
    assert all(r.reason.strip() for r in all_rules(spec.config) if isinstance(r, Ignore))
    assert families.detect(fixture(name)) == name


def rotary_families() -> list:
    """Every family: those whose config.json holds the rotary settings at its top level (where the test below puts
    each kind) run, the others are skipped saying so."""
    def top_level(name: str) -> bool:
        return "rope_theta" in fixture(name) or "rope_type" in fixture(name).get("rope_parameters", {})

    why = ("its config.json has no top-level rotary settings to replace (they sit in text_config, per layer type or "
           "per block); its fixture converts both ways in test_fixture_config_comes_back_whole")
    return [n if top_level(n) else pytest.param(n, marks=pytest.mark.skip(reason=why)) for n in families.FAMILIES]


@pytest.mark.parametrize("name", families.FAMILIES)
def test_fixture_config_comes_back_whole(name):
    spec = families.load(name)
    explicit, native, layout = api.import_config(spec, fixture(name))
    assert api.export_config(spec, native, layout, original=fixture(name)) == fixture(name)
    assert canonical(api.import_config(spec, api.export_config(spec, native, layout))[1]) == canonical(native)


@pytest.mark.parametrize("rope", ROPE)
@pytest.mark.parametrize("name", rotary_families())
def test_every_architecture_field_is_claimed_and_the_config_comes_back(name, rope):
    spec = families.load(name)
    source = {k: v for k, v in fixture(name).items() if k not in ("rope_theta", "rope_scaling")}
    source["rope_parameters"] = ROPE[rope]
    explicit, native, layout = api.import_config(spec, source)
    # to_hf fails closed if any architecture field of the resolved config has no rule
    assert api.export_config(spec, native, layout, original=source) == source
    assert canonical(api.import_config(spec, api.export_config(spec, native, layout))[1]) == canonical(native)


@pytest.mark.parametrize("name", families.FAMILIES)
@pytest.mark.parametrize("path, value", [
    (("decoder", "block", "mixer", "query_norm"), {"type": "layer_norm", "epsilon": 1e-6, "zero_centered": False}),
    (("decoder", "block", "normalization", "type"), "layer_norm"),
    (("head", "logits_scale_factor"), 2.0),
    (("embeddings", "embedding_scale"), 2.0),
    (("peft", "type"), "lora"),
])
def test_what_a_family_cannot_hold_is_refused(name, path, value):
    spec = families.load(name)
    native = copy.deepcopy(api.import_config(spec, fixture(name))[1])
    if path[:2] == ("decoder", "block") and native["decoder"]["type"] == "pattern":
        path = ("decoder", "blocks", native["decoder"]["pattern"][0]) + path[2:]
    target = native
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        api.export_config(spec, native, "transformers5")
    # one problem, naming the field that was set (or the `type` inside the section set) and the value given
    message = str(err.value)
    assert "(1 problem)" in message, message
    assert re.search(re.escape(".".join(path)) + r"(\.type)? ?[=:] ", message), message
    assert repr(value["type"] if isinstance(value, dict) else value) in message, message


def test_llama_refuses_a_sliding_window_and_mistral_keeps_it():
    native = api.import_config(families.load("mistral"), fixture("mistral") | {"sliding_window": 16})[1]
    assert native["decoder"]["block"]["mixer"]["window_size"] == 16
    with pytest.raises(ConfigError, match="window_size"):
        api.export_config(families.load("llama"), native, "transformers5")


def test_mistral3_ties_as_the_transformers_that_wrote_its_config_json():
    """transformers 5 ties a Mistral3 model by the top-level `tie_word_embeddings` (default true) and writes it;
    transformers 4 tied by the text config's (default false) and wrote its rotary as `rope_theta`. A config.json in
    the 4 layout that the two read otherwise (neither key, as Mistral Small 3.1 and 3.2 have it) is tied as the
    checkpoint's files are: untied where they hold an lm_head (Mistral's own), tied where not (as transformers 5
    saves the model it reads from that config); without tensor names it is refused, naming the key."""
    spec = families.load("mistral3")
    lm_head, none = ["language_model.lm_head.weight"], ["language_model.model.embed_tokens.weight"]

    def tied(config: dict, tensors: list[str] | None = None) -> bool:
        return api.import_config(spec, config, tensors)[1]["tied_embedding_weight"]

    v5 = fixture("mistral3")
    text5 = {k: v for k, v in v5["text_config"].items() if k != "tie_word_embeddings"}
    assert tied(v5) is True and tied(v5 | {"tie_word_embeddings": False}) is False
    assert tied({k: v for k, v in v5.items() if k != "tie_word_embeddings"} | {"text_config": text5}) is True
    assert tied(v5, lm_head) is True  # the config says: an lm_head in the files is a tied copy
    text4 = {k: v for k, v in text5.items() if k != "rope_parameters"} | {"rope_theta": 1e9}
    v4 = {k: v for k, v in v5.items() if k != "tie_word_embeddings"} | {"text_config": text4}
    assert tied(v4, lm_head) is False and tied(v4, ["lm_head.weight"]) is False and tied(v4, none) is True
    with pytest.raises(ConfigError, match="leaves tie_word_embeddings to a default that transformers versions read "
                                          "differently .* set tie_word_embeddings in config.json"):
        tied(v4)
    for top, text, read in [  # transformers 4 reads the text config's key (default false), 5 the top-level one (true)
        (None, True, True), (True, True, True), (False, None, False), (False, False, False),  # alike
        (True, None, None), (True, False, None), (False, True, None), (None, False, None),  # otherwise: the files
    ]:
        config = copy.deepcopy(v4)
        for where, value in ((config, top), (config["text_config"], text)):
            if value is not None:
                where["tie_word_embeddings"] = value
        assert (tied(config, lm_head), tied(config, none)) == ((False, True) if read is None else (read, read))
    written = api.export_config(spec, api.import_config(spec, v4, lm_head)[1], "transformers4")
    assert "tie_word_embeddings" not in written and written["text_config"]["tie_word_embeddings"] is False
    assert "rope_theta" in written["text_config"] and tied(written, lm_head) is False
    tied_out = api.export_config(spec, api.import_config(spec, v4, none)[1], "transformers4")
    assert tied_out["text_config"]["tie_word_embeddings"] is True and tied(tied_out) is True
    assert api.export_config(spec, api.import_config(spec, v4, none)[1], "transformers4", v4) == v4


def test_all_config_problems_are_reported_together():
    source = fixture("llama") | {"rope_interleaved": True, "hidden_act": "gelu_fast",
                                 "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}
    with pytest.raises(ConfigError) as err:
        api.import_config(families.load("llama"), source)
    message = str(err.value)
    assert "3 problems" in message
    assert "rope_interleaved = True" in message and "gelu_fast" in message and "'dynamic'" in message


def test_qwen2_sliding_window_and_inconsistent_layer_types_are_refused():
    spec = families.load("qwen2")
    with pytest.raises(ConfigError, match="use_sliding_window"):
        api.import_config(spec, fixture("qwen2") | {"use_sliding_window": True})
    with pytest.raises(ConfigError, match="layer_types"):
        api.import_config(spec, fixture("qwen2") | {"layer_types": ["full_attention", "sliding_attention"]})
    explicit = api.import_config(spec, fixture("qwen2") | {"head_dim": 16})[1]
    assert explicit["decoder"]["block"]["mixer"]["head_size"] == 16
    # Qwen2Config has no head_dim: an export writes one only where it is not hidden_size // num_attention_heads
    assert api.export_config(spec, explicit, "transformers5")["head_dim"] == 16
    assert "head_dim" not in api.export_config(spec, api.import_config(spec, fixture("qwen2"))[1], "transformers5")


@pytest.mark.parametrize("name, overrides", [(name, {}) for name in families.FAMILIES] + [
    ("mtp_llama", {"prediction_heads": 2}), ("mtp_llama", {"prediction_heads": 4, "tie_word_embeddings": True}),
    ("mixtral", {"tie_word_embeddings": True, "num_local_experts": 3}),
])
def test_synthetic_checkpoint_round_trips_both_ways(name, overrides, tmp_path):
    """hf -> native -> hf and native -> hf -> native, bit-exact, for a random checkpoint of every family."""
    source = synth.write_hf(tmp_path / "hf", fixture(name) | overrides, seed=7)
    weightport.convert(source, tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "hf2")
    weightport.convert(tmp_path / "hf2", tmp_path / "native2")
    assert_same_tensors(tensors(tmp_path / "hf2"), tensors(source))
    assert_same_config(hf_config(tmp_path / "hf2"), hf_config(source))
    assert_same_tensors(tensors(tmp_path / "native2"), tensors(tmp_path / "native"))
    assert native_meta(tmp_path / "native2") == native_meta(tmp_path / "native")


def test_transposes_by_blocks_equal_the_mapped_path(tmp_path, monkeypatch):
    """Large transposes go by bands of columns (wide inputs) or blocks of rows written as blocks of columns (tall
    inputs); forcing that path on a small model, with bands and blocks that end mid-tensor, gives the same bytes in
    both directions, so both orientations are exercised; small shards put the blocks in files other than the first,
    at offsets that are not page-aligned."""
    from weightport.core import runtime

    source = synth.write_hf(tmp_path / "hf", fixture("mixtral"), seed=3)
    weightport.convert(source, tmp_path / "mapped")
    monkeypatch.setattr(runtime, "BLOCKS_ABOVE", 0)
    monkeypatch.setattr(runtime, "BLOCK", 200)
    weightport.convert(source, tmp_path / "blocks", max_shard_size=20_000)
    assert len(list((tmp_path / "blocks").glob("*.safetensors"))) > 3
    assert_same_tensors(tensors(tmp_path / "blocks"), tensors(tmp_path / "mapped"))
    weightport.convert(tmp_path / "blocks", tmp_path / "back", max_shard_size=20_000)
    assert len(list((tmp_path / "back").glob("*.safetensors"))) > 3
    assert_same_tensors(tensors(tmp_path / "back"), tensors(source))


def test_formats_sharing_a_model_type_are_told_apart_and_refuse_each_others_configs(tmp_path):
    """`detect_by` drives both `families.detect` and the check of a config.json read as a format (`format=`,
    `import_config`): any two formats of one model type, not only Llava's."""
    from dataclasses import replace

    llama = families.load("llama")
    first = replace(llama, name="toy_first", model_type="toy", detect_by={"toy_config.variant": ("first",)})
    second = replace(llama, name="toy_second", model_type="toy", detect_by={"toy_config.variant": ("second", None)})
    families.register(first)
    families.register(second)
    try:
        config = synth.tiny_llama(model_type="toy", toy_config={"variant": "first"})
        assert families.detect(config) == "toy_first" and families.detect({"model_type": "toy"}) == "toy_second"
        said = ("config.json has toy_config.variant = 'first', but format toy_second needs toy_config.variant "
                "'second' or absent; it is a toy_first checkpoint: drop --format (or pass --format toy_first)")
        with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
            api.import_config(second, config)
        synth.write_hf(tmp_path / "hf", config, format="toy_first")
        with pytest.raises(ConfigError, match="format toy_second needs toy_config.variant"):
            weightport.convert(tmp_path / "hf", tmp_path / "native", format="toy_second")
        assert not (tmp_path / "native").exists()
        assert weightport.convert(tmp_path / "hf", tmp_path / "native").family == "toy_first"
        other = synth.tiny_llama(model_type="toy", toy_config={"variant": "third"})
        with pytest.raises(ConfigError, match="toy_config.variant = 'third', but format toy_first needs "
                                              "toy_config.variant 'first'; no format reads it \\(toy_second: "
                                              "toy_config.variant 'second' or absent\\): weightport does not convert"):
            api.import_config(first, other)
        families.check(llama, other)  # a format of another model type leaves it to the model_type rule
    finally:
        families.unregister("toy_first")
        families.unregister("toy_second")
