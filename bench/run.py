"""Time `weightport convert` both ways against `cp -r` of the same checkpoint, in rounds that run each command once
in a rotating order, and report medians, the ratio to `cp`, and peak RSS; optionally the naive transformers
load-and-save path for reference, and the same conversions split across processes under torchrun.

    python bench/run.py llama-1b --runs 5 [--transformers] [--dtype float32] [--workdir /tmp/weightport-bench]
    python bench/run.py llama-8b --runs 3 --processes 1 2      # also both ways with 2 processes (torchrun)

Not part of the test suite. Checkpoints come from bench/make_checkpoint.py and are kept in the work folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAIVE = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
model.save_pretrained(sys.argv[2])
"""


def timed(command: list[str]) -> tuple[float, int]:
    """Wall time in seconds and peak RSS in bytes of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if status:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", help="a shape of bench/make_checkpoint.py (llama-1b, llama-8b, mixtral, ...)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/weightport-bench"))
    parser.add_argument("--dtype", default="auto", help="--dtype passed to weightport convert")
    parser.add_argument("--workers", default="2", help="--workers passed to weightport convert")
    parser.add_argument("--transformers", action="store_true", help="also time from_pretrained + save_pretrained")
    parser.add_argument("--processes", type=int, nargs="+", default=[1],
                        help="process counts to time both directions with (torchrun for more than 1)")
    args = parser.parse_args()

    # Byte-compile the package first, as `pip install` does: an editable install on a machine that sets
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module again in every timed run.
    import weightport

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(weightport.__file__).parent)], check=True)
    source = args.workdir / args.shape / "hf"
    if not source.is_dir():
        subprocess.run([sys.executable, str(HERE / "make_checkpoint.py"), args.shape, str(source)], check=True)
    size = sum(f.stat().st_size for f in source.iterdir())
    out = args.workdir / args.shape / "out"
    weightport = [sys.executable, "-m", "weightport", "convert"]
    options = ["--dtype", args.dtype, "--workers", args.workers]
    # The native source of "native -> hf" is made once, untimed, in the source dtype: every timed command then
    # reads a checkpoint that no other timed command wrote, and with --dtype both directions cast.
    native = args.workdir / args.shape / "native"
    subprocess.run([*weightport, str(source), str(native), "--overwrite", "--quiet"], check=True)
    commands = {"cp -r": ["cp", "-r", str(source), str(out)]}
    for n in args.processes:
        launch = weightport if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                            f"--nproc-per-node={n}", "-m", "weightport", "convert"]
        label = "" if n == 1 else f" ({n} processes)"
        commands[f"hf -> native{label}"] = [*launch, str(source), str(out), *options]
        commands[f"native -> hf{label}"] = [*launch, str(native), str(out), *options]
    if args.transformers:
        commands["transformers load+save"] = [sys.executable, "-c", NAIVE, str(source), str(out)]
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    names = list(commands)
    for run in range(args.runs):
        # One run of each per round, in an order rotated every round, so that no command always follows the same
        # one (the page cache and writeback of the previous command's output weigh on the next).
        for name in names[run % len(names) :] + names[: run % len(names)]:
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(["sync"], check=True)
            results[name].append(timed(commands[name]))
        print(f"round {run + 1}: " + ", ".join(f"{n} {r[-1][0]:.2f}s" for n, r in results.items()), file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)
    floor = statistics.median(t for t, _ in results["cp -r"])
    print(f"{args.shape}: {size / 1e9:.2f} GB, {args.runs} rounds, dtype {args.dtype}, "
          f"{args.workers} workers")
    print(f"{'':<30} {'median s':>9} {'x cp':>6} {'GB/s':>6} {'peak RSS MB':>12}")
    for name, samples in results.items():
        median = statistics.median(t for t, _ in samples)
        rss = max(r for _, r in samples) / 2**20
        print(f"{name:<30} {median:>9.2f} {median / floor:>6.2f} {size / median / 1e9:>6.2f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
