"""A conversion split across the processes of a torch.distributed job (`torchrun`, a scheduler, or a training job's
own processes).

Every process plans the whole conversion from the headers, so each finds the same coverage problems before anything
is written. The output files are dealt out so that each process writes whole files of its own, balanced by bytes;
the files themselves are laid out as a single process lays them out, so the output is byte-identical. The first
process makes the temporary folder, and once every process has written its files, writes the index and metadata and
moves the folder into place. After each phase the processes agree: if one failed, every process raises (its own
error where it failed, a `ProcessError` naming the process that failed elsewhere) and the folder is removed.

Coordination goes through a gloo process group (the default group when it is gloo, else one made for this), so a
job whose default group is NCCL needs no GPU for it. torch is imported only when a job is running.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from weightport.errors import WeightportError


class ProcessError(WeightportError):
    """Another process of the job failed, or could not be reached (`lost`): the conversion stops in every process
    and writes nothing."""

    def __init__(self, message: str, lost: bool = False):
        super().__init__(message)
        self.lost = lost


def start_from_environment() -> Group | None:
    """Join the job `torchrun` (or a scheduler with the same variables: WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT)
    started this process in, with a gloo process group; None when it started one process or none. For the command
    line; a program that initialized torch.distributed itself needs nothing (see `current`)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return current()


def stop() -> None:
    """Leave the process group `start_from_environment` joined."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Group:
    """This process's place in the job (`rank` of `size`) and the gloo group the processes coordinate through.
    Values travel as JSON (no pickle); a collective that fails because a process is gone raises ProcessError."""

    rank: int
    size: int
    handle: Any

    def _collective(self, action: Callable[[Any, Any], object]) -> object:
        import torch
        import torch.distributed as dist

        try:
            return action(torch, dist)
        except RuntimeError as err:  # gloo: a peer closed its connection or timed out
            raise ProcessError(f"process {self.rank} of {self.size} lost contact with the other processes of the "
                               f"job (one was stopped, or its host failed); nothing is written: {err}",
                               lost=True) from err

    def share(self, value: object) -> object:
        """The first process's `value` (JSON), on every process (a collective: every process calls it)."""
        def action(torch, dist):  # noqa: ANN001, ANN202
            data = torch.tensor(list(json.dumps(value).encode()) if self.rank == 0 else [], dtype=torch.uint8)
            size = torch.tensor([data.numel()], dtype=torch.int64)
            dist.broadcast(size, src=0, group=self.handle)
            data = data if self.rank == 0 else torch.empty(int(size), dtype=torch.uint8)
            dist.broadcast(data, src=0, group=self.handle)
            return json.loads(bytes(data.tolist()).decode())

        return self._collective(action)

    def gather(self, value: object) -> list:
        """Every process's `value` (JSON), by rank, on every process (a collective)."""
        def action(torch, dist):  # noqa: ANN001, ANN202
            data = torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8)
            sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
            dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64), group=self.handle)
            longest = max(int(n) for n in sizes)
            padded = torch.zeros(longest, dtype=torch.uint8)
            padded[: data.numel()] = data
            out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.size)]
            dist.all_gather(out, padded, group=self.handle)
            return [json.loads(bytes(o[: int(n)].tolist()).decode()) for o, n in zip(out, sizes)]

        return self._collective(action)

    def agree(self, error: BaseException | None, phase: str) -> None:
        """Tell every process whether this one's part of `phase` failed (a collective). Returns when none failed;
        else re-raises `error` where it is set, and raises ProcessError naming the first process that failed
        elsewhere."""
        said = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        failed = [(rank, text) for rank, text in enumerate(said) if text is not None]
        if not failed:
            return
        if error is not None:
            raise error
        rank, text = failed[0]
        raise ProcessError(f"process {rank} of {self.size} failed while {phase}, so every process stops and nothing "
                           f"is written: {text}")

    def together(self, phase: str, work: Callable[[], object]) -> object:
        """Run `work` here, then agree on it (see `agree`): its result when every process succeeded."""
        try:
            result = work()
        except Exception as err:
            self.agree(err, phase)
            raise
        self.agree(None, phase)
        return result

    def send_folder(self, folder: Path | BaseException) -> None:
        """From the first process: the temporary output folder, or why it could not be made (a collective)."""
        self.share({"folder": str(folder)} if isinstance(folder, Path)
                   else {"error": f"{type(folder).__name__}: {folder}"})

    def receive_folder(self) -> Path:
        """On the other processes: the folder `send_folder` sent; raises ProcessError if the first one failed."""
        said = self.share(None)
        if "error" in said:
            raise ProcessError(f"process 0 of {self.size} could not make the output folder, so every process stops: "
                               f"{said['error']}")
        return Path(said["folder"])


_GLOO: dict[int, Any] = {}


def current() -> Group | None:
    """This process's group when torch.distributed is initialized with more than one process, else None (torch is
    not imported for this)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    if dist.get_backend() == "gloo":
        handle = None
    else:  # new_group is a collective: every process of the job reaches it in the same conversion
        key = id(dist.group.WORLD)
        if key not in _GLOO:
            _GLOO[key] = dist.new_group(backend="gloo")
        handle = _GLOO[key]
    return Group(dist.get_rank(), dist.get_world_size(), handle)


def deal(sizes: dict[str, int], processes: int) -> dict[str, int]:
    """The process that writes each file: the largest file first to the process with the fewest bytes so far (the
    lowest rank among equals), so every process gets whole files and the bytes are balanced within one file's size.
    Deterministic: every process computes the same."""
    load = [0] * processes
    owner = {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        rank = min(range(processes), key=lambda r: (load[r], r))
        owner[name] = rank
        load[rank] += sizes[name]
    return owner


class Stopped(SystemExit):
    """A signal that ends a process (SIGTERM from a job scheduler or torchrun, SIGHUP from a closed terminal), raised
    in the main thread so that what the process was writing is removed on the way out, as after Ctrl-C. Its exit code
    is the shell's for that signal (128 + its number: 143, 129)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextmanager
def stop_on_signals(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM and SIGHUP raise `Stopped`, so that a process stopped from
    outside (a scheduler, torchrun stopping a job because another process failed, a closed terminal) removes what it
    wrote on its way out. A signal the process ignores stays ignored (`nohup` ignores SIGHUP: the run goes on when
    the terminal closes). Elsewhere than in the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in signums
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


PROGRESS = ".progress-{rank}"  # in the temporary output folder; removed before it moves into place


@contextmanager
def relay_progress(group: Group, steps: tuple, folder: Path, file_of: dict[str, str], owner: dict[str, int],
                   progress: Callable[[Any], None] | None) -> Iterator[Callable[[Any], None]]:
    """The progress callback of this process's runtime. A step is reported by one process: the one that writes the
    file of its first output (the first process for checks). Each process calls `progress` for the steps it
    reports; the first one also for the others', from a thread that reads their progress files (`PROGRESS`: one
    step index per line, appended as steps finish), so that it sees the whole job; on leaving, it reads them to the
    end and removes them."""
    index = {id(step): i for i, step in enumerate(steps)}
    lock = threading.Lock()
    mine = folder / PROGRESS.format(rank=group.rank)

    def reporter(step: Any) -> int:
        return owner[file_of[step.dst[0].name]] if step.dst else 0

    if group.rank != 0:
        def append(step: Any) -> None:
            if reporter(step) == group.rank:
                with lock:  # opened and closed each time: another host reads it (close-to-open consistency)
                    with open(mine, "a", encoding="ascii") as out:
                        out.write(f"{index[id(step)]}\n")
                    if progress is not None:
                        progress(step)

        yield append
        return

    def own(step: Any) -> None:
        if progress is not None and reporter(step) == 0:
            with lock:
                progress(step)

    read = dict.fromkeys(range(1, group.size), 0)  # rank -> bytes of its file read so far

    def drain() -> None:
        for rank, done in read.items():
            path = folder / PROGRESS.format(rank=rank)
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(done)
                text = f.read()
            complete = text[: text.rfind(b"\n") + 1]
            read[rank] = done + len(complete)
            for line in complete.split():
                with lock:
                    progress(steps[int(line)])

    stopped = threading.Event()

    def tail() -> None:
        while not stopped.wait(0.2):
            drain()

    thread = threading.Thread(target=tail, name="weightport-progress", daemon=True) if progress else None
    if thread is not None:
        thread.start()
    try:
        yield own
    finally:
        stopped.set()
        if thread is not None:
            thread.join()
            drain()
        for rank in range(group.size):
            (folder / PROGRESS.format(rank=rank)).unlink(missing_ok=True)
