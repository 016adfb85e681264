"""inspect, check, verify, progress, and the streaming in-memory API, on the shared goldens."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import struct
import subprocess
import sys
import termios

import pytest
import torch
from safetensors.torch import load_file, save_file

import weightport
from weightport import synth
from helpers import GOLDENS, cli, hf_config, native_meta, tensors

LLAMA = GOLDENS / "llama_basic"


def test_inspect_hf_and_native():
    hf = weightport.inspect(LLAMA / "hf")
    assert (hf["side"], hf["format"], hf["tensors"], hf["dtypes"]) == ("hf", "llama", 21, {"F32": 21})
    assert hf["parameters"] == sum(t.numel() for t in tensors(LLAMA / "hf").values())
    native = weightport.inspect(GOLDENS / "mtp_llama" / "fast_llm")
    assert (native["side"], native["native_model"], native["format"]) == ("native", "gpt", None)
    out = cli("inspect", GOLDENS / "llava" / "hf").stdout
    assert "format llava" in out and f"{weightport.inspect(GOLDENS / 'llava' / 'hf')['parameters']:,}" in out
    assert json.loads(cli("inspect", LLAMA / "fast_llm", "--json").stdout)["shards"] == ["model_0.safetensors"]


def test_check_reports_complete_or_every_problem(tmp_path):
    assert "complete" in cli("check", LLAMA / "hf").stdout
    broken = tmp_path / "hf"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(hf_config(LLAMA / "hf")))
    weights = load_file(LLAMA / "hf" / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    weights["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(weights, broken / "model.safetensors")
    result = cli("check", broken, check=False)
    assert result.returncode == 1
    assert "missing tensor: model.layers.0.mlp.up_proj.weight" in result.stderr
    assert "claimed by no rule: model.layers.0.extra.weight" in result.stderr
    assert not list(tmp_path.glob("*native*"))


def test_verify_maps_hf_and_native_and_names_a_changed_element(tmp_path):
    assert weightport.verify(LLAMA / "hf", LLAMA / "fast_llm") == []
    assert cli("verify", LLAMA / "hf", LLAMA / "fast_llm").returncode == 0
    weightport.convert(LLAMA / "hf", tmp_path / "native")
    native = load_file(tmp_path / "native" / "model_0.safetensors")
    native["decoder.1.mlp.layer_2.weight/weights"][3, 5] += 0.25
    save_file(native, tmp_path / "native" / "model_0.safetensors", metadata={"format": "pt"})
    differences = weightport.verify(LLAMA / "hf", tmp_path / "native")
    assert [d.name for d in differences] == ["decoder.1.mlp.layer_2.weight"]
    assert "first at index (3, 5)" in str(differences[0]) and "0.25" in str(differences[0])
    result = cli("verify", LLAMA / "hf", tmp_path / "native", check=False)
    assert result.returncode == 1 and "decoder.1.mlp.layer_2.weight" in result.stdout
    assert cli("verify", LLAMA / "hf", tmp_path / "native", "--atol", "0.3").returncode == 0


def test_verify_logits(tmp_path):
    pytest.importorskip("transformers")
    out = cli("verify", GOLDENS / "mistral_swa" / "hf", GOLDENS / "mistral_swa" / "fast_llm", "--logits")
    assert "same logits" in out.stdout


def shuffled(pairs):
    pairs = list(pairs)
    random.Random(0).shuffle(pairs)
    return pairs


@pytest.mark.parametrize("case", ["llama_basic", "mixtral_moe", "gemma4_moe", "llava"])
def test_export_hf_from_shuffled_native_reproduces_the_golden(case):
    golden = GOLDENS / case
    fmt = json.loads((golden / "case.json").read_text())["format"]
    config = native_meta(golden / "fast_llm")["config"]
    out = dict(weightport.export_hf(config, shuffled(tensors(golden / "fast_llm").items()), format=fmt))
    reference = tensors(golden / "roundtrip")
    assert out.keys() == reference.keys()
    assert all(torch.equal(out[k], reference[k]) for k in reference)
    back = dict(weightport.import_hf(weightport.hf_config(config, fmt), shuffled(out.items()), format=fmt))
    native = tensors(golden / "fast_llm")
    assert back.keys() == native.keys() and all(torch.equal(back[k], native[k]) for k in native)


def test_streaming_yields_as_soon_as_inputs_are_complete_and_fails_closed():
    config = hf_config(LLAMA / "hf")
    weights = tensors(LLAMA / "hf")
    stream = weightport.import_hf(config, [("model.layers.0.self_attn.k_proj.weight",
                                            weights["model.layers.0.self_attn.k_proj.weight"]),
                                           ("model.norm.weight", weights["model.norm.weight"])])
    assert next(stream)[0] == "head.final_norm.weight"  # K waits for V; the norm is complete at once
    with pytest.raises(weightport.WeightportError, match="never arrived"):
        list(stream)
    with pytest.raises(weightport.WeightportError, match="claimed by no rule"):
        list(weightport.import_hf(config, [("model.extra", torch.zeros(1))]))


def test_progress_is_shown_on_a_terminal_only(tmp_path):
    source = synth.write_hf(tmp_path / "hf", synth.tiny_llama())
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    process = subprocess.Popen([sys.executable, "-m", "weightport", "convert", str(source), str(tmp_path / "n")],
                               stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    text = output.decode(errors="replace")
    assert "converting: 100%" in text and "B/s" in text
    quiet = cli("convert", source, tmp_path / "n2")  # not a terminal: no bar
    assert "converting" not in quiet.stderr


def test_verify_names_each_differing_config_value(tmp_path):
    """Architecture differences are named one value at a time, into per-block lists, not as whole lists."""
    synth.write_hf(tmp_path / "a", synth.tiny_llama())
    synth.write_hf(tmp_path / "b", synth.tiny_llama(num_key_value_heads=4))
    configs = [d for d in weightport.verify(tmp_path / "a", tmp_path / "b") if d.name.startswith("config ")]
    assert [(d.name, d.detail) for d in configs] == [("config decoder.blocks.0.mixer.head_groups", "2 != 4"),
                                                      ("config decoder.blocks.1.mixer.head_groups", "2 != 4")]
