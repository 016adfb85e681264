"""The real Fast-LLM as a test oracle: run its command line, its trainer and scripts under its own Python.

Fast-LLM lives outside this project (`../shared/fastllm/`, or the wrapper named by $WEIGHTPORT_FASTLLM): its setup
script builds it once in $FASTLLM_HOME (default ~/.cache/fastllm-oracle). Tests that use it skip, saying why, where
it has not been set up. Training runs disable torch.compile (TORCH_COMPILE_DISABLE=1): Fast-LLM then trains in
eager mode, in seconds instead of a minute of compiling per run, with the same checkpoint format.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WRAPPER = Path(os.environ.get("WEIGHTPORT_FASTLLM") or REPO.parent / "shared" / "fastllm" / "fastllm")
HOME = Path(os.environ.get("FASTLLM_HOME") or Path.home() / ".cache" / "fastllm-oracle")
TRAIN_TINY = WRAPPER.parent / "train_tiny.py"
# Variants of train_tiny.py that run two processes (data, pipeline or tensor parallel).
TWO_PROCESSES = ("dp2", "pp2", "pp2tied", "tp2")
ENV = {"PYTHONHASHSEED": "0", "TORCH_COMPILE_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


def missing() -> str | None:
    """Why the oracle cannot run here, or None when it can."""
    if not WRAPPER.is_file():
        return f"the Fast-LLM oracle is not here ({WRAPPER}); set WEIGHTPORT_FASTLLM to its `fastllm` wrapper"
    if not (HOME / ".ready").is_file():
        return f"Fast-LLM is not set up in {HOME}: run {WRAPPER.parent / 'setup'} once (about 3 minutes, 5 GB)"
    return None


needs_fastllm = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def _run(args: list[str], *, python: bool = False, tf4: bool = False, cwd: Path | None = None,
         timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV}
    if python:
        env["FASTLLM_PYTHON"] = "1"
    else:
        env.pop("FASTLLM_PYTHON", None)
    command = [str(WRAPPER), *(["--tf4"] if tf4 else []), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def python(script: Path, *args: object, tf4: bool = False, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a Python script under Fast-LLM's environment (Fast-LLM importable); raises with its output on failure."""
    result = _run([str(script), *map(str, args)], python=True, tf4=tf4, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{script.name} failed under Fast-LLM:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def plain_python(script: Path, *args: object, modules_cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a Python script under Fast-LLM's Python environment (transformers as Fast-LLM pins it) without Fast-LLM
    on the path, as a user of an exported HF checkpoint has it; transformers keeps the remote code it loads in
    `modules_cache`. Raises with the script's output on failure."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ENV, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(modules_cache))
    result = subprocess.run([str(HOME / "venv" / "bin" / "python"), str(script), *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{script.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def convert_all(jobs: dict[str, list[str]], out: Path, *, tf4: bool = False) -> dict[str, str | None]:
    """Run several `fast-llm convert` commands (each a list of `key=value` arguments after `convert`) in one
    Fast-LLM process. Returns, by job name, None for success or the traceback of the failure."""
    if not jobs:
        return {}
    spec = out / ("jobs_tf4.json" if tf4 else "jobs.json")
    spec.write_text(json.dumps({"jobs": jobs, "results": str(spec.with_suffix(".results.json"))}))
    python(HERE / "fast_llm_convert.py", spec, tf4=tf4)
    return json.loads(spec.with_suffix(".results.json").read_text())


def export_args(native: Path, out: Path, format: str, model: str = "gpt") -> list[str]:
    """Arguments of Fast-LLM's export of a `fast_llm` checkpoint to an HF format."""
    return [model, f"input.path={native}", "input.format=fast_llm", f"output.path={out}", f"output.format={format}",
            "use_cpu=True"]


def import_args(hf: Path, out: Path, format: str, model: str = "gpt") -> list[str]:
    """Arguments of Fast-LLM's import of an HF checkpoint to `fast_llm`."""
    return [model, f"input.path={hf}", f"input.format={format}", f"output.path={out}", "output.format=fast_llm",
            "use_cpu=True"]


def train(variant: str, out: Path) -> Path:
    """A real 2-step Fast-LLM training run of `train_tiny.py VARIANT` (a tiny Llama on CPU; `pretrained:<dir>`
    starts from a native checkpoint); returns the `fast_llm` checkpoint it exported at the last step."""
    config = python(TRAIN_TINY, variant, out).stdout.strip().splitlines()[-1]
    if variant in TWO_PROCESSES:  # gloo, two processes, from the wrapper's folder as its docstring says
        args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "cli.py", "train", "gpt",
                "--config", config]
        result = _run(args, python=True, cwd=WRAPPER.parent)
    else:
        result = _run(["train", "gpt", "--config", config])
    if result.returncode != 0:
        raise AssertionError(f"Fast-LLM training `{variant}` failed:\n{result.stderr[-6000:]}")
    return out / "exp" / "export" / "fast_llm" / "2"
