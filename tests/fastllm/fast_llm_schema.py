"""Dump the config classes of Fast-LLM's base models as JSON (run under Fast-LLM's own Python, not weightport's).

usage: FASTLLM_PYTHON=1 ../shared/fastllm/fastllm tests/fastllm/fast_llm_schema.py OUT.json

For every config class reachable from `GPTBaseModelConfig` and `MultiModalBaseModelConfig`: its `type` name, the
names registered under it (its subclasses by `type`), the class an absent `type` gives, and each init field with
its hint, its default, and the config classes its annotation holds (`config`, or `dict` for `dict[str, Config]`).
"""

import dataclasses
import enum
import json
import sys
import types
import typing

import fast_llm.cli  # noqa: F401  (registers every config class, as the command line does)
from fast_llm.config import Config, NoAutoValidate
from fast_llm.models.gpt.config import GPTBaseModelConfig
from fast_llm.models.multimodal.config import MultiModalBaseModelConfig

classes: dict[str, dict | None] = {}


def key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def configs_in(annotation) -> list[tuple[str, type]]:
    """(container, config class) for each config class an annotation holds."""
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return [("config", annotation)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [found for arg in typing.get_args(annotation) for found in configs_in(arg)]
    if typing.get_origin(annotation) is dict:
        return [("dict", cls) for _, cls in configs_in(typing.get_args(annotation)[1])]
    if typing.get_origin(annotation) in (list, tuple):
        return [("list", cls) for arg in typing.get_args(annotation) if arg is not ... for _, cls in configs_in(arg)]
    return []


def plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def registered(cls: type) -> dict[str, type]:
    """The `type` names that select `cls` or one of its subclasses."""
    out = {}
    for base in cls.__mro__:
        if isinstance(base, type) and issubclass(base, Config) and base._registry is not None:
            for name in base._registry.keys():
                if issubclass(base._registry[name], cls):
                    out[name] = base._registry[name]
    return out


def default_subclass(cls: type) -> str | None:
    """The class Fast-LLM instantiates for a dict without `type`."""
    try:
        with NoAutoValidate():
            return key(type(cls._from_dict({}, strict=False)))
    except Exception:  # a class that cannot be built from nothing has required fields: no default
        return None


def visit(cls: type) -> str:
    name = key(cls)
    if name in classes:
        return name
    classes[name] = None
    fields = {}
    for field in dataclasses.fields(cls):
        if not field.init or field.name.startswith("_") or field.name == "type":
            continue
        if field.default is not dataclasses.MISSING:
            default = {"value": plain(field.default)}
        else:
            default = {"factory": field.default_factory is not dataclasses.MISSING}
        fields[field.name] = {
            "hint": str(getattr(field, "hint", None)), "default": default, "annotation": str(field.type),
            "configs": [(container, visit(sub)) for container, sub in configs_in(field.type)],
        }
    types_ = {type_name: visit(sub) for type_name, sub in registered(cls).items()}
    classes[name] = {"type_name": cls.dynamic_type_name, "types": types_,
                     "default": default_subclass(cls) if types_ else None, "fields": fields}
    return name


roots = {"gpt": visit(GPTBaseModelConfig), "multimodal": visit(MultiModalBaseModelConfig)}
with open(sys.argv[1], "w") as out:
    json.dump({"roots": roots, "classes": classes}, out, indent=1)
