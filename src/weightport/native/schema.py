"""The native (Fast-LLM) base-model config schema, as data: kinds, their `type` subclasses, fields and defaults.

Native configs on disk are sparse: only explicitly set fields and `type` discriminators are written. `resolve`
fills in every default and default subclass (a missing normalization `type` means `layer_norm`, a missing mixer
`type` means `attention`, ...), so the rest of weightport always sees complete configs. Fields marked
`arch=False` are training settings: accepted, kept out of the resolved config, never converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from weightport.core.paths import Path, dotted
from weightport.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Value:
    """A scalar (or list) field with its default; `arch` fields change what the model computes."""

    default: Any = None
    arch: bool = True


@dataclass(frozen=True, slots=True)
class Sub:
    """A sub-config of a kind; `optional` ones default to None (absent)."""

    kind: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Named:
    """A `dict[str, sub-config]` of a kind (pattern blocks, stochastic sub-mixers)."""

    kind: str


@dataclass(frozen=True, slots=True)
class Kind:
    """A config base class: its `type` subclasses, the one used when `type` is absent, and their fields."""

    types: dict[str, dict[str, Value | Sub | Named]]
    default_type: str | None = None
    aliases: dict[str, str] | None = None


TRAINING = Value(None, arch=False)
# Training-only settings that runs write anywhere in the tree; accepted and left out of conversion.
TRAINING_FIELDS = frozenset(
    {"lr_scale", "initialization", "weight_decay", "apply_peft", "implementation", "use_flash_attention",
     "recompute_level", "losses", "vocab_parallel", "full_precision_residual", "distillation_model",
     "distillation_loss_weight", "cross_document_attention", "dropout_rate"}
)

_NORM = {"epsilon": Value(1e-5), "zero_centered": Value(False), "weight": Sub("parameter")}
_ROPE_THETA = {"theta": Value(10000.0)}
_LINEAR = {"weight": Sub("parameter"), "bias": Sub("optional_parameter")}
_MLP = {
    "intermediate_size": Value(4096), "add_linear_biases": Value(True), "gated": Value(False),
    "activation": Value(None), "layer_1": Sub("affine_linear"), "layer_2": Sub("affine_linear"),
    "pre_norm": Sub("normalization", optional=True), "post_norm": Sub("normalization", optional=True),
}

KINDS: dict[str, Kind] = {
    "gpt": Kind({"gpt": {
        "hidden_size": Value(1024), "embeddings": Sub("embeddings"), "decoder": Sub("block_sequence"),
        "head": Sub("head"), "tied_embedding_weight": Value(False), "peft": Sub("peft"),
    }}, "gpt"),
    "multimodal": Kind({"multimodal": {
        "hidden_size": Value(1024), "embeddings": Sub("embeddings"), "decoder": Sub("block_sequence"),
        "head": Sub("head"), "tied_embedding_weight": Value(False), "peft": Sub("peft"),
        "vision_encoder": Sub("vision_encoder", optional=True), "image_token_index": Value(None),
    }}, "multimodal"),
    "vision_encoder": Kind({"vision_encoder": {
        "embeddings": Sub("patch_embeddings"), "encoder": Sub("block_sequence"), "adapter": Sub("mlp"),
        "hidden_size": Value(1024), "normalization": Value(None, arch=False),  # image preprocessing statistics
    }}, "vision_encoder"),
    "patch_embeddings": Kind({"patch_embeddings": {
        "patch_embeddings": Sub("affine_linear"), "normalization": Sub("normalization"), "patch_height": Value(16),
        "patch_width": Value(16),
    }}, "patch_embeddings"),
    "embeddings": Kind({"embeddings": {
        "vocab_size": Value(49152), "word_embeddings": Sub("parameter"),
        "position_embeddings": Sub("optional_parameter"), "num_position_embeddings": Value(2048),
        "embedding_scale": Value(1.0), "dropout": Value(0.0, arch=False),
    }}, "embeddings"),
    "head": Kind({"head": {
        "normalization": Sub("normalization"), "output_weight": Sub("parameter"), "prediction_heads": Value(1),
        "final_logit_softcap": Value(None), "logits_scale_factor": Value(1.0),
    }}, "head"),
    "block_sequence": Kind({
        "fixed": {"block": Sub("block"), "num_blocks": Value(12)},
        "pattern": {"blocks": Named("block"), "pattern": Value([]), "num_blocks": Value(12)},
    }, "fixed"),
    "block": Kind({"decoder": {
        "mixer": Sub("mixer"), "mlp": Sub("mlp"), "normalization": Sub("normalization"),
        "pre_mixer_normalization": Sub("normalization", optional=True),
        "pre_mlp_normalization": Sub("normalization", optional=True),
        "post_mixer_normalization": Sub("normalization", optional=True),
        "post_mlp_normalization": Sub("normalization", optional=True),
        "output_scale": Sub("optional_parameter"), "dropout": Value(0.0, arch=False),
    }}, "decoder"),
    "mixer": Kind({
        "attention": {
            "heads": Value(8), "head_groups": Value(1), "head_size": Value(128), "add_linear_biases": Value(True),
            "query_layer": Sub("affine_linear"), "key_layer": Sub("affine_linear"),
            "value_layer": Sub("affine_linear"), "dense_layer": Sub("affine_linear"), "rotary": Sub("rotary"),
            "causal": Value(True), "softmax_scale_power": Value(0.5),
            "query_norm": Sub("normalization", optional=True), "key_norm": Sub("normalization", optional=True),
            "value_norm": Sub("normalization", optional=True), "shared_key_value": Value(False),
            # A feature field natively, but it changes what the model computes: weightport converts or refuses it.
            "window_size": Value(None), "dropout": Value(0.0),
        },
        "mamba": {
            "state_size": Value(16), "d_inner": Value(2048), "d_xb": Value(1024), "dt_rank": Value(64),
            "add_linear_biases": Value(True), "repeat_kv_before_conv": Value(True),
            **{f"{name}_layer": Sub("affine_linear") for name in ("z", "x", "b", "c", "dt_input", "dt", "output")},
            "convolution_layer": Sub("convolution"), "d_weight": Sub("parameter"), "a_log_weight": Sub("parameter"),
        },
        "gdn": {
            "value_heads": Value(16), "key_heads": Value(8), "key_head_dim": Value(64), "value_head_dim": Value(64),
            "normalization": Sub("normalization"), "qkv_projection_layer": Sub("affine_linear"),
            "ba_projection_layer": Sub("affine_linear"), "output_layer": Sub("affine_linear"),
            "convolution_layer": Sub("convolution"), "dt_bias_weight": Sub("parameter"),
            "a_log_weight": Sub("parameter"),
        },
        "kda": {
            "heads": Value(16), "head_dim": Value(64), "normalization": Sub("normalization"),
            **{f"{name}_projection_layer": Sub("affine_linear")
               for name in ("q", "k", "v", "f_a", "f_b", "g_a", "g_b", "beta", "output")},
            "convolution_layer": Sub("convolution"), "dt_bias_weight": Sub("parameter"),
            "a_log_weight": Sub("parameter"),
        },
        "stochastic": {
            "mixers": Named("mixer"), "main_mixer_name": Value(None), "sampling_strategy": Value("uniform"),
            "sampling_weights": TRAINING, "predefined_layouts": TRAINING,
        },
    }, "attention", aliases={"mamba_2": "mamba"}),
    "convolution": Kind({"convolution": {
        "kernel_size": Value(4), "activation": Value(None), "weight": Sub("parameter"),
        "bias": Sub("optional_parameter"),
    }}, "convolution"),
    "mlp": Kind({
        "mlp": _MLP,
        "moe": {
            **_MLP, "router": Sub("affine_linear"), "experts": Value(2), "shared_experts": Value(0),
            "experts_per_token": Value(1), "routing": Value("aux_loss"),
            "router_normalization": Sub("normalization", optional=True),
            "router_scale": Sub("optional_parameter"), "router_input_scale": Value(1.0),
            "router_per_expert_scale": Sub("optional_parameter"),
            "auxiliary_loss_coefficient": Value(0.01, arch=False), "z_loss_coefficient": Value(0.0, arch=False),
            "jitter_eps": Value(0.0, arch=False),
        },
        "hybrid_moe": {
            "dense": Sub("mlp"), "routed": Sub("mlp"),
            "pre_norm": Sub("normalization", optional=True), "post_norm": Sub("normalization", optional=True),
        },
    }, "mlp"),
    "normalization": Kind({
        "layer_norm": {**_NORM, "bias": Sub("parameter")},
        "rms_norm": _NORM,
        "gated_rms_norm": {**_NORM, "activation": Value("silu")},
        "fixed_rms_norm": {"epsilon": Value(1e-5)},
        "none": {},
    }, "layer_norm"),
    "rotary": Kind({
        "none": {},
        "default": _ROPE_THETA,
        "llama3": {**_ROPE_THETA, "scale_factor": Value(8.0), "low_frequency_factor": Value(1.0),
                   "high_frequency_factor": Value(4.0), "original_context_length": Value(8192)},
        "yarn": {**_ROPE_THETA, "scale_factor": Value(8.0), "attention_factor": Value(None),
                 "beta_fast": Value(32.0), "beta_slow": Value(1.0), "original_context_length": Value(8192)},
        "default_2d": _ROPE_THETA,
        "proportional": {**_ROPE_THETA, "partial_rotary_factor": Value(1.0)},
    }, "none"),
    "peft": Kind({"none": {}, "lora": {"rank": Value(8), "alpha": Value(8.0), "dropout": Value(0.0)}}, "none"),
    "parameter": Kind({"parameter": {}}, "parameter"),
    "optional_parameter": Kind({"optional_parameter": {"enabled": Value(None)}}, "optional_parameter"),
    "affine_linear": Kind({"affine_linear": _LINEAR}, "affine_linear"),
}
# Kinds whose dicts carry no `type` key on disk (they have a single class).
UNTYPED = frozenset({"embeddings", "head", "parameter", "optional_parameter", "affine_linear", "convolution", "gpt",
                     "multimodal", "vision_encoder", "patch_embeddings"})
# Kinds whose `type` defaults depend on the parent: GDN and KDA normalize with a gated RMS norm.
_NESTED_DEFAULT_TYPES = {("gdn", "normalization"): "gated_rms_norm", ("kda", "normalization"): "gated_rms_norm"}


def resolve(kind: str, value: Any, path: Path = ()) -> Any:
    """A complete config of `kind` from a sparse one: defaults and default subclasses applied, training fields
    dropped."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"native config: {dotted(path)} should be a mapping, got {value!r}")
    spec = KINDS[kind]
    type_name = value.get("type", spec.default_type)
    type_name = (spec.aliases or {}).get(type_name, type_name)
    if type_name not in spec.types:
        raise ConfigError(
            f"native config: {dotted(path + ('type',))} = {type_name!r} is not a known {kind} type "
            f"(known: {', '.join(sorted(spec.types))}); check the checkpoint or report the type"
        )
    fields = spec.types[type_name]
    unknown = sorted(set(value) - set(fields) - TRAINING_FIELDS - {"type"})
    if unknown:
        raise ConfigError(
            f"native config: unknown field(s) {', '.join(dotted(path + (k,)) for k in unknown)} for {kind} "
            f"type {type_name!r}; weightport refuses to drop settings it does not understand: remove the field if "
            "it is a training setting, or report it"
        )
    out: dict[str, Any] = {} if kind in UNTYPED else {"type": type_name}
    for name, field in fields.items():
        given = value.get(name)
        if isinstance(field, Value):
            if field.arch:
                out[name] = field.default if name not in value else given
        elif isinstance(field, Sub):
            default_type = _NESTED_DEFAULT_TYPES.get((type_name, name))
            if default_type and (given is None or "type" not in given):
                given = {**(given or {}), "type": default_type}
            out[name] = None if field.optional and given is None else resolve(field.kind, given, path + (name,))
        else:
            out[name] = {k: resolve(field.kind, v, path + (name, k)) for k, v in (given or {}).items()}
    _validate(kind, out, path)
    return out


def _validate(kind: str, cfg: dict, path: Path) -> None:
    """Resolve derived defaults and check the invariants Fast-LLM enforces at validation."""
    if kind == "mlp" and cfg["type"] == "hybrid_moe":
        if cfg["routed"]["type"] != "moe" or cfg["routed"]["shared_experts"] or cfg["dense"]["type"] != "mlp":
            raise ConfigError(f"native config: {dotted(path)} needs a dense `mlp` and a routed `moe` without shared "
                              "experts")
        return
    if kind == "mlp" and cfg["activation"] is None:
        cfg["activation"] = "silu" if cfg["gated"] else "gelu"
    if kind == "rotary" and cfg["type"] == "yarn" and cfg["attention_factor"] is None:
        cfg["attention_factor"] = 0.1 * math.log(cfg["scale_factor"]) + 1.0
    if kind == "mixer" and cfg["type"] == "stochastic":
        if not cfg["mixers"] or any(m["type"] == "stochastic" for m in cfg["mixers"].values()):
            raise ConfigError(f"native config: {dotted(path)} needs at least one mixer, none of them stochastic")
        if cfg["main_mixer_name"] is None:
            cfg["main_mixer_name"] = next(iter(cfg["mixers"]))
    if kind == "mixer" and cfg["type"] == "attention":
        heads, groups = cfg["heads"], cfg["head_groups"]
        if not all(isinstance(v, int) and v > 0 for v in (heads, groups, cfg["head_size"])) or heads % groups:
            raise ConfigError(
                f"native config: {dotted(path)} has heads={heads}, head_groups={groups}, "
                f"head_size={cfg['head_size']}; they must be positive and heads a multiple of head_groups"
            )


def blocks(sequence: dict) -> list[dict]:
    """The block config at each position of a resolved block sequence (fixed or pattern)."""
    count = sequence["num_blocks"]
    if sequence["type"] == "fixed":
        return [sequence["block"]] * count
    pattern = sequence["pattern"]
    if not pattern:
        raise ConfigError("native config: a pattern block sequence needs a non-empty `pattern`")
    missing = sorted(set(pattern) - set(sequence["blocks"]))
    if missing:
        raise ConfigError(f"native config: pattern names {missing} have no entry in `blocks`")
    return [sequence["blocks"][pattern[i % len(pattern)]] for i in range(count)]


def prediction_blocks(config: dict) -> list[dict]:
    """The extra blocks of multi-token prediction: one copy of the decoder's last block per extra head."""
    return [blocks(config["decoder"])[-1]] * (config["head"]["prediction_heads"] - 1)


def block_names(sequence: dict) -> list[str]:
    """The block name at each position (`""` for every position of a fixed sequence)."""
    if sequence["type"] == "fixed":
        return [""] * sequence["num_blocks"]
    pattern = sequence["pattern"]
    return [pattern[i % len(pattern)] for i in range(sequence["num_blocks"])]


def has_bias(layer_owner: dict, layer: str) -> bool:
    """Effective bias of a linear layer: its own `bias.enabled` if set, else the owner's `add_linear_biases`."""
    enabled = layer_owner[layer]["bias"]["enabled"]
    return layer_owner["add_linear_biases"] if enabled is None else bool(enabled)


def canonical(config: Any) -> Any:
    """A form of a resolved config in which equivalent configs are equal: block sequences become the list of
    their blocks per position, and unset linear biases take their owner's `add_linear_biases`."""
    if isinstance(config, list):
        return [canonical(v) for v in config]
    if not isinstance(config, dict):
        return config
    if config.get("type") in ("fixed", "pattern") and "num_blocks" in config:
        return {"blocks": [canonical(b) for b in blocks(config)]}
    out = {k: canonical(v) for k, v in config.items()}
    if isinstance(config.get("add_linear_biases"), bool):
        for value in out.values():
            if (isinstance(value, dict) and isinstance(value.get("bias"), dict)
                    and value["bias"].get("enabled") is None):
                value["bias"] = {**value["bias"], "enabled": config["add_linear_biases"]}
    return out
