"""Memory does not grow with the model or with the largest tensor (README, "Streams"): the peak resident memory of
the real `weightport convert`, in a subprocess, both ways, on a 0.66 GB checkpoint whose largest tensors (a
concatenation and a split moved byte for byte, and a transpose) are each twice the bound (200 MiB), stays within
the bound of the same command's peak on a tiny checkpoint (the interpreter, the imports and the bookkeeping).

The peak is the command's `ru_maxrss`, taken by a small launcher process that starts it and waits for it: Linux
keeps a process's high-water mark across `exec`, so a command started by pytest itself would report pytest's own
resident memory at the time it was forked.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightport
from weightport import synth
from weightport.core import runtime
from weightport.io import hf_config, safetensors
from weightport.io.atomic import atomic_output

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kilobytes and copy_file_range: Linux")

MB = 2**20
# What a conversion may add to the tiny one's peak: the runtime holds a few blocks of 8 MB per worker (2 workers),
# or a mapped input of at most 64 MB (the inputs transposed through a map here are 8 MB). Measured: about 25 MB.
BOUND = 100 * MB
# One layer whose MLP tensors are 210 MB each (bf16 [51200, 2048]): gate and up are concatenated on import and split
# on export by byte moves; down is transposed (in bands of columns on import, in blocks of rows on export).
BIG = synth.tiny_llama(hidden_size=2048, intermediate_size=51200, num_hidden_layers=1, vocab_size=256,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, dtype="bfloat16")
TINY = synth.tiny_llama(dtype="bfloat16")

# Run the command given as arguments, print its peak resident memory (kilobytes), exit with its exit code.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def write_bf16(folder: Path, config: dict) -> Path:
    """An HF checkpoint of `config` in bf16, its values one random block repeated (quick to write, in little
    memory)."""
    refs = synth.hf_tensors(config)
    block = np.random.default_rng(0).integers(0, 2**16, 2**22, dtype=np.uint16)
    outputs = [safetensors.OutputTensor(r.name, "BF16", r.shape) for r in refs]
    with atomic_output(folder) as tmp:
        with safetensors.ShardedWriter(tmp, outputs, max_shard_bytes=None, shard_names=safetensors.hf_shard_names,
                                       metadata={"format": "pt"}) as writer:
            for ref in refs:
                count, at = math.prod(ref.shape), 0
                while at < count:
                    piece = block[: min(count - at, len(block))]
                    writer.write(ref.name, piece, at * 2)
                    at += len(piece)
            writer.close()
        safetensors.write_hf_index(tmp, writer)
        hf_config.write_config(tmp / "config.json", config)
    return folder


def peak_convert(src: Path, dst: Path) -> int:
    """Peak resident bytes of `weightport convert SRC DST` in a fresh process; the output is checked and removed."""
    command = [sys.executable, "-m", "weightport", "convert", str(src), str(dst), "--quiet"]
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert sum(f.stat().st_size for f in dst.glob("*.safetensors")) >= sum(
        f.stat().st_size for f in src.glob("*.safetensors")) - MB
    shutil.rmtree(dst)
    return int(result.stdout.split()[-1]) * 1024


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"hf": ..., "native": ...} folders of the big and of the tiny model (the native ones written in process)."""
    root = tmp_path_factory.mktemp("memory")
    out = {}
    for size, config in (("big", BIG), ("tiny", TINY)):
        hf = write_bf16(root / size / "hf", config)
        weightport.convert(hf, root / size / "native")
        out[size] = {"hf": hf, "native": root / size / "native"}
    yield out
    shutil.rmtree(root)  # about 1.3 GB


def test_the_checkpoint_is_larger_than_the_bound_and_so_are_its_moved_and_transposed_tensors(checkpoints):
    """The test below means something: the model is several times the bound, and whole tensors of each kind of step
    (byte moves, large transposes) exceed it, in both directions."""
    for side in ("hf", "native"):
        plan = weightport.plan(checkpoints["big"][side])
        assert sum(f.stat().st_size for f in checkpoints["big"][side].glob("*.safetensors")) > 6 * BOUND
        moved = [s for s in plan.steps if runtime.moves(s, plan.direction) is not None]
        transposed = [s for s in plan.steps if s.op == "transpose"]
        assert max(runtime.nbytes(r) for s in moved for r in s.src + s.dst) >= 2 * BOUND
        assert max(runtime.nbytes(r) for s in transposed for r in s.src + s.dst) >= 2 * BOUND


@pytest.mark.parametrize("side", ["hf", "native"], ids=["hf_to_native", "native_to_hf"])
def test_peak_memory_of_a_conversion_does_not_grow_with_the_model_or_its_largest_tensor(checkpoints, side,
                                                                                        tmp_path):
    baseline = peak_convert(checkpoints["tiny"][side], tmp_path / "tiny")
    peak = peak_convert(checkpoints["big"][side], tmp_path / "big")
    assert peak - baseline < BOUND, (f"peak {peak / MB:.0f} MB, {(peak - baseline) / MB:.0f} MB above the tiny "
                                     f"conversion's {baseline / MB:.0f} MB; bound {BOUND / MB:.0f} MB")
