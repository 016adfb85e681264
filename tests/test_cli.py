"""The `weightport` command run for real in a subprocess: conversions, plans, the demo, and bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file, save_file

from helpers import GOLDENS, assert_same_config, assert_same_tensors, cli, hf_config, native_meta, tensors
import weightport
from weightport import synth
from weightport.core.paths import MISSING
from weightport.errors import ConfigError


@pytest.fixture
def tiny(tmp_path):
    return synth.write_hf(tmp_path / "hf", synth.tiny_llama(), seed=3)


def test_convert_both_ways_and_plan_json(tiny, tmp_path):
    out = cli("convert", tiny, tmp_path / "native")
    assert "llama from_hf" in out.stdout and (tmp_path / "native" / "metadata.yaml").is_file()
    plan = json.loads(cli("plan", tmp_path / "native", "--json").stdout)
    assert plan["direction"] == "to_hf"
    assert {"op": "split(dim=0)", "src": [{"name": "decoder.0.mixer.key_value.weight", "shape": [64, 64],
                                          "dtype": "F32"}],
            "dst": [{"name": "model.layers.0.self_attn.k_proj.weight", "shape": [32, 64], "dtype": "F32"},
                    {"name": "model.layers.0.self_attn.v_proj.weight", "shape": [32, 64],
                     "dtype": "F32"}]} in plan["steps"]
    (tiny / "tokenizer.json").write_text('{"version": "1.0"}')
    out = cli("convert", tiny, tmp_path / "native", "--overwrite")
    assert "carries 1 other file(s) unchanged: tokenizer.json" in out.stdout
    cli("convert", tmp_path / "native", tmp_path / "back", "--max-shard-size", "60KB")
    assert (tmp_path / "back" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert len(list((tmp_path / "back").glob("model-*-of-*.safetensors"))) > 1
    assert (tmp_path / "back" / "model.safetensors.index.json").is_file()
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tiny))
    assert_same_config(hf_config(tmp_path / "back"), hf_config(tiny))


def test_demo_runs_a_real_round_trip(tmp_path):
    out = cli("demo", tmp_path / "demo").stdout
    assert "bit-exact" in out and "identical" in out
    assert (tmp_path / "demo" / "native" / "metadata.yaml").is_file()


def test_export_layout_option(tmp_path):
    """--hf-layout transformers4 writes what transformers 4.57's save_pretrained wrote for the same model (golden
    tf4_llama_basic holds llama_basic's tensors and config in that layout), bit for bit and key for key; it comes back
    to the same native checkpoint, and exported in the transformers 5 layout it is llama_basic's own checkpoint."""
    source, saved_by_4 = GOLDENS / "llama_basic" / "hf", GOLDENS / "tf4_llama_basic" / "hf"
    cli("convert", source, tmp_path / "native")
    cli("convert", tmp_path / "native", tmp_path / "tf4", "--hf-layout", "transformers4")
    assert_same_tensors(tensors(tmp_path / "tf4"), tensors(saved_by_4))
    # the source's keys are kept as they were: its transformers_version, and its null pad_token_id (which transformers
    # 4 leaves out, as PretrainedConfig's default)
    assert_same_config(hf_config(tmp_path / "tf4"), hf_config(saved_by_4), expected={
        "transformers_version": ("5.14.1", "4.57.6"), "pad_token_id": (None, MISSING)})
    cli("convert", tmp_path / "tf4", tmp_path / "native2")
    assert_same_tensors(tensors(tmp_path / "native2"), tensors(tmp_path / "native"))
    assert native_meta(tmp_path / "native2")["config"] == native_meta(tmp_path / "native")["config"]
    cli("convert", tmp_path / "native2", tmp_path / "tf5", "--hf-layout", "transformers5")
    assert_same_tensors(tensors(tmp_path / "tf5"), tensors(source))
    assert_same_config(hf_config(tmp_path / "tf5"), hf_config(source))


def fails(*args: str) -> str:
    result = cli(*args, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_unsupported_config_value_is_an_error_and_writes_nothing(tiny, tmp_path):
    config = hf_config(tiny)
    config["rope_interleaved"] = True  # a key LlamaConfig does not define, but a rule reads: its value matters
    (tiny / "config.json").write_text(json.dumps(config))
    err = fails("convert", tiny, tmp_path / "out")
    assert "rope_interleaved = True, but llama requires False" in err and "interleaved rotary pairs" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("key, value, expected", [
    ("intermediate_size", 128.0, "intermediate_size = 128.0 should be an integer"),
    ("num_hidden_layers", None, "num_hidden_layers = None should be an integer (it sets the native decoder."),
    ("rms_norm_eps", "1e-5", "rms_norm_eps = '1e-5' should be a number"),
    ("attention_bias", 0, "attention_bias = 0 should be true or false"),
    ("num_key_value_heads", "2", "num_key_value_heads = '2' should be an integer"),
])
def test_a_value_of_the_wrong_kind_is_refused_naming_the_key(tiny, tmp_path, key, value, expected):
    """Fast-LLM's fields are typed, as transformers' are: a string, float or null where a number or switch belongs
    is refused by check and convert alike, naming the config.json key, and nothing is written."""
    config = hf_config(tiny)
    config[key] = value
    (tiny / "config.json").write_text(json.dumps(config))
    assert expected in fails("check", tiny)
    assert expected in fails("convert", tiny, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, expected", [
    ("missing", "missing tensor: model.layers.1.mlp.up_proj.weight"),
    ("extra", "tensor claimed by no rule: model.layers.0.self_attn.rotary_emb.inv_freq"),
    ("shape", "wrong shape: model.layers.1.mlp.up_proj.weight: file has [127, 64], config implies [128, 64]"),
])
def test_broken_tensors_are_reported_and_write_nothing(tiny, tmp_path, damage, expected):
    weights = load_file(tiny / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    if damage == "missing":
        del weights[name]
    elif damage == "extra":
        weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = weights["model.norm.weight"][:8].clone()
    else:
        weights[name] = weights[name][:127].clone()
    save_file(weights, tiny / "model.safetensors")
    assert expected in fails("convert", tiny, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_bad_input_and_usage(tiny, tmp_path):
    assert "nowhere does not exist; check the path" in fails("convert", tmp_path / "nowhere", tmp_path / "out")
    cli("convert", tiny, tmp_path / "native")
    assert "--overwrite" in fails("convert", tiny, tmp_path / "native")
    cli("convert", tiny, tmp_path / "native", "--overwrite")
    meta = native_meta(tmp_path / "native")
    del meta["metadata"]["weightport"]
    (tmp_path / "native" / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert "pass --format" in fails("convert", tmp_path / "native", tmp_path / "out")
    assert cli("convert", tiny, tmp_path / "x", "--dtype", "int8", check=False).returncode == 2
    assert "mistral" in cli("formats").stdout


def test_an_output_that_is_or_holds_or_lies_in_an_input_is_refused_even_with_overwrite(tiny, tmp_path):
    """--overwrite replaces the destination: where that is the source (or a folder holding it), the source would be
    deleted; an output inside the source would be written into it."""
    before = {p.name: p.read_bytes() for p in tiny.iterdir()}
    assert "would delete it" in fails("convert", tiny, tiny, "--overwrite")
    assert "would delete it" in fails("convert", tiny, tmp_path, "--overwrite")
    assert "inside the input" in fails("convert", tiny, tiny / "native")
    assert {p.name: p.read_bytes() for p in tiny.iterdir()} == before
    cli("convert", tiny, tmp_path / "native")
    meta = native_meta(tmp_path / "native")
    del meta["metadata"]["weightport"]  # as Fast-LLM saves it
    (tmp_path / "native" / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert "would delete it" in fails("convert", tmp_path / "native", tiny, "--origin", tiny, "--overwrite")
    assert {p.name: p.read_bytes() for p in tiny.iterdir()} == before


def test_the_api_reads_a_shard_size_as_the_cli_does(tiny, tmp_path):
    weightport.convert(tiny, tmp_path / "native", max_shard_size="100KB")
    assert len(list((tmp_path / "native").glob("model_*.safetensors"))) > 1
    with pytest.raises(ConfigError, match="max_shard_size='1 parsec'"):
        weightport.convert(tiny, tmp_path / "bad", max_shard_size="1 parsec")
