"""Execute a plan: read each step's source tensors, apply its ops, hand the results to the writer.

Memory holds one step's tensors at a time. A step that only renames a tensor is handed to `copy`, which moves
bytes file to file without building a tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from weightport.core import ops
from weightport.core.plan import Plan, Ref, Step, _part_sizes


def is_copy(step: Step) -> bool:
    """True when the step only renames one tensor and keeps its dtype."""
    return (len(step.src) == len(step.dst) == 1 and not step.binding.ops and step.src[0].dtype == step.dst[0].dtype)


def run(plan: Plan, read: Callable[[Ref], torch.Tensor], write: Callable[[Ref, torch.Tensor], None],
        copy: Callable[[Ref, Ref], None] | None = None, progress: Callable[[Step], None] | None = None) -> None:
    """Run every step of `plan` in order."""
    for step in plan.steps:
        if copy is not None and is_copy(step):
            copy(step.src[0], step.dst[0])
        else:
            tensors = [read(ref) for ref in step.src]
            b = step.binding
            if plan.direction == "from_hf":
                outputs = [ops.to_native(b.ops, b.dim, tensors)]
            else:
                outputs = ops.to_hf(b.ops, b.dim, tensors[0], _part_sizes(b, step.src[0].shape) or [])
            del tensors
            for ref, tensor in zip(step.dst, outputs):
                write(ref, tensor)
        if progress is not None:
            progress(step)
