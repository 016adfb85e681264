"""Throughput of the in-memory conversion (`export_hf`, `import_hf`) beside the torch floor, on tensors in memory.

    python bench/stream.py                          # llama-1b (untied, 3.0 GB bf16) and mixtral, on the CPU
    python bench/stream.py --shapes mixtral --runs 5 --device cuda

The model's native tensors are made in memory (random bf16, the shapes of `bench/make_checkpoint.py`). Each run
streams every tensor through `export_hf` (native -> HF), then the HF tensors through `import_hf` (HF -> native),
dropping each output as it comes, as a trainer handing weights to an engine would. The floor does the same work
directly in torch, with none of weightport's bookkeeping: the same splits and reshapes as views, and only the copies
no layout avoids (a concatenation of K and V, of gate and up, of experts; a transpose made contiguous). Throughput is
the input bytes over the best run's time; `copied` counts the output bytes that share no storage with any input,
which must be exactly those of concatenations and transposes. Peak RSS is the process's (the model included).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from make_checkpoint import config as shape_config  # noqa: E402

import weightport  # noqa: E402
from weightport import api, families  # noqa: E402
from weightport.core import ops  # noqa: E402
from weightport.core.plan import _part_sizes, choose  # noqa: E402
from weightport.core.weights import walk  # noqa: E402
from weightport.native.model import parameters  # noqa: E402


def model(shape: str, device: str) -> tuple[dict, dict, str, dict]:
    """(HF config, native config mapping, format, native tensors) of a random bf16 model of `shape`."""
    hf = shape_config(shape) | {"tie_word_embeddings": False}
    fmt = families.detect(hf)
    spec = families.load(fmt)
    native = api.import_config(spec, hf)[1]
    torch.manual_seed(0)
    tensors = {name: torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(0, 0.05)
               for name, shape in parameters(native).items()}
    return hf, {"base_model": native}, fmt, tensors


def floor_steps(fmt: str, native: dict) -> list[tuple]:
    """Per native tensor `(native name, HF names, split sizes, dim, transposes, HF shapes)`, from the plan's
    bindings: the floor runs these with plain torch calls."""
    spec = families.load(fmt)
    config = native["base_model"]
    inventory = parameters(config)
    bindings = choose([b for b in walk(spec.weights, config) if b.native in inventory])[0]
    steps = []
    for b in bindings:
        shape = inventory[b.native]
        sizes = _part_sizes(b, shape) or [shape[b.dim]]
        hf_shapes = [ops.hf_shape(b.ops, shape[:b.dim] + (s,) + shape[b.dim + 1:]) for s in sizes]
        steps.append((b.native, b.hf, sizes, b.dim, any(isinstance(op, ops.T) for op in b.ops), hf_shapes))
    return steps


def floor_export(steps: list[tuple], native: dict) -> None:
    for name, hf, sizes, dim, transposes, hf_shapes in steps:
        tensor = native[name]
        parts = tensor.split(sizes, dim) if len(sizes) > 1 else (tensor,)
        for part, shape in zip(parts, hf_shapes):
            if transposes:
                part = part.transpose(-2, -1).reshape(shape).contiguous()
            del part


def floor_import(steps: list[tuple], hf: dict) -> None:
    for name, names, sizes, dim, transposes, hf_shapes in steps:
        parts = [hf[n] for n in names]
        if transposes:
            parts = [p.reshape(-1, p.shape[-1]).transpose(-2, -1) if p.dim() > 2 else p.transpose(-2, -1)
                     for p in parts]
        out = torch.cat(parts, dim) if len(parts) > 1 else parts[0].contiguous()
        del out


def ours(stream, inputs: dict) -> tuple[int, int]:
    """Consume a stream; (output bytes, output bytes sharing no storage with an input)."""
    storages = {t.untyped_storage().data_ptr() for t in inputs.values()}
    total = copied = 0
    for _, tensor in stream:
        size = tensor.numel() * tensor.element_size()
        total += size
        copied += size if tensor.untyped_storage().data_ptr() not in storages else 0
    return total, copied


def best(runs: int, device: str, work) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = work()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result


def expected_copies(steps: list[tuple], direction: str) -> int:
    """Bytes of the outputs that concatenate (import) or transpose (both ways): the copies no layout avoids."""
    total = 0
    for _, hf, sizes, dim, transposes, hf_shapes in steps:
        size = sum(torch.Size(s).numel() for s in hf_shapes) * 2
        total += size if transposes or (direction == "import" and len(hf) > 1) else 0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["llama-1b", "mixtral"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'shape':10} {'GB':>6} {'direction':9} {'weightport':>11} {'floor':>9} {'ratio':>6} "
          f"{'copied GB':>10} {'expected':>9}")
    for shape in args.shapes:
        hf_config, native_config, fmt, native = model(shape, args.device)
        steps = floor_steps(fmt, native_config)
        size = sum(t.numel() * t.element_size() for t in native.values())
        hf = dict(weightport.export_hf(native_config, native.items(), format=fmt))
        rows = [
            ("export", lambda: ours(weightport.export_hf(native_config, native.items(), format=fmt), native),
             lambda: floor_export(steps, native)),
            ("import", lambda: ours(weightport.import_hf(hf_config, hf.items(), format=fmt), hf),
             lambda: floor_import(steps, hf)),
        ]
        for direction, run_ours, run_floor in rows:
            floor_time, _ = best(args.runs, args.device, run_floor)
            our_time, (total, copied) = best(args.runs, args.device, run_ours)
            assert total == size, (total, size)
            print(f"{shape:10} {size / 1e9:6.2f} {direction:9} {size / our_time / 1e9:8.2f} GB/s "
                  f"{size / floor_time / 1e9:6.2f} GB/s {floor_time / our_time:6.2f} {copied / 1e9:10.3f} "
                  f"{expected_copies(steps, direction) / 1e9:9.3f}", flush=True)
        del native, hf
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GB (the models included)")


if __name__ == "__main__":
    main()
