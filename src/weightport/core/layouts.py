"""The on-disk layouts of `config.json` that transformers versions write, and how to move between them.

Family rules are written against one canonical layout (transformers 5 up to 5.14). A `Relayout` recognizes
another layout, brings a config from it to the canonical one on import, and back on export:
- `transformers4`: rotary settings as top-level `rope_theta` + `rope_scaling` instead of `rope_parameters`;
- `transformers5.15`: Gemma 4's full-attention sizes as `per_layer_config` overrides instead of
  `global_head_dim` / `num_global_key_value_heads`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from weightport.errors import ConfigError

CANONICAL = "transformers5"
NAMES = ("transformers4", "transformers5", "transformers5.15")
# The `transformers_version` an export in each layout writes: the transformers release whose save_pretrained writes
# that layout and that weightport's rules and class tables were checked against (goldens: 4.57.6 and 5.14.1; the
# pinned test dependency: 5.24.0).
VERSIONS = {"transformers4": "4.57.6", "transformers5": "5.14.1", "transformers5.15": "5.24.0"}


@dataclass(frozen=True)
class Relayout:
    """A non-canonical config layout: how to recognize it, and how to convert to and from the canonical one."""

    name: str
    detect: Callable[[dict], bool]
    to_canonical: Callable[[dict], dict]
    from_canonical: Callable[[dict], dict]


def _rotary_to_v5(config: dict) -> dict:
    out = dict(config)
    scaling = out.pop("rope_scaling", None) or {}
    if not isinstance(scaling, dict):
        raise ConfigError(f"config.json: rope_scaling must be an object or null, got {scaling!r}; transformers "
                          "refuses this config: fix the value")
    params = dict(scaling)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")  # as transformers 5 reads it (and writes it back)
    if "rope_theta" in out:
        params["rope_theta"] = out.pop("rope_theta")
    out["rope_parameters"] = params
    return out


def _rotary_to_v4(config: dict) -> dict:
    if "rope_parameters" not in config:
        return config
    out = dict(config)
    params = dict(out.pop("rope_parameters"))
    out["rope_theta"] = params.pop("rope_theta", None)
    out["rope_scaling"] = None if params.get("rope_type", "default") == "default" and len(params) <= 1 else params
    return out


def _is_v4(config: dict) -> bool:
    return "rope_parameters" not in config and bool({"rope_theta", "rope_scaling"} & set(config))


def _each_model(convert: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Apply a rotary conversion to the config and to its sub-model configs (`text_config`, `vision_config`)."""
    def apply(config: dict) -> dict:
        out = convert(config)
        for key in ("text_config", "vision_config"):
            if isinstance(out.get(key), dict):
                out = {**out, key: convert(out[key])}
        return out

    return apply


ROTARY_V4 = Relayout(
    "transformers4",
    detect=lambda c: any(_is_v4(x) for x in (c, c.get("text_config"), c.get("vision_config")) if isinstance(x, dict)),
    to_canonical=_each_model(lambda c: _rotary_to_v5(c) if _is_v4(c) else c),
    from_canonical=_each_model(_rotary_to_v4),
)

_OVERRIDES = {"head_dim": "global_head_dim", "num_key_value_heads": "num_global_key_value_heads"}


def _full_layers(config: dict) -> list[int]:
    return [i for i, kind in enumerate(config.get("layer_types") or []) if kind == "full_attention"]


def _per_layer_to_flat(config: dict, defaults: Callable[[dict], dict]) -> dict:
    """transformers 5.15+ writes, for each full-attention layer, only the sizes that differ from the sliding layers'
    (`{}` when none does); the flat layout names them all. `layer_types` and `head_dim` that config.json leaves out
    are the class's (`defaults`), as transformers reads them."""
    out = dict(config)
    overrides = {int(k): v for k, v in (out.pop("per_layer_config") or {}).items()}
    filled = defaults(out)
    full = _full_layers(filled)
    distinct = {repr(sorted(v.items())) for v in overrides.values()}
    if (overrides and set(overrides) != set(full)) or len(distinct) > 1:
        raise ConfigError(
            f"config.json: per_layer_config overrides layers {sorted(overrides)}, but weightport needs the same "
            f"overrides on exactly the full_attention layers {full}, or none")
    override = next(iter(overrides.values()), {})
    unknown = sorted(set(override) - set(_OVERRIDES))
    if unknown:
        raise ConfigError(f"config.json: per_layer_config overrides {unknown}, which weightport cannot convert")
    out.update({_OVERRIDES[k]: v for k, v in override.items()})
    out.setdefault("global_head_dim", filled["head_dim"])
    if out.get("attention_k_eq_v") and "num_key_value_heads" in out:
        out.setdefault("num_global_key_value_heads", out["num_key_value_heads"])
    return out


def _flat_to_per_layer(config: dict, defaults: Callable[[dict], dict]) -> dict:
    out = dict(config)
    filled = defaults(out)
    override = {}
    head_dim = out.pop("global_head_dim", None)
    if head_dim is not None and head_dim != filled["head_dim"]:
        override["head_dim"] = head_dim
    heads = out.pop("num_global_key_value_heads", None)
    if heads is not None and out.get("attention_k_eq_v") and heads != out.get("num_key_value_heads"):
        override["num_key_value_heads"] = heads
    full = _full_layers(filled)
    width = len(str(max(len(filled.get("layer_types") or []) - 1, 0)))
    out["per_layer_config"] = {str(i).zfill(width): dict(override) for i in full} if override else {}
    return out


def per_layer(defaults: Callable[[dict], dict]) -> Relayout:
    """Gemma 4's `per_layer_config` layout (transformers 5.15+) <-> the flat one (`global_head_dim`,
    `num_global_key_value_heads`); `defaults(config)` is the config with the text config class's defaults filled
    (`HFClass.fill`), for the keys the layout reads that config.json may leave out (`layer_types`, `head_dim`)."""
    return Relayout("transformers5.15", detect=lambda c: "per_layer_config" in c,
                    to_canonical=lambda c: _per_layer_to_flat(c, defaults),
                    from_canonical=lambda c: _flat_to_per_layer(c, defaults))


def within(key: str, relayout: Relayout) -> Relayout:
    """`relayout` applied to the sub-config at `key` (a wrapper's `text_config`) instead of the whole config."""
    def on_sub(convert: Callable[[dict], dict]) -> Callable[[dict], dict]:
        return lambda c: {**c, key: convert(c[key])} if isinstance(c.get(key), dict) else c

    return Relayout(relayout.name, lambda c: isinstance(c.get(key), dict) and relayout.detect(c[key]),
                    on_sub(relayout.to_canonical), on_sub(relayout.from_canonical))


def normalize(config: dict, relayouts: tuple[Relayout, ...]) -> tuple[dict, str]:
    """The config in the canonical layout, and the layout it was found in."""
    for relayout in relayouts:
        if relayout.detect(config):
            return relayout.to_canonical(config), relayout.name
    return config, CANONICAL


def write_layout(config: dict, layout: str, relayouts: tuple[Relayout, ...], canonical: tuple[str, ...]) -> dict:
    """The canonical-layout config written in `layout`."""
    if layout in canonical:
        return config
    for relayout in relayouts:
        if relayout.name == layout:
            return relayout.from_canonical(config)
    raise ConfigError(f"this format has no config.json layout {layout!r} "
                      f"(available: {', '.join(canonical + tuple(r.name for r in relayouts))})")


def equivalent(layout: str, other: str, canonical: tuple[str, ...]) -> bool:
    return layout == other or (layout in canonical and other in canonical)


__all__ = ["CANONICAL", "NAMES", "ROTARY_V4", "VERSIONS", "Relayout", "equivalent", "normalize",
           "per_layer", "within", "write_layout"]
