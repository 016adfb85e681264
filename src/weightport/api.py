"""The public API: open a checkpoint of either side, plan a conversion from headers, and run it.

`plan()` reads only configs and safetensors headers; `convert()` runs the plan, streaming one step at a time
into a temporary folder that is renamed into place only when everything has been written.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path


import numpy as np

from weightport import distributed, families
from weightport.core import config_rules, layouts
from weightport.core.hf_classes import BASE_KEYS
from weightport.core.paths import MISSING, dotted, get, leaves, put, remove, split
from weightport.core.plan import Plan, Ref, Step, build
from weightport.core.runtime import nbytes, run
from weightport.core.spec import FilesDecide, ModelSpec
from weightport.core.weights import walk
from weightport.errors import ConfigError, FormatError, OutputError, SpecError, WeightportError, report
from weightport.io import hf_config, remote_code, safetensors
from weightport.io.atomic import atomic_output
from weightport.native import checkpoint as native_ckpt
from weightport.native.model import parameters
from weightport.native.schema import KINDS, FieldTypeError, block_positions, canonical, resolve

SIDES = ("hf", "native")
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
DTYPE_NAMES = {code: name for name, code in DTYPES.items()}


# Files that are weights or are rewritten; every other top-level file of an HF folder (tokenizer, generation config,
# chat template, ...) is carried unchanged, kept in the native folder under `hf_files/`.
_NOT_CARRIED = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack)$|.*\.index\.json$|^config\.json$|^\.")
CARRIED_FOLDER = "hf_files"
# The HF tensors a wrapper format carries (`Carry`: vision and audio towers, projectors) are kept natively in
# safetensors files of this name under `hf_files/`, which Fast-LLM does not read (it reads the files metadata.yaml
# lists); metadata.yaml's `metadata.weightport.carried_tensors` lists them.
CARRIED_TENSORS = "carried"


@dataclass
class Checkpoint:
    """A checkpoint folder of either side, opened from its config and headers (no tensor data read)."""

    side: str
    path: Path
    spec: ModelSpec
    explicit: dict  # the native config as set by rules or found on disk (sparse)
    config: dict  # the resolved native config
    tensors: dict[str, safetensors.TensorInfo]  # native names without the `/weights` suffix on the native side
    hf_config: dict | None  # the source config.json, the one recorded in native metadata, or the origin's
    hf_layout: str
    notes: list[str]
    carried: list[Path]  # other files of the HF checkpoint (tokenizer, ...) that conversions carry along unchanged
    origin: Origin | None = None  # the HF model a native checkpoint was trained from, where one was named
    # native side: the HF tensors kept beside the native model (`Carry`), by the names they are kept under; None where
    # the checkpoint records none (Fast-LLM saved it)
    carried_tensors: dict[str, safetensors.TensorInfo] | None = None


@dataclass(frozen=True)
class Origin:
    """The HF model a native checkpoint was trained from: an HF folder, or the native folder weightport wrote when
    it imported that model (which records the config.json and keeps the other files)."""

    path: Path
    spec: ModelSpec
    hf_config: dict
    hf_layout: str
    config: dict  # its resolved native config: the architecture a trained checkpoint must still have
    carried: list[Path]
    carried_tensors: dict[str, safetensors.TensorInfo] | None = None  # the HF tensors its format carries (`Carry`)


def carried_files(folder: Path) -> list[Path]:
    """The files of `folder` that conversions carry unchanged: all but weights, indexes, config.json, hidden files."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not _NOT_CARRIED.match(p.name))


def _resolve(spec: ModelSpec, explicit: dict) -> dict:
    return resolve(spec.native_model, explicit)


def import_config(spec: ModelSpec, raw: dict, tensors: Iterable[str] | None = None) -> tuple[dict, dict, str]:
    """(explicit native config, resolved native config, config.json layout) of an HF config dict. Absent keys take
    the defaults of the format's HF config class, as transformers gives them. `tensors` are the HF tensor names of
    the checkpoint, which decide the values a config.json leaves open (`ModelSpec.decided_by_files`: Mistral 3's
    tie in transformers 4's layout); without them such a config raises ConfigError, naming the key to set."""
    names = None if tensors is None else set(tensors)
    explicit, config, layout, _ = _import_config(spec, raw, None if names is None else lambda: names)
    return explicit, config, layout


def _import_config(spec: ModelSpec, raw: dict, tensors: Callable[[], Iterable[str]] | None = None
                   ) -> tuple[dict, dict, str, list[str]]:
    families.check(spec, raw)  # a config.json of another format of the same model_type, chosen with --format
    normalized, layout = layouts.normalize(raw, spec.layouts)
    for decided in spec.decided_by_files:
        if layout in decided.layouts and get(normalized, split(decided.hf)) is MISSING:
            normalized = copy.deepcopy(normalized)
            put(normalized, split(decided.hf), _files_decide(spec, normalized, decided, tensors))
    explicit, config, kept = _read_config(spec, normalized)
    return explicit, config, layout, kept


def _read_config(spec: ModelSpec, normalized: dict) -> tuple[dict, dict, list[str]]:
    undefined: tuple = ()
    if spec.hf_class is not None:
        undefined = tuple(spec.hf_class.undefined(normalized))
        normalized = spec.hf_class.fill(normalized)
    explicit, kept, sources = config_rules.from_hf(spec.hf_rules, normalized, spec.name, BASE_KEYS, undefined)
    try:
        config = _resolve(spec, explicit)
    except FieldTypeError as err:
        if err.path not in sources:
            raise
        raise ConfigError(f"{spec.name}: config.json {dotted(sources[err.path])} = {err.shown} should be "
                          f"{err.expected} (it sets the native {dotted(err.path)}); fix the value") from None
    return explicit, config, [dotted(k) for k in kept]


def _files_decide(spec: ModelSpec, normalized: dict, decided: FilesDecide,
                  tensors: Callable[[], Iterable[str]] | None) -> object:
    """The value of a key that config.json leaves to the checkpoint's files: whether they hold the HF tensor of
    `decided.tensor`, under any of the names the weight rules give it (read from a trial import)."""
    trial = copy.deepcopy(normalized)
    put(trial, split(decided.hf), decided.present)
    names = {h for b in walk(spec.weights, _read_config(spec, trial)[1]) if b.native == decided.tensor for h in b.hf}
    if not names:
        raise SpecError(f"{spec.name}: decided_by_files names native tensor {decided.tensor}, which no weight rule "
                        "binds")
    if tensors is None:
        raise ConfigError(
            f"{spec.name}: config.json leaves {decided.hf} to a default that transformers versions read differently "
            f"({decided.reason}), so the checkpoint's files decide it ({decided.present!r} where they hold "
            f"{' or '.join(sorted(names))}, else {decided.absent!r}), and no tensor names are given here: set "
            f"{decided.hf} in config.json")
    return decided.present if names & set(tensors()) else decided.absent


def export_config(spec: ModelSpec, config: dict, layout: str, original: dict | None = None) -> dict:
    """The HF config dict of a resolved native config, in `layout`. With the `original` config.json recorded at
    import, every key it had comes back, as long as the model it describes stays the same."""
    produced = _written(spec, config, layout)

    target = canonical(config)
    exported = lambda: _hf_names(spec, config)  # noqa: E731  (what decides a value config.json leaves open)

    def same(candidate: dict) -> bool:
        try:
            return canonical(_import_config(spec, candidate, exported)[1]) == target
        except WeightportError:
            return False

    if not same(produced):
        try:
            back = _import_config(spec, produced, exported)[1]
        except WeightportError as err:
            raise ConfigError(f"{spec.name}: the exported config.json cannot be read back:\n{err}") from err
        back = canonical(back)
        diff = [f"{dotted(p)}: {v!r} comes back as {get(back, p)!r}"
                for p, v in leaves(target).items() if get(back, p, None) != v]
        raise ConfigError(report(f"{spec.name} cannot represent this native config", diff))
    if original is None:
        return produced
    original = _in_layout(spec, original, layout)
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


def _hf_names(spec: ModelSpec, config: dict) -> set[str]:
    """The HF tensor names of the model of a resolved native config, in every naming its weight rules give."""
    inventory = parameters(config)
    return {h for b in walk(spec.weights, config) if b.native in inventory for h in b.hf}


def _in_layout(spec: ModelSpec, original: dict, layout: str) -> dict:
    normalized, original_layout = layouts.normalize(original, spec.layouts)
    if layouts.equivalent(original_layout, layout, spec.canonical):
        return original
    return layouts.write_layout(normalized, layout, spec.layouts, spec.canonical)


def not_restored(spec: ModelSpec, original: dict | None, exported: dict, layout: str, config: dict) -> list[str]:
    """The HF keys an export does not give back: those of the `original` config.json that differ or are missing in
    `exported` (dtype keys aside, which follow the output), or without an original, the keys that no field of the
    resolved native `config` gave, which the export writes with the defaults of the HF config class
    (`max_position_embeddings`, token ids, ...)."""
    if original is not None:
        original = _in_layout(spec, original, layout)
        return [dotted(p) for p, v in leaves(original).items()
                if p and p[0] not in ("dtype", "torch_dtype") and get(exported, p) != v]
    own = _written(spec, config, layout, complete=False)
    found = []
    for path in leaves(exported):
        first = next(path[:i] for i in range(1, len(path) + 1) if get(own, path[:i]) is MISSING or i == len(path))
        if get(own, first) is MISSING and first[0] not in ("transformers_version", "dtype", "torch_dtype"):
            found.append(dotted(first))
    return list(dict.fromkeys(found))


def _written(spec: ModelSpec, config: dict, layout: str, complete: bool = True) -> dict:
    """The config.json of a resolved native config in `layout`: with `complete`, every key of the HF config class
    (the rules' keys, the others at their defaults) and the layout's `transformers_version`, as `save_pretrained`
    writes them."""
    hf = config_rules.to_hf(spec.hf_rules, config, spec.name)
    if complete and spec.hf_class is not None:
        hf = spec.hf_class.fill(hf)
        hf.setdefault("transformers_version", layouts.VERSIONS[layout])
    return layouts.write_layout(hf, layout, spec.layouts, spec.canonical)


def _try(config: dict, same: Callable[[dict], bool], change: Callable[[dict], None]) -> dict:
    trial = copy.deepcopy(config)
    try:
        change(trial)
    except (AttributeError, TypeError, IndexError):  # a key of a recorded config.json that cannot be set back
        return config
    return trial if same(trial) else config


def _value_notes(spec: ModelSpec, source: dict, config: dict, layout: str) -> list[str]:
    expected = _written(spec, config, layout, complete=False)
    return [
        f"config.json {dotted(p)} = {v!r} has no exact native twin: the native model (and Fast-LLM) runs what "
        f"{get(expected, p)!r} means; "
        "the original value is kept in the metadata and restored on export"
        for p, v in leaves(source).items()
        if get(expected, p) is not MISSING and get(expected, p) != v and not isinstance(v, (int, float))
    ]


def _disagrees(format: str, path: Path, name: str) -> ConfigError:
    """The error for a --format other than the origin's (`name`): a wrapper's text format asks for --text-only."""
    text = families.load(name).text
    hint = (f"; for its {text[0]} alone, pass --text-only (text_only=True) instead of --format {format}"
            if text is not None and text[1] == format else "")
    return ConfigError(f"--format {format} disagrees with --origin {path}, which is {name}; drop --format{hint}")


def open_origin(path: str | Path, format: str | None = None) -> Origin:
    """The HF model a native checkpoint was trained from: the original HF folder, or the native folder weightport
    wrote at import. Raises ConfigError if it records no HF model (a native checkpoint that Fast-LLM saved)."""
    path = Path(path)
    if (path / "config.json").is_file():
        raw = hf_config.read_config(path / "config.json")
        try:
            name = families.detect(raw)
        except ConfigError:
            if format is None:
                raise
            name = format
        if format is not None and format != name:
            raise _disagrees(format, path, name)
        spec = families.load(name)
        _, config, layout, _ = _import_config(spec, raw, lambda: safetensors.read_checkpoint(path))
        return Origin(path, spec, raw, layout, config, carried_files(path), hf_carried_tensors(spec, config, path))
    if (path / native_ckpt.METADATA).is_file():
        meta = native_ckpt.read_metadata(path)
        extras = meta["metadata"].get("weightport") or {}
        if not isinstance(extras.get("hf_config"), dict) or not extras["hf_config"] or not extras.get("format"):
            raise ConfigError(f"--origin {path}: this native checkpoint records no HF model (Fast-LLM keeps no "
                              "weightport metadata when it saves); name the original HF folder, or the native folder "
                              "weightport wrote when it imported it")
        spec = families.load(extras["format"])
        if format is not None and format != spec.name:
            raise _disagrees(format, path, spec.name)
        config = _resolve(spec, meta["config"]["base_model"])
        return Origin(path, spec, extras["hf_config"], _recorded_layout(extras, spec, path), config,
                      carried_files(path / CARRIED_FOLDER), native_carried_tensors(path, extras))
    if path.is_dir() and not any(path.glob("*.bin")):
        raise FormatError(f"--origin {path}: neither config.json (HF) nor {native_ckpt.METADATA} (native) found; name "
                          "the HF folder training started from, or the native folder weightport wrote at import")
    raise not_a_checkpoint(path, "--origin ")


def _recorded_layout(extras: dict, spec: ModelSpec, path: Path) -> str:
    """The config.json layout a native checkpoint records (its format's default where it records none)."""
    layout = extras.get("hf_layout") or spec.hf_layout
    if layout not in layouts.NAMES:
        raise ConfigError(f"{path}: metadata.weightport.hf_layout = {layout!r} is not a config.json layout "
                          f"(supported: {', '.join(layouts.NAMES)}); fix the entry or remove it")
    return layout


def hf_carried_tensors(spec: ModelSpec, config: dict, path: Path) -> dict[str, safetensors.TensorInfo] | None:
    """The tensors of an HF folder that `spec` carries, by the names they are kept under natively (None if the format
    carries nothing)."""
    bindings = walk(spec.weights, config)
    if not any(b.carried for b in bindings):
        return None
    tensors = safetensors.read_checkpoint(path)
    sources = {name: Ref(name, info.shape, info.dtype) for name, info in tensors.items()}
    steps = build(spec.name, "from_hf", bindings, parameters(config), sources, None, {}).steps
    return {step.dst[0].name: tensors[step.src[0].name] for step in steps if step.binding.carried}


def native_carried_tensors(path: Path, extras: dict) -> dict[str, safetensors.TensorInfo] | None:
    """The HF tensors a native folder keeps beside its model (None where it records none)."""
    files = extras.get("carried_tensors")
    if not isinstance(files, list):
        return None
    outside = [name for name in files if not safetensors.inside(name)]
    if outside:  # read_metadata refuses these; the check stays beside the read
        raise FormatError(f"{path}: metadata.weightport.carried_tensors names {', '.join(map(repr, outside))} outside "
                          f"{CARRIED_FOLDER}/; a checkpoint may only name its own files")
    return safetensors.read_files([path / CARRIED_FOLDER / name for name in files])


def text_model(spec: ModelSpec, hf: dict | None, format: str | None = None) -> tuple[ModelSpec, dict | None]:
    """(format, config.json) of the text model of a wrapper format `spec`, given the wrapper's config.json `hf`
    (if recorded): its text sub-config, in the format it names (else `format`, else the wrapper's default), with the
    wrapper's dtype and the text format's `architectures`. Raises ConfigError if `spec` wraps no text model."""
    if spec.text is None:
        raise ConfigError(f"text only: {spec.name} is not a wrapper around a text model; it exports as it is "
                          "(drop --text-only)")
    key, default = spec.text
    text = copy.deepcopy(hf.get(key)) if isinstance(hf, dict) and isinstance(hf.get(key), dict) else None
    named = text.get("model_type") if text else None
    name = format or (families.detect(named) if named else default)
    text_spec = families.load(name)
    if text is not None:
        text.setdefault("model_type", text_spec.model_type)
        text["architectures"] = [text_spec.architecture]
        text.update({k: hf[k] for k in ("dtype", "torch_dtype") if k in hf and k not in text})
    return text_spec, text


def _architecture_differences(spec: ModelSpec, trained: dict, origin: dict) -> list[str]:
    """Where two resolved native configs describe different models: HF keys where the format can write both,
    else native fields."""
    if canonical(trained) == canonical(origin):
        return []
    try:
        mine = leaves(_written(spec, trained, layouts.CANONICAL))
        theirs = leaves(_written(spec, origin, layouts.CANONICAL))
        keys = sorted(set(mine) | set(theirs))
        found = [f"config.json {dotted(p)}: {theirs.get(p, MISSING)!r} in the origin, {mine.get(p, MISSING)!r} in the "
                 "checkpoint" for p in keys if mine.get(p, MISSING) != theirs.get(p, MISSING)]
    except WeightportError:
        found = []
    if found:
        return found
    mine, theirs = leaves(canonical(trained), lists=True), leaves(canonical(origin), lists=True)
    return [f"native {dotted(p)}: {theirs.get(p, MISSING)!r} in the origin, {mine.get(p, MISSING)!r} in the checkpoint"
            for p in sorted(set(mine) | set(theirs)) if mine.get(p, MISSING) != theirs.get(p, MISSING)]


def describing_formats(model: str, explicit: dict) -> list[str]:
    """The formats that can write a native config (of native model type `model`) as an HF checkpoint. Wrappers
    (`gemma4_vlm`, `mistral3`) are not among them: they also need the parts they carry, which `--origin` names, and
    then the origin's format is the one."""
    found = []
    for name in families.names():
        spec = families.load(name)
        if spec.native_model != model or spec.text is not None:
            continue
        try:
            export_config(spec, _resolve(spec, explicit), spec.hf_layout)
        except WeightportError:
            continue
        found.append(name)
    return found


def _describes(spec: ModelSpec, config: dict, explicit: dict, where: str, layout: str | None = None,
               original: dict | None = None) -> dict:
    """The config.json of a resolved native config in format `spec` (in `layout`, default the format's own; with the
    `original` config.json's keys, see `export_config`); raises
    ConfigError, naming the fields and the formats that can describe the model instead, if `spec` cannot (a Qwen2
    model as `llama`, a logit softcap that a format has no key for): every export, file or in memory, checks this
    before its weight rules run."""
    try:
        return export_config(spec, config, layout or spec.hf_layout, original)
    except ConfigError as err:
        fits = [f for f in describing_formats(spec.native_model, explicit) if f != spec.name]
        raise ConfigError(f"{where}: {err}\nformats that can describe this native model: "
                          f"{', '.join(fits) or 'none'}") from None


def export_target(native_config: dict, format: str | None = None, origin: str | Path | Origin | None = None, *,
                  recorded: str | None = None, where: str = "the native config"
                  ) -> tuple[ModelSpec, dict, Origin | None]:
    """(format, resolved native config, origin) for exporting a native `config` mapping of a metadata.yaml (with
    `base_model` and `type`, or the `base_model` mapping itself). The format is `format`, else the origin's, else
    the `recorded` one, else the only one that can describe the architecture. Raises ConfigError if several or none
    can, if the format does not fit the native model type, or if the architecture differs from the origin's (the
    message names the keys)."""
    explicit = native_config.get("base_model", native_config)
    model = native_config.get("type") if "base_model" in native_config else None
    if origin is not None and not isinstance(origin, Origin):
        origin = open_origin(origin, format)
    if origin is not None and format is not None and format != origin.spec.name:
        raise _disagrees(format, origin.path, origin.spec.name)
    name = format or (origin.spec.name if origin is not None else recorded)
    if name is None:
        found = [f for m in ([model] if model else ["gpt", "multimodal"]) for f in describing_formats(m, explicit)]
        if len(found) != 1:
            hint = ("name the HF model training started from with --origin (the HF folder, or the native folder "
                    "weightport wrote at import), or pass --format")
            raise ConfigError(f"{where}: records no HF format (Fast-LLM keeps no weightport metadata when it saves), "
                              f"and {len(found) or 'no'} format{'s' if len(found) != 1 else ''} can describe its "
                              f"architecture{': ' + ', '.join(found) if found else ''}; {hint}")
        name = found[0]
    if name == recorded and name not in families.names():
        raise ConfigError(f"{where}: metadata.weightport.format = {name!r} is not a format of this weightport "
                          f"(supported: {', '.join(families.names())}); pass --format or --origin, or fix the file")
    spec = families.load(name)
    if model is not None and model != spec.native_model:
        raise ConfigError(f"{where}: native model type {model!r} does not match format {name!r} (which needs "
                          f"{spec.native_model!r})")
    config = _resolve(spec, explicit)
    _describes(spec, config, explicit, where)
    if origin is not None:
        differences = _architecture_differences(spec, config, origin.config)
        if differences:
            raise ConfigError(report(
                f"{where}: the architecture differs from that of --origin {origin.path}", differences,
                "a trained checkpoint keeps its origin's architecture; check that --origin names the model training "
                "started from, or export without --origin"))
    return spec, config, origin


def open_checkpoint(path: str | Path, format: str | None = None, *, origin: str | Path | Origin | None = None,
                    text_only: bool = False) -> Checkpoint:
    """Open an HF folder (config.json) or a native folder (metadata.yaml) from its config and headers.

    `origin` names the HF model a native checkpoint was trained from (see `open_origin`): its format, config.json
    layout, every key of its config.json and its other files are used on export, and its architecture must be the
    checkpoint's (ConfigError names the keys that differ). Without it, a native checkpoint that records no format
    (one Fast-LLM saved) takes the only format that can describe its architecture (ConfigError lists them if
    several can).

    `text_only`, for a native checkpoint of a wrapper format (`gemma4_vlm`, `mistral3`, ...), opens it as its text
    model alone (`gemma4`, `mistral`, `llama`): an export writes a causal LM, without the carried parts. A `format`
    other than the recorded wrapper's means the same. Raises ConfigError for a format that wraps nothing."""
    path = Path(path)
    if (path / "config.json").is_file():
        if origin is not None:
            raise ConfigError(f"{path} is an HF checkpoint; --origin applies to native checkpoints")
        if text_only:
            raise ConfigError(f"{path} is an HF checkpoint; --text-only applies to exports of native checkpoints")
        raw = hf_config.read_config(path / "config.json")
        spec = families.load(format or families.detect(raw))
        headers = functools.cache(lambda: safetensors.read_checkpoint(path))  # read first where the files decide
        explicit, config, layout, kept = _import_config(spec, raw, headers)
        tensors = headers()
        check_fits(config, len(tensors), path)
        notes = _value_notes(spec, raw, config, layout)
        if kept:
            notes.append(f"config.json: {len(kept)} key(s) that the {spec.hf_class.name} class does not define, so "
                         f"they cannot change the model: kept in the metadata and written back on export: "
                         f"{', '.join(kept)}")
        return Checkpoint("hf", path, spec, explicit, config, tensors, raw, layout, notes, carried_files(path))
    if (path / native_ckpt.METADATA).is_file():
        meta = native_ckpt.read_metadata(path)
        extras = meta["metadata"].get("weightport") or {}
        explicit = meta["config"]["base_model"]
        recorded = extras.get("format")
        wrapper = recorded is not None and recorded in families.names() and families.load(recorded).text is not None
        if wrapper and format is not None and format != recorded and origin is None:
            text_only = True  # another format than the recorded wrapper's: its text model alone
        chosen = None if text_only and (wrapper or origin is not None) else format
        infos = safetensors.read_files(native_ckpt.weight_files(path, meta))
        check_native_fits(meta, len(infos), path)  # before export_target, which expands every block
        spec, config, origin = export_target({"base_model": explicit, "type": native_ckpt.model_type(meta)}, chosen,
                                             origin, recorded=recorded, where=str(path))
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
        if origin is not None:
            opened = Checkpoint("native", path, spec, explicit, config, tensors, origin.hf_config, origin.hf_layout,
                                notes, origin.carried, origin, origin.carried_tensors)
        else:
            opened = Checkpoint("native", path, spec, explicit, config, tensors, extras.get("hf_config") or None,
                                _recorded_layout(extras, spec, path), notes, carried_files(path / CARRIED_FOLDER),
                                carried_tensors=native_carried_tensors(path, extras))
        if text_only:
            text_spec, text = text_model(spec, opened.hf_config, format if format != spec.name else None)
            if text_spec.native_model != spec.native_model:
                raise ConfigError(f"--format {text_spec.name} cannot hold the text model of {spec.name}")
            opened = replace(opened, spec=text_spec, hf_config=text, carried_tensors=None)
        return opened
    raise not_a_checkpoint(path)


def not_a_checkpoint(path: Path, what: str = "") -> FormatError:
    """The error for a path that is not a checkpoint folder: it does not exist, is not a folder, holds only pickled
    weights, or holds neither config file. `what` names the option it was given as (`--origin `)."""
    if not path.exists() and not path.is_symlink():
        return FormatError(f"{what}{path} does not exist; check the path (a checkpoint folder, with config.json or "
                           f"{native_ckpt.METADATA})")
    if not path.is_dir():
        if path.name in ("config.json", native_ckpt.METADATA) or path.suffix == ".safetensors":
            return FormatError(f"{what}{path} is a file of a checkpoint, not a folder; point to the folder that holds "
                               f"it: {path.parent}")
        return FormatError(f"{what}{path} is not a folder; point to a checkpoint folder (with config.json or "
                           f"{native_ckpt.METADATA})")
    if any(path.glob("*.bin")):
        return FormatError(f"{what}{path}: no config.json or {native_ckpt.METADATA}, only .bin weights. "
                           f"{safetensors.PICKLE_REFUSED}")
    return FormatError(f"{what}{path}: neither config.json (HF) nor {native_ckpt.METADATA} (native) found; "
                       "point to a checkpoint folder")


def check_fits(config: dict, tensors: int, path: Path) -> None:
    """Raise ConfigError if a resolved native config has more blocks than the files have tensors (each block holds
    at least one): a count no file can hold, refused before a plan (or a search for the formats that can describe
    it) spends time and memory on it."""
    positions = block_positions(config)
    if positions > tensors:
        raise ConfigError(f"{path}: the config describes {positions:,} blocks, but the files hold only {tensors:,} "
                          "tensors (a block has at least one): fix the block count (num_hidden_layers, or "
                          "decoder.num_blocks natively)")


def check_native_fits(meta: dict, tensors: int, path: Path) -> None:
    """`check_fits` for a native checkpoint's metadata (one of a model type weightport does not know is left to the
    error that names it)."""
    if native_ckpt.model_type(meta) in KINDS:
        check_fits(resolve(native_ckpt.model_type(meta), meta["config"]["base_model"]), tensors, path)


def _open(source: str | Path | Checkpoint, format: str | None, origin: str | Path | Origin | None,
          text_only: bool = False) -> Checkpoint:
    if isinstance(source, Checkpoint):
        if origin is not None or text_only:
            raise ConfigError("pass origin= and text_only= to open_checkpoint, not with an opened checkpoint")
        return source
    return open_checkpoint(source, format, origin=origin, text_only=text_only)


def plan(source: str | Path | Checkpoint, *, to: str | None = None, format: str | None = None,
         dtype: str = "auto", hf_layout: str | None = None, origin: str | Path | Origin | None = None,
         modeling_code: str | Path | None = None, text_only: bool = False) -> Plan:
    """Plan converting `source` to the other side (or `to`), reading only configs and file headers. `origin` names
    the HF model a native source was trained from; `text_only` exports a wrapper's text model alone (see
    `open_checkpoint`).

    A wrapper format (`weightport formats` lists what each carries) carries the HF tensors of the parts the native
    model lacks unchanged (`carry` steps): on import they are kept in the native folder under `hf_files/`, on export
    they come from there or from `origin`.

    `modeling_code`, for an export to HF of a format whose classes are remote code (config.json's `auto_map`),
    names the folder that holds its modeling files, such as a Fast-LLM checkout's `fast_llm_external_models/apriel2`:
    the module files `auto_map` names, and those they import relatively, are copied into the export, in place of
    carried files of the same name. Without it, the modeling files carried from the HF source (a native
    checkpoint's `hf_files/`, or the origin's files) are the ones exported, and a note names those missing.

    The plan's notes say what is carried, which HF keys an export does not restore, and which modeling files it
    lacks.

    Raises ConfigError for a bad option (`modeling_code` on an import, or for a format without remote code) or a
    config the target cannot hold, FormatError if `modeling_code` lacks a module file, CoverageError if tensors do
    not match the rules."""
    return _plan(source, to, format, dtype, hf_layout, origin, modeling_code, text_only)[0]


def check(source: str | Path | Checkpoint, *, to: str | None = None, format: str | None = None,
          dtype: str = "auto", hf_layout: str | None = None, origin: str | Path | Origin | None = None,
          modeling_code: str | Path | None = None, text_only: bool = False) -> Plan:
    """Whether `convert` would succeed on `source`, writing nothing: the plan (see `plan`), and the checks `convert`
    makes on the data before any output appears, which headers cannot answer: each tied copy an HF checkpoint still
    holds (`lm_head.weight` beside a tied embedding) is read and compared bit for bit with its original. Returns the
    plan, whose notes also say what was compared; raises what `plan` raises, and CoverageError for a tied copy that
    differs (naming both tensors and the first element), as `convert` would. What neither checks: whether the values
    are sensible (NaN, a wrong model of the right shapes)."""
    src = _open(source, format, origin, text_only)
    the_plan = _plan(src, to, None, dtype, hf_layout, None, modeling_code)[0]
    checks = [step for step in the_plan.steps if not step.dst]
    if not checks:
        return the_plan
    inputs = _Inputs(src.tensors)
    try:
        run(replace(the_plan, steps=tuple(checks)), inputs, None, workers=1)
    finally:
        inputs.maps.close()
    compared = ", ".join(f"{step.src[0].name} = {step.src[1].name}" for step in checks)
    return replace(the_plan, notes=the_plan.notes + (f"tied copies read and found bit-equal: {compared}",))


def _plan(source: str | Path | Checkpoint, to: str | None, format: str | None, dtype: str, hf_layout: str | None,
          origin: str | Path | Origin | None, modeling_code: str | Path | None, text_only: bool = False
          ) -> tuple[Plan, list[Path]]:
    """The plan, and the files the conversion carries."""
    src = _open(source, format, origin, text_only)
    to = to or ("native" if src.side == "hf" else "hf")
    if to not in SIDES or to == src.side:
        raise ConfigError(f"--to {to!r}: the source is {src.side}, so the target must be "
                          f"{'native' if src.side == 'hf' else 'hf'}")
    if modeling_code is not None and to == "native":
        raise ConfigError(f"--modeling-code applies to exports to HF; {src.path} is imported to native, and its own "
                          "modeling files, if any, are carried along")
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if hf_layout is not None and hf_layout not in layouts.NAMES:
        raise ConfigError(f"--hf-layout {hf_layout!r} is not one of {', '.join(layouts.NAMES)}")
    code = None if dtype == "auto" else DTYPES[dtype]
    layout = hf_layout or src.hf_layout
    carried, code_notes = src.carried, ()
    if to == "hf":  # the config first: a format that cannot describe the model is said so before its weight rules run
        config = _describes(src.spec, src.config, src.explicit, str(src.path), layout, src.hf_config)
        carried, code_notes = _hf_files(src, config, modeling_code)
    notes = tuple(src.notes)
    if carried:
        notes += (f"carries {len(carried)} other file(s) unchanged: {', '.join(p.name for p in carried)}",)
    notes += code_notes
    bindings = walk(src.spec.weights, src.config)
    inventory = parameters(src.config)
    sources = {name: Ref(name, info.shape, info.dtype) for name, info in src.tensors.items()}
    if to == "native":
        extras = {"format": src.spec.name, "hf_layout": src.hf_layout, "hf_config": src.hf_config}
        config = {"base_model": src.explicit, "model": src.spec.native_model, "weightport": extras}
        out = build(src.spec.name, "from_hf", bindings, inventory, sources, code, config, notes)
        return replace(out, notes=out.notes + _carry_notes(out, src.spec, to)), carried
    parts = sorted({b.hf[0] for b in bindings if b.carried})
    if parts and src.carried_tensors is None:
        text = families.load(src.spec.text[1]).name if src.spec.text else None
        raise ConfigError(
            f"{src.path}: {src.spec.name} exports the parts of the HF model that the native model lacks "
            f"({', '.join(parts)}), and this native checkpoint keeps none (Fast-LLM keeps no carried parts when it "
            "saves): pass --origin PATH, the HF model training started from (or the native folder weightport wrote "
            "when it imported it), to take them from there"
            + (f", or --text-only to export the text model alone (as {text} or the format its config names)"
               if text else ""))
    carried_refs = {name: Ref(name, info.shape, info.dtype) for name, info in (src.carried_tensors or {}).items()}
    out = build(src.spec.name, "to_hf", bindings, inventory, sources, code, {}, notes, carried_refs)
    out = replace(out, notes=out.notes + _carry_notes(out, src.spec, to))
    held: dict[str, int] = {}  # bytes by dtype
    for ref in (ref for step in out.steps for ref in step.dst):
        held[ref.dtype] = held.get(ref.dtype, 0) + nbytes(ref)
    keys = [k for k in ("dtype", "torch_dtype") if k in (src.hf_config or {"dtype": None})]
    if len(held) == 1 or (src.hf_config is None and held):  # mixed, with a record: the recorded value stays
        # without one, the dtype of most bytes: save_pretrained writes its parameters' dtype, and buffers such as
        # Gemma 4's layer_scalar stay float32 beside bfloat16 weights
        main = max(held, key=held.get)
        if main in DTYPE_NAMES:
            config.update(dict.fromkeys(keys, DTYPE_NAMES[main]))
    extra: tuple[str, ...] = ()
    lost = not_restored(src.spec, src.hf_config, config, layout, src.config)
    if lost:
        if src.hf_config is not None:
            extra += (f"config.json: {len(lost)} key(s) not restored (they differ from the model's architecture): "
                      f"{', '.join(lost)}",)
        else:
            cls = src.spec.hf_class.name if src.spec.hf_class else "the HF config class"
            extra += (f"config.json: {len(lost)} key(s) that no native field holds are written with the defaults of "
                      f"{cls} (the native checkpoint keeps no record of its HF config.json; name it with --origin): "
                      f"{', '.join(lost)}",)
    if src.hf_config is None and not src.carried:
        extra += ("no tokenizer or other files of the HF model to carry: the native checkpoint keeps none; name the "
                  "HF model with --origin to carry its files",)
    return Plan(out.family, out.direction, out.steps, config, out.notes + extra), carried


def _carry_notes(plan: Plan, spec: ModelSpec, to: str) -> tuple[str, ...]:
    """A note on the tensors a plan carries unchanged (count and bytes, by part), if any."""
    parts: dict[str, list[Step]] = {}
    for step in plan.steps:
        if step.binding.carried:
            parts.setdefault(step.binding.hf[0], []).append(step)
    if not parts:
        return ()
    where = "kept under hf_files/, which Fast-LLM does not read" if to == "native" else "put back in place"
    total = sum(nbytes(s.src[0]) for steps in parts.values() for s in steps)
    each = ", ".join(f"{part} ({len(steps)} tensors, {sum(nbytes(s.src[0]) for s in steps):,} bytes)"
                     for part, steps in parts.items())
    count = sum(map(len, parts.values()))
    return (f"carries {count} HF tensors ({total:,} bytes) of the parts the native model lacks "
            f"unchanged, {where}: {each}",)


def _hf_files(src: Checkpoint, config: dict, modeling_code: str | Path | None) -> tuple[list[Path], tuple[str, ...]]:
    """(the files an export of `src` to HF carries, notes on the remote code its `config` names).

    The files are the source's carried ones, `.py` files included. From a `modeling_code` folder only what
    transformers loads is taken: the module files `auto_map` names and those they import relatively. The rest of
    such a folder is not part of the model: Fast-LLM's `fast_llm_external_models/apriel2` also holds an
    `__init__.py` and a `convert.py` that import the `fast_llm_external_models` package, and tests and conversion
    scripts in subfolders. The folder's files replace carried files of the same name (a folder the user names wins
    over the files recorded at import); other carried files (tokenizer, tokenizer code) stay.

    Raises ConfigError if `modeling_code` is given for a format whose config.json names no remote code, FormatError
    if it is not a folder or lacks a module file (the message names them)."""
    names = remote_code.modules(config)
    if modeling_code is None:
        _, missing = remote_code.needed({p.name: p for p in src.carried if p.suffix == ".py"}, names)
        if not missing:
            return src.carried, ()
        return src.carried, (
            f"config.json's auto_map names remote code this export lacks: {', '.join(missing)}; transformers cannot "
            "load it (trust_remote_code=True) without them: pass --modeling-code DIR, the folder that holds them "
            "(for Fast-LLM's formats, the model's folder in Fast-LLM's fast_llm_external_models/), or copy them into "
            "the output folder",)
    folder = Path(modeling_code)
    if not names:
        raise ConfigError(f"--modeling-code {folder}: {src.spec.name} needs no remote code (its config.json has no "
                          "auto_map); drop --modeling-code")
    if not folder.is_dir():
        raise FormatError(f"--modeling-code {folder}: not a folder; name the folder that holds {', '.join(names)}")
    files, missing = remote_code.needed(remote_code.python_files(folder), names)
    if missing:
        raise FormatError(f"--modeling-code {folder} lacks {', '.join(missing)}: config.json's auto_map names "
                          f"{', '.join(names)}, and transformers also loads the files these import relatively; name "
                          "the folder that holds them all, or copy the missing files into it")
    taken = {p.name for p in files}
    replaced = sorted(p.name for p in src.carried if p.name in taken)
    note = f"modeling code from {folder}: {', '.join(sorted(taken))}"
    if replaced:
        note += f" (in place of the carried {', '.join(replaced)})"
    carried = sorted([p for p in src.carried if p.name not in taken] + files, key=lambda p: p.name)
    return carried, (note,)


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
    """The runtime's sink: the shard writer (native names get the `/weights` suffix), and on import the writer of the
    carried HF tensors (`kept`, by name). Writes to the tensors of `elsewhere` (those of files another process writes)
    are left out."""

    def __init__(self, writer: safetensors.ShardedWriter, inputs: _Inputs, suffix: str,
                 keeper: safetensors.ShardedWriter | None = None, kept: set[str] = frozenset(),
                 elsewhere: set[str] = frozenset()):
        self.writer, self.inputs, self.suffix, self.keeper, self.kept = writer, inputs, suffix, keeper, kept
        self.elsewhere = elsewhere

    def _to(self, ref: Ref) -> tuple[safetensors.ShardedWriter, str] | None:
        if ref.name in self.elsewhere:
            return None
        return (self.keeper, ref.name) if ref.name in self.kept else (self.writer, ref.name + self.suffix)

    def write(self, ref: Ref, array: np.ndarray, offset: int = 0) -> None:
        if (to := self._to(ref)) is not None:
            to[0].write(to[1], array, offset)

    def write_block(self, ref: Ref, array: np.ndarray, at: tuple[int, int]) -> None:
        if (to := self._to(ref)) is not None:
            to[0].write_block(to[1], array, at)

    def move(self, src: Ref, src_offset: int, dst: Ref, dst_offset: int, size: int) -> None:
        if (to := self._to(dst)) is not None:
            to[0].copy(to[1], self.inputs.tensors[src.name], src_offset, dst_offset, size)


def _carried_names(count: int) -> list[str]:
    if count == 1:
        return [f"{CARRIED_TENSORS}.safetensors"]
    return [f"{CARRIED_TENSORS}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _disjoint(native: dict, carried: dict) -> dict:
    """`carried`, checked to share no name with the native tensors (both are read through one source)."""
    both = sorted(set(native) & set(carried))
    if both:
        raise FormatError(f"carried HF tensors have the names of native tensors: {', '.join(both[:5])}")
    return carried


@dataclass(frozen=True)
class _Job:
    """A planned conversion: its plan, source, and the output files (by path in the destination) with their tensors,
    the native or HF shards first, then on import the files of the carried HF tensors under `hf_files/`."""

    plan: Plan
    src: Checkpoint
    carried: list[Path]  # files copied unchanged
    files: dict[str, list[safetensors.OutputTensor]]
    kept: frozenset[str]  # names of the carried HF tensors (written under hf_files/ on import)
    suffix: str
    stamps: dict[Path, tuple[int, int, int, int]]  # every file read, as it was when planned (safetensors.stamps)

    @property
    def to_native(self) -> bool:
        return self.plan.direction == "from_hf"

    def carried_to(self, tmp: Path) -> Path:
        """Where carried files and tensors go: `hf_files/` on import, the folder itself on export."""
        return tmp / CARRIED_FOLDER if self.to_native and (self.carried or self.kept) else tmp

    def part(self, carried: bool) -> dict[str, list[safetensors.OutputTensor]]:
        """The output files of the carried HF tensors (by name within `hf_files/`), or the others."""
        prefix = CARRIED_FOLDER + "/"
        return {f.removeprefix(prefix): g for f, g in self.files.items() if f.startswith(prefix) == carried}

    def file_of(self) -> dict[str, str]:
        """The output file of each output tensor, by the name its step gives it."""
        return {t.name.removesuffix(self.suffix): file for file, group in self.files.items() for t in group}


def _prepare(source: str | Path | Checkpoint, to: str | None, format: str | None, dtype: str, hf_layout: str | None,
             origin: str | Path | Origin | None, modeling_code: str | Path | None, text_only: bool,
             max_shard_size: int | None) -> _Job:
    src = _open(source, format, origin, text_only)
    the_plan, carried = _plan(src, to, None, dtype, hf_layout, None, modeling_code)
    to_native = the_plan.direction == "from_hf"
    suffix = f"/{native_ckpt.SHARD}" if to_native else ""
    kept = [ref for step in the_plan.steps if step.binding.carried and to_native for ref in step.dst]
    outputs = [safetensors.OutputTensor(ref.name + suffix, ref.dtype, ref.shape)
               for step in the_plan.steps if not (step.binding.carried and to_native) for ref in step.dst]
    names = native_ckpt.shard_names if to_native else safetensors.hf_shard_names
    files = safetensors.shard_layout(outputs, max_shard_size, names)
    if kept:
        side = safetensors.shard_layout([safetensors.OutputTensor(r.name, r.dtype, r.shape) for r in kept],
                                        max_shard_size, _carried_names)
        files |= {f"{CARRIED_FOLDER}/{file}": group for file, group in side.items()}
    read = {info.file for info in [*src.tensors.values(), *(src.carried_tensors or {}).values()]} | set(carried)
    return _Job(the_plan, src, carried, files, frozenset(r.name for r in kept), suffix, safetensors.stamps(read))


def _write(job: _Job, tmp: Path, max_shard_size: int | None, workers: int, progress: Callable[[Step], None] | None,
           files: set[str] | None = None, checks: bool = True) -> None:
    """Write the tensors of the output `files` (all: None) into `tmp`: the steps with an output there, and the
    check steps (tied copies) if `checks`."""
    carried_to = job.carried_to(tmp)
    carried_to.mkdir(exist_ok=True)
    main = [t for group in job.part(False).values() for t in group]
    side = [t for group in job.part(True).values() for t in group]
    names = native_ckpt.shard_names if job.to_native else safetensors.hf_shard_names
    where = job.file_of()
    steps = [s for s in job.plan.steps if (checks if not s.dst else files is None
                                             or any(where[r.name] in files for r in s.dst))]
    elsewhere = set() if files is None else {name for name, file in where.items() if file not in files}
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(safetensors.ShardedWriter(
            tmp, main, max_shard_bytes=max_shard_size, shard_names=names, metadata={"format": "pt"},
            files=files))
        keeper = None if not side else stack.enter_context(safetensors.ShardedWriter(
            carried_to, side, max_shard_bytes=max_shard_size, shard_names=_carried_names, metadata={"format": "pt"},
            files=None if files is None else {f.removeprefix(CARRIED_FOLDER + "/") for f in files}))
        src = job.src
        inputs = _Inputs({**src.tensors, **_disjoint(src.tensors, src.carried_tensors or {})})
        try:
            run(replace(job.plan, steps=tuple(steps)), inputs,
                _Outputs(writer, inputs, job.suffix, keeper, job.kept, elsewhere), workers=workers,
                progress=progress)
        finally:
            inputs.maps.close()
        writer.close()
        if keeper is not None:
            keeper.close()


@contextlib.contextmanager
def _output_errors(what: str) -> Iterator[None]:
    """An OSError (a full disk, a file size limit) as an OutputError: an error on the output, not a crash."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot {what}: {e.strerror or e}; check free space and write permission") from e


def _finish(job: _Job, tmp: Path) -> None:
    """Write what completes the output once every tensor is written: carried files, metadata or index and
    config.json. Raises FormatError if a file read changed since it was planned from (the output could mix two
    versions of it)."""
    carried_to = job.carried_to(tmp)
    for file in job.carried:
        with _output_errors(f"copy {file} into the output as {(carried_to / file.name).relative_to(tmp)}"):
            shutil.copyfile(file, carried_to / file.name)
    weight_map = {t.name: file for file, group in job.part(False).items() for t in group}
    if job.to_native:
        src = job.src
        extras = dict(job.plan.config["weightport"])
        if any(b.carried for b in walk(src.spec.weights, src.config)):
            extras["carried_tensors"] = sorted(job.part(True))
        meta = native_ckpt.metadata(src.explicit, src.spec.native_model, weight_map, extras)
        with _output_errors(f"write the output's {native_ckpt.METADATA}"):
            native_ckpt.write_metadata(tmp, meta)
            (tmp / "ok").touch()
    else:
        safetensors.write_hf_index(tmp, weight_map, sum(safetensors.file_bytes(g) for g in job.files.values()))
        with _output_errors("write the output's config.json"):
            hf_config.write_config(tmp / "config.json", job.plan.config)
    safetensors.check_unchanged(job.stamps)


def convert(source: str | Path | Checkpoint, destination: str | Path, *, to: str | None = None,
            format: str | None = None, dtype: str = "auto", hf_layout: str | None = None,
            max_shard_size: int | str | None = None, overwrite: bool = False, workers: int = 2,
            progress: Callable[[Step], None] | None = None, origin: str | Path | Origin | None = None,
            modeling_code: str | Path | None = None, text_only: bool = False) -> Plan:
    """Convert a checkpoint folder; the destination appears only when complete. Returns the plan it ran (its notes
    say what was carried, which HF keys were not restored and which modeling files are missing). `origin`: see
    `open_checkpoint`; `modeling_code`, `text_only`: see `plan`. `max_shard_size`: the largest output file, in bytes
    or as text ("5GB", "500MB"); None: one file. `progress` is called with each step once it is written.

    When torch.distributed is initialized with several processes (`torchrun`, or a training job's own), every
    process must call `convert` with the same arguments: each writes whole output files of its own (balanced by
    bytes; one output file is written by one process), the first one finishes the output and moves it into place,
    and the output is byte-identical to one process's. `progress` is then called on the first process for every
    step of the job, on the others for their own. If any process fails, every process raises (ProcessError where
    another failed) and nothing appears. See `weightport.distributed`.

    Raises what `plan` raises, ConfigError for a shard size that cannot be read, and OutputError if the destination
    exists (without `overwrite`), is, holds or lies inside an input (the source, the origin or the modeling code
    folder), or cannot be written (a full disk)."""
    if isinstance(max_shard_size, str):
        try:
            max_shard_size = safetensors.parse_size(max_shard_size)
        except ValueError as err:
            raise ConfigError(f"max_shard_size={max_shard_size!r}: {err}") from None
    group = distributed.current()
    prepare = lambda: _prepare(source, to, format, dtype, hf_layout, origin, modeling_code,  # noqa: E731
                               text_only, max_shard_size)
    job = prepare() if group is None else group.together("planning", prepare)
    src = job.src
    inputs = {src.path, *([src.origin.path] if src.origin else []), *([Path(modeling_code)] if modeling_code else [])}
    cleaned: list[Path] = []
    if group is None:
        with atomic_output(Path(destination), overwrite=overwrite, inputs=inputs, cleaned=cleaned) as tmp:
            _write(job, tmp, max_shard_size, workers, progress)
            _finish(job, tmp)
        return _cleaned_note(job.plan, cleaned)
    sizes = {file: safetensors.file_bytes(g) for file, g in job.files.items()}
    owner = distributed.deal(sizes, group.size)
    mine = {file for file, rank in owner.items() if rank == group.rank}
    write = lambda tmp, relay: _write(job, tmp, max_shard_size, workers, relay, mine,  # noqa: E731
                                      checks=group.rank == 0)
    with distributed.stop_on_signals():
        if group.rank != 0:
            tmp = group.receive_folder()
            try:
                with distributed.relay_progress(group, job.plan.steps, tmp, job.file_of(), owner, progress) as relay:
                    group.together("writing the output files", lambda: write(tmp, relay))
            except BaseException:  # no process has agreed that the files are written, so none moves them into
                shutil.rmtree(tmp, ignore_errors=True)  # place: the first may be gone (killed) and leave them
                raise
            group.agree(None, "finishing the output")  # returns once the first process has moved it into place
            return job.plan
        told, written = False, False
        try:
            with atomic_output(Path(destination), overwrite=overwrite, inputs=inputs, cleaned=cleaned) as tmp:
                group.send_folder(tmp)
                told = True
                with distributed.relay_progress(group, job.plan.steps, tmp, job.file_of(), owner, progress) as relay:
                    group.together("writing the output files", lambda: write(tmp, relay))
                written = True
                _finish(job, tmp)
        except Exception as err:
            if not told:
                group.send_folder(err)
            elif written:
                group.agree(err, "finishing the output")
            raise
        group.agree(None, "finishing the output")
    return _cleaned_note(job.plan, cleaned)


def _cleaned_note(plan: Plan, cleaned: list[Path]) -> Plan:
    """`plan`, with a note naming the temporary folders of killed runs that were removed, if any."""
    if not cleaned:
        return plan
    return replace(plan, notes=plan.notes + (
        f"removed {len(cleaned)} temporary folder(s) that killed runs on this host left beside the output: "
        f"{', '.join(p.name for p in cleaned)}",))


__all__ = ["Checkpoint", "Origin", "check", "convert", "describing_formats", "export_config", "import_config",
           "not_restored", "open_checkpoint", "open_origin", "plan", "text_model"]

