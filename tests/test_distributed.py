"""Conversions split across processes with torch.distributed: 2 and 3 processes started by the real `torchrun` on
the CPU (gloo), through the command line and through the Python API (`tests/distributed_job.py`). The output is
byte-identical to one process's, progress is whole on the first process, a bad input is refused by every process,
and a process killed mid-run leaves nothing behind, after which a rerun succeeds."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import weightport
from weightport import synth

pytest.importorskip("torch.distributed.run")
JOB = Path(__file__).parent / "distributed_job.py"
SHARD = "64KB"  # a dozen output files or more, dealt out between the processes
MIXTRAL = dict(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=4, num_experts_per_tok=2)


def torchrun(processes: int, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def same_folders(a: Path, b: Path) -> None:
    """Same file names (hidden ones too) and the same bytes in each."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*"))
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*"))
    for name in names:
        if (a / name).is_file():
            assert filecmp.cmp(a / name, b / name, shallow=False), f"{name} differs"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A dense (Llama) and an MoE (Mixtral) HF checkpoint, each converted by one process both ways (the reference
    outputs), with as many output files as the shard size makes."""
    root = tmp_path_factory.mktemp("sources")
    for name, config in (("dense", synth.tiny_llama(num_hidden_layers=4, hidden_size=128, intermediate_size=256)),
                         ("moe", synth.tiny_llama(**MIXTRAL))):
        synth.write_hf(root / name / "hf", config)
        weightport.convert(root / name / "hf", root / name / "native", max_shard_size=SHARD)
        weightport.convert(root / name / "native", root / name / "back", max_shard_size=SHARD)
        assert len(list((root / name / "native").glob("*.safetensors"))) >= 6
    return root


@pytest.mark.parametrize("processes", [2, 3])
def test_api_under_torchrun_writes_what_one_process_writes(sources, processes, tmp_path):
    pairs = [f"{sources / m / a}={tmp_path / m / b}" for m in ("dense", "moe")
             for a, b in (("hf", "native"), ("native", "back"))]
    result = torchrun(processes, JOB, tmp_path, *pairs, "--max-shard-size", SHARD)
    assert result.returncode == 0, result.stderr[-3000:]
    for model in ("dense", "moe"):
        for folder in ("native", "back"):
            same_folders(tmp_path / model / folder, sources / model / folder)
        assert leftovers(tmp_path / model) == []
    records = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(processes)]
    for i, (model, direction) in enumerate((m, d) for m in ("dense", "moe") for d in ("import", "export")):
        plan = weightport.plan(sources / model / ("hf" if direction == "import" else "native"))
        every = sorted(tuple(ref.name for ref in step.dst) for step in plan.steps)
        first = sorted(tuple(names) for names in records[0][i]["steps"])
        assert first == every  # the first process sees the whole job, each step once
        others = [tuple(names) for record in records[1:] for names in record[i]["steps"]]
        assert others and set(others) < set(every) and len(others) == len(set(others))


def test_the_command_under_torchrun_writes_what_one_process_writes_and_reports_once(sources, tmp_path):
    result = torchrun(2, "-m", "weightport", "convert", sources / "moe" / "hf", tmp_path / "native",
                      "--max-shard-size", SHARD)
    assert result.returncode == 0, result.stderr[-3000:]
    same_folders(tmp_path / "native", sources / "moe" / "native")
    assert result.stdout.count("mixtral from_hf: wrote") == 1


def test_a_bad_input_is_refused_by_every_process_before_anything_is_written(sources, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").symlink_to(sources / "dense" / "hf" / "model.safetensors")
    config = json.loads((sources / "dense" / "hf" / "config.json").read_text()) | {"rope_interleaved": True}
    (bad / "config.json").write_text(json.dumps(config))
    result = torchrun(3, JOB, tmp_path, f"{bad}={tmp_path / 'out'}")
    assert result.returncode != 0
    records = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(3)]
    assert [r[0]["error"] for r in records] == ["ConfigError"] * 3
    assert all("rope_interleaved = True" in r[0]["message"] for r in records)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    cli = torchrun(2, "-m", "weightport", "convert", bad, tmp_path / "out")
    assert cli.returncode != 0 and cli.stderr.count("weightport: error:") == 1  # said once, by the first process
    assert "rope_interleaved = True" in cli.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("processes, killed", [(3, 1), (2, 0)])
def test_a_process_killed_mid_run_leaves_nothing_and_a_rerun_succeeds(sources, processes, killed, tmp_path):
    source, out = sources / "dense" / "hf", tmp_path / "native"
    result = torchrun(processes, JOB, tmp_path, f"{source}={out}", "--max-shard-size", SHARD, "--kill-rank", killed)
    assert result.returncode != 0
    assert "Signal 9 (SIGKILL)" in result.stderr or "exitcode  : -9" in result.stderr, result.stderr[-3000:]
    assert not out.exists() and leftovers(tmp_path) == []
    rerun = torchrun(processes, JOB, tmp_path, f"{source}={out}", "--max-shard-size", SHARD)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    same_folders(out, sources / "dense" / "native")


def test_a_failure_in_one_process_stops_every_process_and_leaves_nothing(sources, tmp_path):
    source, out = sources / "moe" / "native", tmp_path / "back"
    result = torchrun(3, JOB, tmp_path, f"{source}={out}", "--max-shard-size", SHARD, "--fail-rank", 2)
    assert result.returncode != 0
    records = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(3)]
    assert [r[0]["error"] for r in records] == ["ProcessError", "ProcessError", "OSError"]
    assert all(r[0]["message"].startswith("process 2 of 3 failed while writing the output files, so every process "
                                          "stops and nothing is written: OSError: [Errno 28] No space left on device")
               for r in records[:2])
    assert not out.exists() and leftovers(tmp_path) == []
