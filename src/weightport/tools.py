"""Looking at checkpoints: `inspect` one, `verify` that two hold the same model (through the plan, so an HF
checkpoint and a native one compare tensor by tensor), and the logits check used by `verify --logits`."""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightport import api, families
from weightport.core import dtypes, ops, runtime, weights
from weightport.core.paths import dotted, leaves
from weightport.core.plan import Ref
from weightport.errors import FormatError, WeightportError
from weightport.io import hf_config, safetensors
from weightport.native import checkpoint as native_ckpt
from weightport.native.schema import canonical


def inspect(path: str | Path) -> dict:
    """What a checkpoint folder holds, from its config and headers: side, format, tensors, parameters, dtypes,
    size on disk, shards, the other HF files conversions carry (`carried`: tokenizer, ...; kept under `hf_files/`
    natively), and for a native checkpoint the HF format it recorded, or where it records none, as in checkpoints
    Fast-LLM saved, the `formats` that can describe its architecture."""
    path = Path(path)
    info: dict = {"path": str(path)}
    if (path / "config.json").is_file():
        config = hf_config.read_config(path / "config.json")
        tensors = safetensors.read_checkpoint(path)
        try:
            info["format"] = families.detect(config)
        except WeightportError:
            info["format"] = None
        info |= {"side": "hf", "model_type": config.get("model_type"), "architectures": config.get("architectures"),
                 "carried": [p.name for p in api.carried_files(path)]}
    elif (path / native_ckpt.METADATA).is_file():
        meta = native_ckpt.read_metadata(path)
        infos = safetensors.read_files(native_ckpt.weight_files(path, meta))
        tensors = {k.partition("/")[0]: v for k, v in infos.items() if k.partition("/")[2] == native_ckpt.SHARD}
        extras = meta["metadata"].get("weightport") or {}
        api.check_native_fits(meta, len(infos), path)
        if not extras.get("format"):
            info["formats"] = api.describing_formats(native_ckpt.model_type(meta), meta["config"]["base_model"])
        info |= {"side": "native", "format": extras.get("format"), "native_model": native_ckpt.model_type(meta),
                 "fast_llm_version": str(meta.get("fast_llm_version")),
                 "other_shards": sorted({k.partition("/")[2] for k in infos} - {native_ckpt.SHARD}),
                 "carried": [p.name for p in api.carried_files(path / api.CARRIED_FOLDER)]}
    else:
        raise api.not_a_checkpoint(path)
    parts = carried_parts(families.load(info["format"])) if info.get("format") in families.names() else []
    if parts:
        if info["side"] == "native":
            kept = api.native_carried_tensors(path, extras) or {}
        else:
            try:
                spec = families.load(info["format"])
                kept = api.hf_carried_tensors(spec, api.import_config(spec, config, tensors)[1], path) or {}
            except WeightportError:
                kept = {}
        info["carried_tensors"] = {part: [sum(1 for n in kept if n.startswith(part + ".")),
                                          sum(t.nbytes for n, t in kept.items() if n.startswith(part + "."))]
                                   for part in parts}
    files = sorted({t.file for t in tensors.values()})
    info |= {
        "tensors": len(tensors),
        "parameters": sum(math.prod(t.shape) for t in tensors.values()),
        "dtypes": dict(Counter(t.dtype for t in tensors.values()).most_common()),
        "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        "shards": [f.name for f in files],
    }
    return info


def carried_parts(spec: object) -> list[str]:
    """The HF parts a format carries unchanged (`Carry`), as an export names them."""
    return weights.carried_parts(spec.weights)


@dataclass(frozen=True)
class Difference:
    """One way two checkpoints differ: a tensor (or config field) and what differs."""

    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def native_tensors(checkpoint: api.Checkpoint) -> Iterator[tuple[str, str, np.ndarray]]:
    """Every native tensor of a checkpoint as `(name, dtype, raw array)`; HF checkpoints go through their plan."""
    maps = safetensors.Mappings()

    def read(ref: Ref, at: int, size: int) -> np.ndarray:
        return safetensors.read_range(checkpoint.tensors[ref.name], at, size)

    try:
        if checkpoint.side == "native":
            for name, info in checkpoint.tensors.items():
                yield name, info.dtype, maps.view(info)
            for name, info in (checkpoint.carried_tensors or {}).items():  # the HF parts it carries, as HF has them
                yield name, info.dtype, maps.view(info)
            return
        for step in api.plan(checkpoint, to="native").steps:
            if not step.dst:  # a tied copy: checked as a conversion checks it, not a tensor of the model
                runtime.check_copy(step, read)
                continue
            parts = [maps.view(checkpoint.tensors[ref.name]) for ref in step.src]
            b = step.binding
            yield step.dst[0].name, step.src[0].dtype, ops.to_native(b.ops, b.dim, parts)
    finally:
        maps.close()


def _records_format(path: str | Path) -> bool:
    path = Path(path)
    if (path / "config.json").is_file():
        return True
    return bool((native_ckpt.read_metadata(path)["metadata"].get("weightport") or {}).get("format"))


def open_pair(a: str | Path, b: str | Path, format_a: str | None, format_b: str | None
               ) -> tuple[api.Checkpoint, api.Checkpoint]:
    """Open both; a native checkpoint that records no format takes the other one's."""
    if format_a is None and not _records_format(a):
        second = api.open_checkpoint(b, format_b)
        return api.open_checkpoint(a, second.spec.name), second
    first = api.open_checkpoint(a, format_a)
    return first, api.open_checkpoint(b, format_b or (None if _records_format(b) else first.spec.name))


def _values(array: np.ndarray, dtype: str) -> np.ndarray:
    return dtypes.cast(np.ascontiguousarray(array), dtype, "F64").view(np.float64)


def verify(a: str | Path, b: str | Path, *, atol: float = 0.0, format_a: str | None = None,
           format_b: str | None = None) -> list[Difference]:
    """How checkpoints `a` and `b` differ as models (empty if they hold the same one): architecture, tensor names,
    and values: bit for bit by default (values in float64 when the dtypes differ), or within `atol`."""
    first, second = open_pair(a, b, format_a, format_b)
    out: list[Difference] = []
    left, right = canonical(first.config), canonical(second.config)
    mine, theirs = leaves(left, lists=True), leaves(right, lists=True)
    for path in sorted(set(mine) | set(theirs)):
        if mine.get(path) != theirs.get(path):
            out.append(Difference(f"config {dotted(path)}", f"{mine.get(path)!r} != {theirs.get(path)!r}"))
    mine = {name: (dtype, array) for name, dtype, array in native_tensors(first)}
    for name, dtype, array in native_tensors(second):
        if name not in mine:
            out.append(Difference(name, f"only in {b}"))
            continue
        my_dtype, my_array = mine.pop(name)
        if my_array.shape != array.shape:
            out.append(Difference(name, f"shape {list(my_array.shape)} != {list(array.shape)}"))
        elif my_dtype == dtype and atol == 0.0 and np.array_equal(my_array, array):
            continue
        else:
            diff = np.abs(_values(my_array, my_dtype) - _values(array, dtype))
            worst = float(np.nanmax(diff)) if diff.size else 0.0
            bad = np.argwhere(~(diff <= atol))  # NaN differences count
            if bad.size:
                where = tuple(int(i) for i in bad[0])
                out.append(Difference(name, f"max abs difference {worst:.3g}, first at index {where}"
                                            + (f" ({my_dtype} vs {dtype})" if my_dtype != dtype else "")))
    out += [Difference(name, f"only in {a}") for name in mine]
    return out


def logits(checkpoint: api.Checkpoint, seed: int = 0):  # noqa: ANN201 - a torch.Tensor
    """Logits of a checkpoint loaded with transformers (a native one is converted to HF first) on a fixed prompt.

    Needs transformers and a transformers class for the format."""
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        folder = checkpoint.path
        if checkpoint.side == "native":
            folder = Path(tmp) / "hf"
            api.convert(checkpoint, folder)
        config = hf_config.read_config(folder / "config.json")
        name = (config.get("architectures") or [""])[0]
        if not hasattr(transformers, name):
            raise FormatError(f"{folder}: transformers has no class {name!r}; --logits needs one")
        model = getattr(transformers, name).from_pretrained(folder, dtype=torch.float32).eval()
        generator = torch.Generator().manual_seed(seed)
        text = config.get("text_config", config)
        inputs = {"input_ids": torch.randint(0, text["vocab_size"], (1, 16), generator=generator)}
        with torch.no_grad():
            return model(**inputs).logits
