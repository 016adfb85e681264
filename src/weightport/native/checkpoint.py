"""The native (Fast-LLM) checkpoint folder: `metadata.yaml` plus `model_<k>.safetensors` files.

Tensors are stored as `<parameter name>/<shard>`; only the `weights` shard is converted (training runs also save
optimizer shards such as `exp_avgs`, and pipeline-parallel runs name files `model_<stage>_<k>.safetensors`; the
state index says where each tensor is). weightport keeps what the native config cannot hold (the source
`config.json`, the format and its layout) under `metadata.weightport`. Fast-LLM loads such a checkpoint but keeps
only the metadata fields it knows when it saves one (training, or its own `convert`): a checkpoint Fast-LLM saved
has no `metadata.weightport`, and its export names the HF model it came from (`origin`, see `weightport.api`).
Fast-LLM's `distributed` format (its resumable training state) stores flat shards without tensor names, so it is
not read: Fast-LLM's own `convert` turns it into `fast_llm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from weightport.errors import FormatError, shown
from weightport.io.safetensors import inside

FAST_LLM_VERSION = "0.4.0"
# The most values a metadata.yaml may hold once its aliases are expanded. A real one holds a few thousand (the
# config, one state_index entry per tensor: about 1,800 for a 405B Llama, the recorded config.json); a few aliases
# nested can stand for billions.
MAX_VALUES = 100_000
METADATA = "metadata.yaml"
SHARD = "weights"


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:3])
    except ValueError:
        return ()


def read_metadata(folder: Path) -> dict[str, Any]:
    """The validated `metadata.yaml` of a native checkpoint folder (plain YAML only: no tag is ever executed)."""
    path = folder / METADATA
    hint = "re-save the checkpoint with Fast-LLM or restore the file"
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: not found; a native checkpoint folder needs a metadata.yaml") from None
    except yaml.constructor.ConstructorError as err:
        raise FormatError(f"{path}: uses a YAML tag weightport does not read ({err.problem}); only plain YAML is "
                          f"read, nothing in it is executed; {hint}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as err:
        raise FormatError(f"{path}: cannot be read as YAML ({type(err).__name__}: {err}); {hint}") from None
    _check_size(meta, path)
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: the top level must be a mapping; {hint}")
    for key in ("config", "metadata"):
        if not isinstance(meta.get(key), dict):
            raise FormatError(f"{path}: `{key}` must be a mapping, got {shown(meta.get(key))}; {hint}")
    if meta.get("format", "fast_llm") == "distributed":
        raise FormatError(
            f"{path}: this is Fast-LLM's `distributed` format (resumable training state: flat shards without tensor "
            "names), which weightport does not read. Convert it with Fast-LLM first, on CPU if need be: `fast-llm "
            f"convert {meta.get('model') or 'gpt'} input.path={folder} input.format=distributed output.path=OUT "
            "output.format=fast_llm use_cpu=True`; or use the `fast_llm` export a training run writes with "
            "`training.export.format=fast_llm`")
    if meta.get("format", "fast_llm") != "fast_llm":
        raise FormatError(f"{path}: format is {shown(meta.get('format'))}; only the `fast_llm` format can be converted")
    version = _version(meta.get("fast_llm_version"))
    if not version or version < (0, 3, 0):
        raise FormatError(f"{path}: fast_llm_version {shown(meta.get('fast_llm_version'))} is older than 0.3.0 or "
                          "missing; re-save the checkpoint with a newer Fast-LLM")
    if not isinstance(meta["config"].get("base_model"), dict):
        raise FormatError(f"{path}: config.base_model is missing; {hint}")
    index = meta["metadata"].get("state_index")
    if not isinstance(index, dict) or not index or not all(isinstance(v, str) for v in index.values()):
        raise FormatError(f"{path}: metadata.state_index is missing, empty or not a mapping of names to files; {hint}")
    _check_weightport(meta["metadata"].get("weightport"), path)
    return meta


def _check_size(document: Any, path: Path) -> None:
    """Raise FormatError if the document, its YAML aliases expanded, holds more than MAX_VALUES values, or refers
    to itself (what every later walk over it would do: copy, compare, write JSON)."""
    sizes: dict[int, int] = {}  # id of a list or mapping -> values under it, aliases expanded
    open_: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise FormatError(f"{path}: a YAML alias refers to the mapping or list that holds it (an endless "
                              "document); write the values out, or re-save the checkpoint")
        open_.add(key)
        total = 1
        for child in (node.values() if isinstance(node, dict) else node):
            total += size(child)
            if total > MAX_VALUES:
                raise FormatError(f"{path}: holds more than {MAX_VALUES:,} values once its YAML aliases are expanded "
                                  "(an alias bomb, or not a checkpoint's metadata); re-save the checkpoint")
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        size(document)
    except RecursionError:
        raise FormatError(f"{path}: nested too deeply to be a checkpoint's metadata; re-save the checkpoint") from None


# metadata.weightport, as weightport writes it: key -> (the types a value may have, what it is).
_WEIGHTPORT = {
    "format": ((str,), "the HF format name"),
    "hf_layout": ((str,), "the config.json layout name"),
    "hf_config": ((dict,), "the source config.json as a mapping"),
    "carried_tensors": ((list,), "a list of file names under hf_files/"),
}


def _check_weightport(extras: Any, path: Path) -> None:
    """Raise FormatError if `metadata.weightport` (what weightport recorded at import) is not as weightport writes
    it: a mapping whose known entries have their types, and whose carried tensor files lie inside `hf_files/`."""
    hint = "restore the file as weightport wrote it, or remove metadata.weightport and name the HF model with --origin"
    if extras is None:
        return
    if not isinstance(extras, dict):
        raise FormatError(f"{path}: metadata.weightport must be a mapping, got {shown(extras)}; {hint}")
    for key, (types, what) in _WEIGHTPORT.items():
        value = extras.get(key)
        if value is not None and not isinstance(value, types):
            raise FormatError(f"{path}: metadata.weightport.{key} should be {what}, got {shown(value)}; {hint}")
    for name in extras.get("carried_tensors") or []:
        if not inside(name):
            raise FormatError(f"{path}: metadata.weightport.carried_tensors names {shown(name)}, which is not a "
                              f"file inside the checkpoint's hf_files/ folder; a checkpoint may only name its own "
                              f"files; {hint}")


def model_type(meta: dict[str, Any]) -> str:
    return str(meta.get("model") or (meta.get("config") or {}).get("type") or "gpt")


def weight_files(folder: Path, meta: dict[str, Any]) -> list[Path]:
    """The distinct files named by the state index, in order."""
    names = dict.fromkeys(str(f) for f in meta["metadata"]["state_index"].values())
    for name in names:
        if "/" in name or "\\" in name or name.startswith("."):
            raise FormatError(f"{folder / METADATA}: state_index names file {name!r} outside the checkpoint folder; "
                              "a checkpoint may only name files beside its metadata.yaml")
        if not (folder / name).is_file():
            raise FormatError(f"{folder / METADATA}: state_index names {name!r}, which is missing from {folder}; "
                              "restore the file or re-download the checkpoint")
    return [folder / name for name in names]


def shard_names(count: int) -> list[str]:
    return [f"model_{k}.safetensors" for k in range(count)]


def metadata(base_model: dict, model: str, state_index: dict[str, str], extras: dict[str, Any]) -> dict[str, Any]:
    """The `metadata.yaml` content Fast-LLM loads."""
    return {
        "config": {"base_model": base_model, "type": model},
        "fast_llm_version": FAST_LLM_VERSION,
        "format": "fast_llm",
        "metadata": {"state_index": dict(sorted(state_index.items())), "weightport": extras},
        "model": model,
        "shards": [SHARD],
    }


def write_metadata(folder: Path, meta: dict[str, Any]) -> None:
    (folder / METADATA).write_text(yaml.safe_dump(meta, sort_keys=True), encoding="utf-8")
