"""Execute a plan: move or transform each step's bytes from a source to a sink, on a small pool of threads.

Most steps only rename or concatenate tensors along their first dimension: their output is the input bytes laid
end to end, so they run as file-to-file byte moves and never build an array (casts run the same way, chunk by
chunk). Other steps (transposes) read memory-mapped inputs through numpy views and write the output slab by slab,
copying in cache-sized tiles; large 2-D transposes go by bands or blocks of a few MB instead, so memory stays
bounded by a block, not by the tensor or the model. Workers overlap reading, computing and writing; byte moves,
tile copies and writes release the GIL. Check steps (a tied copy and its original) read both chunk by chunk and
write nothing; they come first in a plan, so a copy that differs stops the run early.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Protocol

import numpy as np

from weightport.core import dtypes, ops
from weightport.core.plan import Plan, Ref, Step, _part_sizes, not_a_copy
from weightport.errors import CoverageError

CHUNK = 8 * 2**20  # bytes per piece of a chunked cast, on its wider side


class Source(Protocol):
    def view(self, ref: Ref) -> np.ndarray:
        """The whole tensor as a raw array (unsigned ints of the dtype's width), shaped; may be memory-mapped."""

    def read_range(self, ref: Ref, offset: int, size: int) -> np.ndarray:
        """`size` bytes of the tensor from byte `offset`, as uint8."""

    def read_block(self, ref: Ref, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """A block of rows and columns of a 2-D tensor as a raw array."""

    def release(self, ref: Ref) -> None:
        """Let go of the pages of the tensor that `view` made resident."""


class Sink(Protocol):
    def write(self, ref: Ref, array: np.ndarray, offset: int = 0) -> None:
        """Write a contiguous array's bytes into the tensor at byte `offset`."""

    def write_block(self, ref: Ref, array: np.ndarray, at: tuple[int, int]) -> None:
        """Write a 2-D array into a 2-D output tensor from row `at[0]`, column `at[1]`."""

    def move(self, src: Ref, src_offset: int, dst: Ref, dst_offset: int, size: int) -> None:
        """Copy `size` bytes of a source tensor straight into an output tensor."""


def nbytes(ref: Ref) -> int:
    return math.prod(ref.shape) * dtypes.SIZES[ref.dtype]


def moves(step: Step, direction: str) -> list[tuple[Ref, Ref, int, int, int]] | None:
    """The step as element ranges `(src, dst, src element, dst element, count)`, or None if it needs compute (or is a
    check, which writes nothing)."""
    if not step.dst or not ops.keeps_bytes(step.binding.ops, step.binding.dim):
        return None
    out, at = [], 0
    if direction == "from_hf":
        for src in step.src:
            count = math.prod(src.shape)
            out.append((src, step.dst[0], 0, at, count))
            at += count
    else:
        for dst in step.dst:
            count = math.prod(dst.shape)
            out.append((step.src[0], dst, at, 0, count))
            at += count
    return out


def _chunks(count: int, width: int) -> Iterator[tuple[int, int]]:
    size = max(1, CHUNK // width)
    for start in range(0, count, size):
        yield start, min(size, count - start)


SLAB = 2**20  # output bytes per slab of a transform (small slabs keep tile copies in cache)
TILE_ROWS, TILE_COLUMNS = 256, 64  # shape of a tile of a strided copy
RELEASE = 16 * 2**20  # output bytes between two releases of the mapped inputs
# Inputs larger than this are transposed a band or block at a time with reads instead of through a memory map: the
# kernel maps pages around every fault (fault-around), so a transposed walk over a map makes the whole tensor
# resident.
BLOCKS_ABOVE = 64 * 2**20
BLOCK = 8 * 2**20  # input bytes per band or block of such a transpose


def _segments(step: Step, direction: str, source: Source) -> list[tuple[Ref, list[tuple[int, np.ndarray]]]]:
    """For each output tensor, `(first row, view)` pieces in output layout, over the (mapped) inputs."""
    b = step.binding
    if direction == "from_hf":
        parts = [ops.to_native(b.ops, 0, [source.view(ref)]) for ref in step.src]
        if len(parts) > 1 and b.dim % parts[0].ndim != 0:
            return [(step.dst[0], [(0, np.concatenate(parts, b.dim))])]
        rows = [0, *np.cumsum([p.shape[0] for p in parts])[:-1]]
        return [(step.dst[0], list(zip(rows, parts)))]
    pieces = ops.to_hf(b.ops, b.dim, source.view(step.src[0]), _part_sizes(b, step.src[0].shape) or [])
    return [(dst, [(0, piece)]) for dst, piece in zip(step.dst, pieces)]


def _transposes(step: Step, direction: str) -> list[tuple[Ref, int, Ref, tuple[int, int]]] | None:
    """A step made only of 2-D transposes, as `(output, first output row, input, input rows)` blocks: output rows
    from there on are the input block's columns. None for any other step."""
    b = step.binding
    if b.ops != (ops.T(),) or b.dim != 0 or any(len(ref.shape) != 2 for ref in step.src + step.dst):
        return None
    if max(nbytes(ref) for ref in step.src) <= BLOCKS_ABOVE:  # small enough to map whole: faster
        return None
    if direction == "from_hf":
        firsts = [0, *np.cumsum([ref.shape[1] for ref in step.src])[:-1]]
        return [(step.dst[0], int(first), ref, (0, ref.shape[0])) for first, ref in zip(firsts, step.src)]
    bounds = [0, *np.cumsum(_part_sizes(b, step.src[0].shape) or [])]
    return [(dst, 0, step.src[0], (int(a), int(z))) for dst, a, z in zip(step.dst, bounds, bounds[1:])]


def _run_transposes(blocks: list[tuple[Ref, int, Ref, tuple[int, int]]], source: Source, sink: Sink) -> None:
    """Transpose large 2-D blocks about BLOCK bytes at a time, whatever the tensor, with calls in proportion to its
    smaller side: an input with fewer rows than columns is read in bands of columns (one read per input row) and
    written as whole output rows; one with more rows is read in blocks of whole rows (one read) and written as
    blocks of output columns (one call, through a map)."""
    for dst, first, src, (top, bottom) in blocks:
        rows, columns, width = bottom - top, src.shape[1], dtypes.SIZES[src.dtype]
        if rows <= columns:
            band = max(1, BLOCK // max(rows * width, 1))
            for start in range(0, columns, band):
                end = min(start + band, columns)
                piece = _cast(contiguous(source.read_block(src, (top, bottom), (start, end)).T), src, dst)
                sink.write(dst, piece, (first + start) * dst.shape[1] * dtypes.SIZES[dst.dtype])
            continue
        block = max(1, BLOCK // max(columns * width, 1))
        for start in range(top, bottom, block):
            end = min(start + block, bottom)
            piece = _cast(contiguous(source.read_block(src, (start, end), (0, columns)).T), src, dst)
            sink.write_block(dst, piece, (first, start - top))


def _cast(piece: np.ndarray, src: Ref, dst: Ref) -> np.ndarray:
    return piece if src.dtype == dst.dtype else dtypes.cast(piece, src.dtype, dst.dtype)


def contiguous(view: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a (strided) view, copied tile by tile over its last two axes so both stay in cache.
    Tiles are narrow: a transposed view's last axis walks input rows, often a power of two apart, and the cache
    holds only a few lines that far apart (64 columns copy twice as fast as 256 from a mapped bf16 matrix)."""
    if view.flags.c_contiguous:
        return view
    out = dtypes.empty(view.shape, view.dtype)
    if view.ndim < 2:
        out[...] = view
        return out
    rows, columns = view.shape[-2:]
    for index in np.ndindex(view.shape[:-2]):
        src, dst = view[index], out[index]
        for top in range(0, rows, TILE_ROWS):
            for left in range(0, columns, TILE_COLUMNS):
                tile = np.s_[top : top + TILE_ROWS, left : left + TILE_COLUMNS]
                dst[tile] = src[tile]
    return out


def check_copy(step: Step, read: Callable[[Ref, int, int], np.ndarray]) -> None:
    """Check a check step's tied copy `step.src[0]` bit-equal to its original `step.src[1]` (same shape and dtype),
    reading both `CHUNK` bytes at a time with `read(ref, byte offset, size)` (a `Source.read_range`). Raises
    CoverageError naming both tensors and the first element that differs."""
    copy, original = step.src
    width = dtypes.SIZES[copy.dtype]
    for start, count in _chunks(math.prod(copy.shape), width):
        a, b = (read(ref, start * width, count * width).view(dtypes.raw(copy.dtype)) for ref in (copy, original))
        if not np.array_equal(a, b):
            where = [int(i) for i in np.unravel_index(start + int(np.argmax(a != b)), copy.shape)]
            raise CoverageError(not_a_copy(copy.name, original.name, f"first at element {where}"))


def run_step(step: Step, direction: str, source: Source, sink: Sink) -> None:
    """Run one step: a check, byte moves when the layout allows, chunked casts, else a slab-wise transform."""
    if not step.dst:
        check_copy(step, source.read_range)
        return
    plan_moves = moves(step, direction)
    if plan_moves is not None:
        for src, dst, src_at, dst_at, count in plan_moves:
            src_width, dst_width = dtypes.SIZES[src.dtype], dtypes.SIZES[dst.dtype]
            if src.dtype == dst.dtype:
                sink.move(src, src_at * src_width, dst, dst_at * dst_width, count * src_width)
                continue
            for start, size in _chunks(count, max(src_width, dst_width)):
                piece = source.read_range(src, (src_at + start) * src_width, size * src_width)
                sink.write(dst, dtypes.cast(piece.view(dtypes.raw(src.dtype)), src.dtype, dst.dtype),
                           (dst_at + start) * dst_width)
        return
    blocks = _transposes(step, direction)
    if blocks is not None:
        _run_transposes(blocks, source, sink)
        return
    since_release = 0
    for dst, segments in _segments(step, direction, source):
        row_bytes = math.prod(dst.shape[1:]) * dtypes.SIZES[dst.dtype]
        step_rows = max(1, SLAB // max(row_bytes, 1))
        for first, view in segments:
            view = view.reshape(1) if view.ndim == 0 else view
            for start in range(0, view.shape[0], step_rows):
                piece = contiguous(view[start : start + step_rows])
                if dst.dtype != step.src[0].dtype:
                    piece = dtypes.cast(piece, step.src[0].dtype, dst.dtype)
                sink.write(dst, piece, (first + start) * row_bytes)
                since_release += piece.nbytes
                if since_release >= RELEASE:
                    for ref in step.src:
                        source.release(ref)
                    since_release = 0
    for ref in step.src:
        source.release(ref)


def run(plan: Plan, source: Source, sink: Sink, *, workers: int = 2,
        progress: Callable[[Step], None] | None = None) -> None:
    """Run every step of `plan`; the first error stops the run and is raised.

    With two or more workers, byte moves (kernel copies) and transforms (CPU) start on separate threads so that they
    overlap instead of contending for the same file; a thread whose own kind of work is done takes the other kind
    from the far end of its queue, so no core idles while work remains. Every step holds a few blocks of at most
    BLOCK or CHUNK bytes (or a mapped input below BLOCKS_ABOVE), so memory is bounded by `workers` such steps."""
    lock = threading.Lock()

    def one(step: Step) -> None:
        run_step(step, plan.direction, source, sink)
        if progress is not None:
            with lock:
                progress(step)

    if workers <= 1:
        for step in plan.steps:
            one(step)
        return
    copies = deque(s for s in plan.steps if moves(s, plan.direction) is not None and s.src[0].dtype == s.dst[0].dtype)
    copied = set(copies)
    transforms = deque(s for s in plan.steps if s not in copied)
    failed = threading.Event()

    def work(mine: deque[Step], theirs: deque[Step]) -> None:
        try:
            while not failed.is_set():
                try:
                    step = mine.popleft()  # deque pops are atomic: no lock needed
                except IndexError:
                    try:
                        step = theirs.pop()
                    except IndexError:
                        return
                one(step)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weightport") as pool:
        futures = [pool.submit(work, copies, transforms)]
        futures += [pool.submit(work, transforms, copies) for _ in range(workers - 1)]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C or a signal in this (main) thread: the workers stop after their current step
            failed.set()  # before the output they write into is removed, instead of running the plan to its end
            raise
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
