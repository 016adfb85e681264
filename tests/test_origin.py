"""Exporting native checkpoints that record no HF model, as Fast-LLM saves them: naming the HF model training started
from (`origin`), inferring the format where only one fits, and saying which HF keys were not restored.

Fast-LLM keeps only the metadata fields it knows when it saves a checkpoint, so here a Fast-LLM save is what
weightport wrote minus `metadata.weightport`; tests/fastllm/test_fastllm_training.py does the same with real
Fast-LLM training runs."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

import weightport
from helpers import GOLDENS, assert_same_config, assert_same_tensors, cli, hf_config, native_meta, tensors
from weightport import stream, synth
from weightport.errors import ConfigError

TOKENIZER = '{"version": "1.0", "model": {"type": "WordLevel"}}'


def saved_by_fast_llm(native) -> None:
    """What Fast-LLM leaves of a native checkpoint weightport wrote: no `metadata.weightport`, no `hf_files/`."""
    meta = native_meta(native)
    del meta["metadata"]["weightport"]
    (native / "metadata.yaml").write_text(yaml.safe_dump(meta))
    shutil.rmtree(native / "hf_files", ignore_errors=True)


@pytest.fixture
def trained(tmp_path):
    """An HF Llama with a tokenizer and a generation config, imported, then saved as Fast-LLM saves it."""
    hf = synth.write_hf(tmp_path / "hf", synth.tiny_llama(pad_token_id=0, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), seed=5)
    (hf / "tokenizer.json").write_text(TOKENIZER)
    (hf / "generation_config.json").write_text('{"bos_token_id": 1}')
    weightport.convert(hf, tmp_path / "imported")
    shutil.copytree(tmp_path / "imported", tmp_path / "trained")
    saved_by_fast_llm(tmp_path / "trained")
    return tmp_path


@pytest.mark.parametrize("origin", ["hf", "imported"])
def test_export_with_origin_restores_the_whole_hf_model(trained, origin):
    plan = weightport.convert(trained / "trained", trained / "out", origin=trained / origin)
    assert_same_config(hf_config(trained / "out"), hf_config(trained / "hf"))
    assert (trained / "out" / "tokenizer.json").read_text() == TOKENIZER
    assert (trained / "out" / "generation_config.json").is_file()
    assert_same_tensors(tensors(trained / "out"), tensors(trained / "hf"))
    assert not [n for n in plan.notes if "not restored" in n]


def test_without_origin_the_format_is_ambiguous_and_the_error_lists_the_candidates(trained):
    with pytest.raises(ConfigError, match=r"5 formats can describe its architecture: llama, mistral, mtp_llama, "
                                          r"apriel_hybrid_ssm, apriel2_text; name the HF model .* --origin"):
        weightport.convert(trained / "trained", trained / "out")
    assert not (trained / "out").exists()


def test_without_origin_the_missing_keys_and_files_are_named(trained):
    plan = weightport.convert(trained / "trained", trained / "out", format="llama")
    lost = next(n for n in plan.notes if "written with the defaults of LlamaConfig" in n)
    assert "7 key(s)" in lost and "--origin" in lost
    assert all(k in lost for k in ("bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings"))
    assert any("no tokenizer" in n for n in plan.notes)
    config = hf_config(trained / "out")  # complete, as save_pretrained writes it: the class defaults
    assert config["max_position_embeddings"] == 2048 and config["bos_token_id"] == 1 and config["pad_token_id"] is None
    assert config["rope_parameters"]["rope_type"] == "llama3"
    assert not (trained / "out" / "tokenizer.json").exists()


def test_the_only_format_that_fits_is_taken(tmp_path):
    """A Mixtral-shaped native config can only be Mixtral: no --format needed."""
    weightport.convert(GOLDENS / "mixtral_moe" / "hf", tmp_path / "native")
    saved_by_fast_llm(tmp_path / "native")
    plan = weightport.convert(tmp_path / "native", tmp_path / "out")
    assert plan.family == "mixtral" and hf_config(tmp_path / "out")["architectures"] == ["MixtralForCausalLM"]
    assert_same_tensors(tensors(tmp_path / "out"), tensors(GOLDENS / "mixtral_moe" / "hf"))
    assert weightport.inspect(tmp_path / "native")["formats"] == ["mixtral"]


def test_an_origin_with_another_architecture_is_refused_naming_the_keys(trained):
    metadata = trained / "trained" / "metadata.yaml"
    meta = yaml.safe_load(metadata.read_text())
    meta["config"]["base_model"]["decoder"]["block"]["mlp"]["intermediate_size"] = 256
    metadata.write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match=r"architecture differs from that of --origin .*\n  config.json "
                                          r"intermediate_size: 128 in the origin, 256 in the checkpoint"):
        weightport.plan(trained / "trained", origin=trained / "hf")


def test_origin_must_record_an_hf_model(trained):
    with pytest.raises(ConfigError, match="records no HF model"):
        weightport.plan(trained / "trained", origin=trained / "trained")
    with pytest.raises(ConfigError, match="--format mistral disagrees with --origin"):
        weightport.plan(trained / "trained", origin=trained / "hf", format="mistral")
    with pytest.raises(ConfigError, match="--origin applies to native checkpoints"):
        weightport.plan(trained / "hf", origin=trained / "hf")


def test_streaming_export_and_config_with_origin(trained):
    config = native_meta(trained / "trained")["config"]
    assert stream.hf_config(config, origin=trained / "hf") == hf_config(trained / "hf")
    assert stream.hf_config(config, origin=trained / "imported") == hf_config(trained / "hf")
    native = tensors(trained / "trained")
    exported = dict(stream.export_hf(config, native.items(), origin=trained / "hf"))
    assert_same_tensors(exported, tensors(trained / "hf"))
    with pytest.raises(ConfigError, match="5 formats can describe it"):
        stream.hf_config(config)
    changed = copy.deepcopy(config)
    changed["base_model"]["hidden_size"] = 32
    with pytest.raises(ConfigError, match="hidden_size: 64 in the origin, 32 in the checkpoint"):
        stream.hf_config(changed, origin=trained / "hf")


def test_cli_origin_and_notes(trained):
    out = cli("convert", trained / "trained", trained / "out", "--origin", trained / "hf")
    assert "not restored" not in out.stdout and "carries 2 other file(s)" in out.stdout
    assert_same_config(json.loads((trained / "out" / "config.json").read_text()), hf_config(trained / "hf"))
    check = cli("check", trained / "trained", "--format", "llama")
    assert "note: config.json: 7 key(s) that no native field holds are written with the defaults" in check.stdout
    inspect = cli("inspect", trained / "trained")
    assert "format not recorded; can be llama, mistral, mtp_llama, apriel_hybrid_ssm, apriel2_text" in inspect.stdout
    assert "carries" not in inspect.stdout
    assert "carries     generation_config.json, tokenizer.json" in cli("inspect", trained / "imported").stdout


def test_a_format_that_cannot_describe_the_model_says_which_can(trained):
    with pytest.raises(ConfigError, match=r"decoder.block.mlp.type = 'mlp' cannot be represented: mixtral requires "
                                          r"'moe'[\s\S]*formats that can describe this native model: llama, mistral"):
        weightport.plan(trained / "trained", format="mixtral")
    with pytest.raises(ConfigError) as refused:
        weightport.plan(trained / "trained", format="qwen2")
    message = str(refused.value)  # the effective bias is named; o_proj's (off, as Qwen2 wants) is no problem
    assert "query_layer.bias.enabled = None (so False, from add_linear_biases) cannot be represented" in message
    assert "dense_layer" not in message
