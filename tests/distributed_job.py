"""A job for tests/test_distributed.py, started by `torchrun`: conversions through the Python API in a gloo job.

    torchrun --standalone --nproc-per-node N tests/distributed_job.py OUT SRC=DST [SRC=DST ...] [--kill-rank R]

Each process records, in OUT/rank-<rank>.json, for each conversion the destination names of the steps its
`progress` saw, or the error it raised. With `--kill-rank R`, process R kills itself (SIGKILL) at its first step;
with `--fail-rank R`, an error is raised there instead (as a tensor that cannot be read or written would).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch.distributed as dist

import weightport


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("pairs", nargs="+")
    parser.add_argument("--max-shard-size", default="64KB")
    parser.add_argument("--kill-rank", type=int)
    parser.add_argument("--fail-rank", type=int)
    args = parser.parse_args()
    dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    record = []
    for pair in args.pairs:
        src, dst = pair.split("=")
        seen: list[list[str]] = []

        def progress(step: object) -> None:
            if rank == args.kill_rank:
                os.kill(os.getpid(), signal.SIGKILL)
            if rank == args.fail_rank:
                raise OSError(28, "No space left on device (injected)")
            seen.append([ref.name for ref in step.dst])

        try:
            weightport.convert(src, dst, max_shard_size=args.max_shard_size, progress=progress)
            record.append({"steps": seen})
        except Exception as err:  # the job's own failure too, as the process that failed raises it
            record.append({"error": type(err).__name__, "message": str(err)})
            break
    (args.out / f"rank-{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()
    raise SystemExit(1 if "error" in record[-1] else 0)


if __name__ == "__main__":
    main()
