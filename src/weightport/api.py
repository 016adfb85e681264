"""The public API: open a checkpoint of either side, plan a conversion from headers, and run it.

`plan()` reads only configs and safetensors headers; `convert()` runs the plan, streaming one step at a time
into a temporary folder that is renamed into place only when everything has been written.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


import numpy as np

from weightport import families
from weightport.core import config_rules, layouts
from weightport.core.paths import MISSING, dotted, get, leaves, put, remove
from weightport.core.plan import Plan, Ref, Step, build
from weightport.core.runtime import run
from weightport.core.spec import ModelSpec
from weightport.core.weights import walk
from weightport.errors import ConfigError, FormatError, WeightportError, report
from weightport.io import hf_config, safetensors
from weightport.io.atomic import atomic_output
from weightport.native import checkpoint as native_ckpt
from weightport.native.model import parameters
from weightport.native.schema import canonical, resolve

SIDES = ("hf", "native")
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
DTYPE_NAMES = {code: name for name, code in DTYPES.items()}
# HF config keys that describe the file or the runtime, not the model; accepted by every family.
GENERIC_HF_KEYS = frozenset({
    "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version", "dtype", "torch_dtype",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "mask_token_id",
    "decoder_start_token_id", "initializer_range", "id2label", "label2id", "return_dict", "output_attentions",
    "output_hidden_states", "torchscript", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder", "prefix",
    "pruned_heads", "task_specific_params", "finetuning_task", "tokenizer_class", "tf_legacy_loss",
    "use_bfloat16", "max_length", "min_length", "do_sample", "temperature", "top_k", "top_p", "typical_p",
    "num_beams", "num_beam_groups", "diversity_penalty", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "early_stopping", "output_router_logits_deprecated", "num_labels",
})


# Files that are weights or are rewritten; every other top-level file of an HF folder (tokenizer, generation config,
# chat template, ...) is carried unchanged, kept in the native folder under `hf_files/`.
_NOT_CARRIED = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack)$|.*\.index\.json$|^config\.json$|^\.")
CARRIED_FOLDER = "hf_files"


@dataclass
class Checkpoint:
    """A checkpoint folder of either side, opened from its config and headers (no tensor data read)."""

    side: str
    path: Path
    spec: ModelSpec
    explicit: dict  # the native config as set by rules or found on disk (sparse)
    config: dict  # the resolved native config
    tensors: dict[str, safetensors.TensorInfo]  # native names without the `/weights` suffix on the native side
    hf_config: dict | None  # the source config.json, or the one recorded in native metadata
    hf_layout: str
    notes: list[str]

    @property
    def carried(self) -> list[Path]:
        """Other files of the HF checkpoint (tokenizer, ...) that conversions carry along unchanged."""
        folder = self.path if self.side == "hf" else self.path / CARRIED_FOLDER
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and not _NOT_CARRIED.match(p.name))


def _resolve(spec: ModelSpec, explicit: dict) -> dict:
    return resolve(spec.native_model, explicit)


def import_config(spec: ModelSpec, raw: dict) -> tuple[dict, dict, str]:
    """(explicit native config, resolved native config, rotary layout) of an HF config dict."""
    normalized, layout = layouts.normalize(raw, spec.layouts)
    explicit = config_rules.from_hf(spec.hf_rules, normalized, spec.name, GENERIC_HF_KEYS)
    return explicit, _resolve(spec, explicit), layout


def export_config(spec: ModelSpec, config: dict, layout: str, original: dict | None = None) -> dict:
    """The HF config dict of a resolved native config, in `layout`. With the `original` config.json recorded at
    import, every key it had comes back, as long as the model it describes stays the same."""
    produced = _written(spec, config, layout)

    target = canonical(config)

    def same(candidate: dict) -> bool:
        try:
            return canonical(import_config(spec, candidate)[1]) == target
        except WeightportError:
            return False

    if not same(produced):
        try:
            back = import_config(spec, produced)[1]
        except WeightportError as err:
            raise ConfigError(f"{spec.name}: the exported config.json cannot be read back:\n{err}") from err
        back = canonical(back)
        diff = [f"{dotted(p)}: {v!r} comes back as {get(back, p)!r}"
                for p, v in leaves(target).items() if get(back, p, None) != v]
        raise ConfigError(report(f"{spec.name} cannot represent this native config", diff))
    if original is None:
        return produced
    normalized, original_layout = layouts.normalize(original, spec.layouts)
    if not layouts.equivalent(original_layout, layout, spec.canonical):
        original = layouts.write_layout(normalized, layout, spec.layouts, spec.canonical)
    if same(original):  # the model did not change: the recorded config.json as it was
        return copy.deepcopy(original)
    final = produced
    for path, value in leaves(original).items():
        if get(final, path) != value:
            final = _try(final, same, lambda c, p=path, v=value: put(c, p, copy.deepcopy(v)))
    for path in leaves(produced):
        if get(original, path) is MISSING:
            final = _try(final, same, lambda c, p=path: remove(c, p))
    return final


def _written(spec: ModelSpec, config: dict, layout: str) -> dict:
    return layouts.write_layout(config_rules.to_hf(spec.hf_rules, config, spec.name), layout, spec.layouts,
                                spec.canonical)


def _try(config: dict, same: Callable[[dict], bool], change: Callable[[dict], None]) -> dict:
    trial = copy.deepcopy(config)
    try:
        change(trial)
    except (AttributeError, TypeError):
        return config
    return trial if same(trial) else config


def _value_notes(spec: ModelSpec, source: dict, config: dict, layout: str) -> list[str]:
    expected = _written(spec, config, layout)
    return [
        f"config.json {dotted(p)} = {v!r} is stored natively as what {get(expected, p)!r} means; "
        "the original value is kept in the metadata and restored on export"
        for p, v in leaves(source).items()
        if get(expected, p) is not MISSING and get(expected, p) != v and not isinstance(v, (int, float))
    ]


def open_checkpoint(path: str | Path, format: str | None = None) -> Checkpoint:
    """Open an HF folder (config.json) or a native folder (metadata.yaml) from its config and headers."""
    path = Path(path)
    if (path / "config.json").is_file():
        raw = hf_config.read_config(path / "config.json")
        spec = families.load(format or families.detect(raw.get("model_type")))
        explicit, config, layout = import_config(spec, raw)
        tensors = safetensors.read_checkpoint(path)
        return Checkpoint("hf", path, spec, explicit, config, tensors, raw, layout,
                          _value_notes(spec, raw, config, layout))
    if (path / native_ckpt.METADATA).is_file():
        meta = native_ckpt.read_metadata(path)
        extras = meta["metadata"].get("weightport") or {}
        name = format or extras.get("format")
        if name is None:
            raise ConfigError(f"{path}: the native checkpoint does not record its HF format; pass --format "
                              f"(one of {', '.join(families.FAMILIES)})")
        spec = families.load(name)
        if native_ckpt.model_type(meta) != spec.native_model:
            raise ConfigError(f"{path}: native model type {native_ckpt.model_type(meta)!r} does not match format "
                              f"{name!r} (which needs {spec.native_model!r})")
        explicit = meta["config"]["base_model"]
        config = _resolve(spec, explicit)
        infos = safetensors.read_files(native_ckpt.weight_files(path, meta))
        index = meta["metadata"]["state_index"]
        problems = [f"{key} (listed in metadata.yaml under {file}) is not in that file"
                    for key, file in index.items() if key not in infos or infos[key].file.name != str(file)]
        if problems:
            raise FormatError(report(f"{path}: metadata.yaml and the safetensors files disagree", problems))
        tensors, shards = {}, set()
        for key, info in infos.items():
            name_, _, shard = key.partition("/")
            if shard == native_ckpt.SHARD:
                tensors[name_] = info
            else:
                shards.add(shard or "<none>")
        notes = [f"native shards other than weights are not converted: {', '.join(sorted(shards))}"] if shards else []
        return Checkpoint("native", path, spec, explicit, config, tensors, extras.get("hf_config"),
                          extras.get("hf_layout", spec.hf_layout), notes)
    if path.is_dir() and any(path.glob("*.bin")):
        raise FormatError(f"{path}: no config.json or {native_ckpt.METADATA}, only .bin weights. "
                          f"{safetensors.PICKLE_REFUSED}")
    raise FormatError(f"{path}: neither config.json (HF) nor {native_ckpt.METADATA} (native) found; "
                      "point to a checkpoint folder")


def plan(source: str | Path | Checkpoint, *, to: str | None = None, format: str | None = None,
         dtype: str = "auto", hf_layout: str | None = None) -> Plan:
    """Plan converting `source` to the other side (or `to`), reading only configs and file headers."""
    src = source if isinstance(source, Checkpoint) else open_checkpoint(source, format)
    to = to or ("native" if src.side == "hf" else "hf")
    if to not in SIDES or to == src.side:
        raise ConfigError(f"--to {to!r}: the source is {src.side}, so the target must be "
                          f"{'native' if src.side == 'hf' else 'hf'}")
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if hf_layout is not None and hf_layout not in layouts.NAMES:
        raise ConfigError(f"--hf-layout {hf_layout!r} is not one of {', '.join(layouts.NAMES)}")
    code = None if dtype == "auto" else DTYPES[dtype]
    notes = tuple(src.notes)
    if src.carried:
        notes += (f"carries {len(src.carried)} other file(s) unchanged: {', '.join(p.name for p in src.carried)}",)
    bindings = walk(src.spec.weights, src.config)
    inventory = parameters(src.config)
    sources = {name: Ref(name, info.shape, info.dtype) for name, info in src.tensors.items()}
    if to == "native":
        extras = {"format": src.spec.name, "hf_layout": src.hf_layout, "hf_config": src.hf_config}
        config = {"base_model": src.explicit, "model": src.spec.native_model, "weightport": extras}
        return build(src.spec.name, "from_hf", bindings, inventory, sources, code, config, notes)
    layout = hf_layout or src.hf_layout
    out = build(src.spec.name, "to_hf", bindings, inventory, sources, code, {}, notes)
    config = export_config(src.spec, src.config, layout, src.hf_config)
    dtypes = {ref.dtype for step in out.steps for ref in step.dst}
    keys = [k for k in ("dtype", "torch_dtype") if k in (src.hf_config or {"dtype": None})]
    if len(dtypes) == 1 and dtypes <= set(DTYPE_NAMES):  # else (mixed dtypes) the recorded value stays
        config.update(dict.fromkeys(keys, DTYPE_NAMES[dtypes.pop()]))
    return Plan(out.family, out.direction, out.steps, config, out.notes)


class _Inputs:
    """The runtime's source: the tensors of the input files, memory-mapped."""

    def __init__(self, tensors: dict[str, safetensors.TensorInfo]):
        self.tensors, self.maps = tensors, safetensors.Mappings()

    def view(self, ref: Ref) -> np.ndarray:
        return self.maps.view(self.tensors[ref.name])

    def read_range(self, ref: Ref, offset: int, size: int) -> np.ndarray:
        return safetensors.read_range(self.tensors[ref.name], offset, size)

    def read_block(self, ref: Ref, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        return safetensors.read_block(self.tensors[ref.name], rows, cols)

    def release(self, ref: Ref) -> None:
        self.maps.release(self.tensors[ref.name])


class _Outputs:
    """The runtime's sink: the shard writer (native names get the `/weights` suffix)."""

    def __init__(self, writer: safetensors.ShardedWriter, inputs: _Inputs, suffix: str):
        self.writer, self.inputs, self.suffix = writer, inputs, suffix

    def write(self, ref: Ref, array: np.ndarray, offset: int = 0) -> None:
        self.writer.write(ref.name + self.suffix, array, offset)

    def write_block(self, ref: Ref, array: np.ndarray, at: tuple[int, int]) -> None:
        self.writer.write_block(ref.name + self.suffix, array, at)

    def move(self, src: Ref, src_offset: int, dst: Ref, dst_offset: int, size: int) -> None:
        self.writer.copy(dst.name + self.suffix, self.inputs.tensors[src.name], src_offset, dst_offset, size)


def convert(source: str | Path | Checkpoint, destination: str | Path, *, to: str | None = None,
            format: str | None = None, dtype: str = "auto", hf_layout: str | None = None,
            max_shard_size: int | None = None, overwrite: bool = False, workers: int = 2,
            progress: Callable[[Step], None] | None = None) -> Plan:
    """Convert a checkpoint folder; the destination appears only when complete. Returns the plan it ran."""
    src = source if isinstance(source, Checkpoint) else open_checkpoint(source, format)
    the_plan = plan(src, to=to, dtype=dtype, hf_layout=hf_layout)
    to_native = the_plan.direction == "from_hf"
    suffix = f"/{native_ckpt.SHARD}" if to_native else ""
    outputs = [safetensors.OutputTensor(ref.name + suffix, ref.dtype, ref.shape)
               for step in the_plan.steps for ref in step.dst]
    names = native_ckpt.shard_names if to_native else safetensors.hf_shard_names
    with atomic_output(Path(destination), overwrite=overwrite) as tmp:
        with safetensors.ShardedWriter(tmp, outputs, max_shard_bytes=max_shard_size, shard_names=names,
                                       metadata={"format": "pt"}) as writer:
            inputs = _Inputs(src.tensors)
            try:
                run(the_plan, inputs, _Outputs(writer, inputs, suffix), workers=workers, progress=progress)
            finally:
                inputs.maps.close()
            writer.close()
        carried_to = tmp / CARRIED_FOLDER if to_native and src.carried else tmp
        carried_to.mkdir(exist_ok=True)
        for file in src.carried:
            shutil.copyfile(file, carried_to / file.name)
        if to_native:
            meta = native_ckpt.metadata(src.explicit, src.spec.native_model, writer.weight_map,
                                        the_plan.config["weightport"])
            native_ckpt.write_metadata(tmp, meta)
            (tmp / "ok").touch()
        else:
            safetensors.write_hf_index(tmp, writer)
            hf_config.write_config(tmp / "config.json", the_plan.config)
    return the_plan


__all__ = ["Checkpoint", "convert", "export_config", "import_config", "open_checkpoint", "plan"]

