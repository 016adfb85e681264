"""Fail closed, round two (issue 23): what goes wrong during a run, and the entry points beside `convert`.

- A source file that shrinks while it is converted (by less than a page, or by whole pages of a memory-mapped
  tensor) is an error naming the file, never zeros in the output and never a crash (SIGBUS); nothing is left.
- SIGTERM and SIGHUP stop the real command as Ctrl-C does: exit 143 / 129, a message, nothing left; and a conversion
  removes the temporary folders of killed runs on this host, whatever their destination, and says so.
- The signal is sent by the converting process itself when it opens a source file for the n-th time (an audit hook
  in a `sitecustomize` module on the subprocess's path), so the test controls the moment without waiting for one.
- `export_hf` and `hf_config` check that the config fits the format as the command does; counts are bounded in
  memory too; zero-size tensors convert; a long destination name works; `check` reads tied copies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file, save_file

import weightport
from helpers import assert_same_tensors, cli, tensors
from weightport import synth
from weightport.errors import ConfigError, CoverageError, FormatError, WeightportError
from weightport.io.safetensors import read_checkpoint

DEAD = 2**22 + 12345  # above Linux's largest process id: no process has it


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp-*"))


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    """A tiny Llama in 3 shards (each step reads one of them)."""
    return synth.write_hf(tmp_path_factory.mktemp("hf") / "hf", synth.tiny_llama(), seed=0, max_shard_size=150_000)


# ---------------------------------------------------------------------------------------------------------------
# 5: a source file that shrinks during the conversion


@pytest.mark.parametrize("when", ["before_its_read", "after_every_step"])
@pytest.mark.parametrize("lost", [10, 3 * 4096], ids=["less_than_a_page", "whole_pages"])
def test_a_source_file_that_shrinks_during_the_conversion_is_an_error(hf, tmp_path, when, lost):
    """The last shard loses `lost` bytes at its end: after the first step (the bytes of its last tensor are read
    later, short: an error), or once every step is written (nothing reads them again: the sizes checked before the
    output moves into place tell)."""
    src, dst = tmp_path / "src", tmp_path / "out"
    subprocess.run(["cp", "-r", str(hf), str(src)], check=True)
    plan = weightport.plan(src)
    last = max((info for info in read_checkpoint(src).values()), key=lambda info: (info.file.name, info.end))
    at = 1 if when == "before_its_read" else len(plan.steps)
    done = []

    def progress(step) -> None:
        done.append(step)
        if len(done) == at:
            os.truncate(last.file, last.file.stat().st_size - lost)

    with pytest.raises(FormatError, match=last.file.name) as raised:
        weightport.convert(src, dst, workers=1, progress=progress)
    if when == "after_every_step":
        assert "changed while it was being converted" in str(raised.value)
    assert not dst.exists() and not leftovers(tmp_path)


# The whole-page case of a memory-mapped tensor, in a subprocess: had the map been touched, the process would have
# died of SIGBUS. Every computed tensor is mapped (the size above which tensors are mapped is set to 0), and the
# shard of layer 1's transposed down_proj loses all but the first page of it before that step runs.
MAPPED_SHRINK = """
import os, sys, weightport
from weightport.io import safetensors
from weightport.errors import FormatError
safetensors._MAP_ABOVE = 0
src, dst = sys.argv[1:]
info = safetensors.read_checkpoint(src)["model.layers.1.mlp.down_proj.weight"]
steps = weightport.plan(src).steps
at = next(i for i, s in enumerate(steps) if s.src[0].name == info.name)
done = []
def progress(step):
    done.append(step)
    if len(done) == at:
        os.truncate(info.file, info.start + 4096)
try:
    weightport.convert(src, dst, workers=1, progress=progress)
except FormatError as err:
    print(err)
    sys.exit(1)
"""


def test_a_mapped_tensor_whose_pages_are_gone_is_an_error_not_a_crash(hf, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "out"
    subprocess.run(["cp", "-r", str(hf), str(src)], check=True)
    info = read_checkpoint(src)["model.layers.1.mlp.down_proj.weight"]
    assert info.nbytes >= 4 * 4096 and info.end <= info.file.stat().st_size
    run = subprocess.run([sys.executable, "-c", MAPPED_SHRINK, str(src), str(dst)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, (run.returncode, run.stderr)  # -7 (SIGBUS) before
    assert f"{info.file.name}: the file shrank" in run.stdout and "nothing was written" in run.stdout
    assert not dst.exists() and not leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# 14: SIGTERM and SIGHUP, and the temporary folders of killed runs

SITECUSTOMIZE = """
import os, sys
_at = os.environ.get("WEIGHTPORT_TEST_SIGNAL_AT")
if _at:
    _count, _signum, _folder = _at.split(":", 2)
    _opened = []
    def _hook(event, args):
        if event == "open" and args and isinstance(args[0], str) and args[0].startswith(_folder) \\
                and args[0].endswith(".safetensors"):
            _opened.append(args[0])
            if len(_opened) == int(_count):
                os.kill(os.getpid(), int(_signum))
    sys.addaudithook(_hook)
"""


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_run_stops_the_command_and_leaves_nothing(hf, tmp_path, signum, workers):
    """The command sends itself the signal when it opens a source shard for the 6th time: several steps are
    written by then (the temporary folder holds them), and the others are not."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dst = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "WEIGHTPORT_TEST_SIGNAL_AT": f"6:{int(signum)}:{hf}", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "weightport", "convert", str(hf), str(dst), "--workers",
                          str(workers)], capture_output=True, text=True, env=env, timeout=600,
                         preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))  # as in a terminal, not nohup
    assert run.returncode == 128 + signum, run.stderr
    assert f"stopped by {signal.Signals(signum).name}; nothing was written" in run.stderr
    assert "Traceback" not in run.stderr
    assert not dst.exists() and not leftovers(tmp_path)
    rerun = cli("convert", hf, dst)  # the hook is not on this one's path: it converts
    assert "wrote" in rerun.stdout


def test_under_nohup_a_sighup_is_ignored_and_the_conversion_completes(hf, tmp_path):
    """`nohup` starts the command with SIGHUP ignored, so that it outlives its terminal: it stays ignored."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dst = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
           "WEIGHTPORT_TEST_SIGNAL_AT": f"6:{int(signal.SIGHUP)}:{hf}", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "weightport", "convert", str(hf), str(dst)], capture_output=True,
                         text=True, env=env, timeout=600,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and (dst / "metadata.yaml").is_file() and not leftovers(tmp_path)


def test_a_conversion_removes_the_temporary_folders_of_killed_runs_and_says_so(hf, tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".other.tmp-{host}-{DEAD}-abcdef012345"  # a killed run into another destination
    dead_same = tmp_path / f".out.tmp-{host}-{DEAD}-0123456789ab"  # and one into this destination
    alive = tmp_path / f".other.tmp-{host}-{os.getpid()}-abcdef012345"  # this test is alive: not stale
    elsewhere = tmp_path / f".other.tmp-another-host-{DEAD}-abcdef012345"  # a run on another host: not ours to judge
    unrelated = tmp_path / ".cache"  # not a temporary folder at all
    for folder in (dead, dead_same, alive, elsewhere, unrelated):
        folder.mkdir()
        (folder / "model_0.safetensors").write_bytes(b"partial")
    run = cli("convert", hf, tmp_path / "out")
    assert not dead.exists() and not dead_same.exists()
    assert alive.exists() and elsewhere.exists() and unrelated.exists()
    assert f"note: removed 2 temporary folder(s) that killed runs on this host left beside the output: " \
           f"{dead.name}, {dead_same.name}" in run.stdout


# ---------------------------------------------------------------------------------------------------------------
# 7: every entry point checks that the config fits the format


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A tiny transformers Qwen2 (q/k/v biases, which Llama-like formats cannot hold): its folder, the native
    config mapping of its conversion and its native tensors."""
    root = tmp_path_factory.mktemp("qwen2")
    config = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(root / "hf")
    weightport.convert(root / "hf", root / "native")
    meta = yaml.safe_load((root / "native" / "metadata.yaml").read_text())
    return root / "native", meta["config"], tensors(root / "native")


@pytest.mark.parametrize("format", ["llama", "mistral", "gemma4", "mtp_llama", "mixtral"])
def test_a_format_that_cannot_describe_the_model_is_refused_by_every_entry_point(qwen2, tmp_path, format):
    """Qwen2's q/k/v biases have no key in these formats (gemma4 and mixtral differ further): export_hf, hf_config
    and the command refuse alike, naming the fields and the formats that can describe the model (mixtral's weight
    rules never run on a model without experts: a ConfigError, not an internal SpecError)."""
    native, config, native_tensors = qwen2
    messages = []
    with pytest.raises(ConfigError) as raised:
        next(weightport.export_hf(config, native_tensors.items(), format=format))
    messages.append(str(raised.value))
    with pytest.raises(ConfigError) as raised:
        weightport.hf_config(config, format=format)
    messages.append(str(raised.value))
    run = cli("convert", native, tmp_path / "out", "--format", format, check=False)
    assert run.returncode == 1 and not (tmp_path / "out").exists()
    messages.append(run.stderr)
    for message in messages:
        assert f"{format}: the native config cannot be exported" in message, message
        assert "formats that can describe this native model: qwen2, apriel2_text" in message, message
    if format in ("llama", "mistral", "mtp_llama"):
        assert all("decoder.block.mixer.query_layer.bias.enabled = True cannot be represented" in m for m in messages)


def test_a_logit_softcap_no_format_key_holds_is_refused_in_memory_as_by_the_command(tmp_path):
    hf = synth.write_hf(tmp_path / "hf", synth.tiny_llama(), seed=0)
    weightport.convert(hf, tmp_path / "native")
    meta = yaml.safe_load((tmp_path / "native" / "metadata.yaml").read_text())
    meta["config"]["base_model"]["head"]["final_logit_softcap"] = 30.0
    (tmp_path / "native" / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ConfigError, match=r"head.final_logit_softcap = 30.0 cannot be represented"):
        next(weightport.export_hf(meta["config"], tensors(tmp_path / "native").items(), format="llama"))
    with pytest.raises(ConfigError, match=r"head.final_logit_softcap = 30.0 cannot be represented"):
        weightport.hf_config(meta["config"], format="llama")
    run = cli("convert", tmp_path / "native", tmp_path / "out", check=False)
    assert run.returncode == 1 and "head.final_logit_softcap = 30.0 cannot be represented" in run.stderr


# ---------------------------------------------------------------------------------------------------------------
# 8: counts in memory


@pytest.mark.parametrize("count", [-1, 10**6, 10**9, 10**400], ids=["-1", "1e6", "1e9", "1e400"])
def test_a_count_no_model_has_is_refused_in_memory_before_anything_is_allocated(count):
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="num_hidden_layers = "):
        next(weightport.import_hf(synth.tiny_llama(num_hidden_layers=count), []))
    native = {"type": "gpt", "base_model": {"decoder": {"num_blocks": count}}}
    with pytest.raises(ConfigError, match="decoder.num_blocks = "):
        next(weightport.export_hf(native, [], format="llama"))
    assert time.perf_counter() - started < 30  # not minutes: nothing was repeated `count` times


# ---------------------------------------------------------------------------------------------------------------
# 12, 13, 17: zero-size tensors, a long destination name, check's verdict on a tied copy


def test_zero_size_tensors_convert_both_ways_with_transformers_logits(tmp_path):
    """intermediate_size 0: every MLP weight has no element; transformers builds and runs the model."""
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=0, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "hf")
    cli("convert", tmp_path / "hf", tmp_path / "native")
    cli("convert", tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == \
        json.loads((tmp_path / "hf" / "config.json").read_text())
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back")
    prompt = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(back(prompt).logits, model(prompt).logits)


def test_a_destination_name_of_240_bytes_converts(hf, tmp_path):
    """Its temporary folder's name (`.<name>.tmp-<host>-<pid>-<token>`) would pass 255 bytes: it is shortened."""
    dst = tmp_path / ("d" * 240)
    names = []
    weightport.convert(hf, dst, progress=lambda step: names.extend(leftovers(tmp_path)))
    assert (dst / "metadata.yaml").is_file() and not leftovers(tmp_path)
    assert names and all(len(name) <= 255 and name.startswith("." + "d" * 100 + "~") for name in names)


def test_check_reads_a_tied_copy_and_gives_converts_verdict(tmp_path):
    """A tied checkpoint that still holds lm_head.weight: bit-equal, check says it compared it; different, check
    refuses as convert does (the refusal is a case of test_fail_closed)."""
    hf = synth.write_hf(tmp_path / "hf", synth.tiny_llama(tie_word_embeddings=True), seed=0)
    weights = load_file(hf / "model.safetensors")
    save_file({**weights, "lm_head.weight": weights["model.embed_tokens.weight"].clone()}, hf / "model.safetensors",
              metadata={"format": "pt"})
    run = cli("check", hf)
    assert "note: tied copies read and found bit-equal: lm_head.weight = model.embed_tokens.weight" in run.stdout
    assert "complete" in run.stdout
    plan = weightport.check(hf)
    assert any("bit-equal" in note for note in plan.notes)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] + 1
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CoverageError, match="lm_head.weight differs from model.embed_tokens.weight"):
        weightport.check(hf)
    with pytest.raises(WeightportError, match="lm_head.weight differs"):
        weightport.convert(hf, tmp_path / "out")
