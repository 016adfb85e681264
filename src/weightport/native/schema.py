"""The native (Fast-LLM) base-model config schema, as data: kinds, their `type` subclasses, fields and defaults.

Source: Fast-LLM 0.4.0 (commit 7d61a1b), the config classes under `fast_llm/layers/**/config.py`,
`fast_llm/models/gpt/config.py` and `fast_llm/layers/vision/config.py`. A kind is a Fast-LLM config base class,
its types are the subclasses registered under their `type` names, and every field those classes define is listed:
`Value` and `Sub` fields describe the model; `Inert` fields (training, loss, initialization, parallelism,
learning-rate scales, kernel choices) do not change what the model computes, so any value is accepted and none is
converted. `tests/fastllm/test_schema_matches.py` reads Fast-LLM's classes and fails when the two disagree.

Native configs on disk are sparse: only explicitly set fields and `type` discriminators are written (Fast-LLM's
verbose dumps also write `type: null` for classes without types). `resolve` fills in every default and default
subclass (a missing normalization `type` means `layer_norm`, a missing mixer `type` means `attention`, ...) and
drops inert fields, so the rest of weightport always sees complete configs of the model alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from weightport.core.paths import Path, dotted
from weightport.errors import ConfigError, shown
from weightport.native.checkpoint import FAST_LLM_VERSION


@dataclass(frozen=True, slots=True)
class Value:
    """A scalar (or list) field that describes the model, with Fast-LLM's default."""

    default: Any = None


@dataclass(frozen=True, slots=True)
class Inert:
    """A field that does not change what the model computes (any value, scalar or sub-config): accepted on read,
    dropped from resolved configs, never converted. `why` names the kind of setting."""

    why: str


@dataclass(frozen=True, slots=True)
class Sub:
    """A sub-config of a kind. `optional` ones default to None (absent); `only` restricts the types allowed there
    (the first is the default), where Fast-LLM types the field with a subclass."""

    kind: str
    optional: bool = False
    only: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Named:
    """A `dict[str, sub-config]` of a kind (pattern blocks, stochastic sub-mixers)."""

    kind: str


Field = Value | Inert | Sub | Named


@dataclass(frozen=True, slots=True)
class Kind:
    """A config base class: its `type` subclasses, the one used when `type` is absent, and their fields. A kind
    with `typed=False` is a single class with no `type` (it is written as `type: null` at most)."""

    types: dict[str, dict[str, Field]]
    default_type: str
    aliases: dict[str, str] | None = None
    typed: bool = True


LR_SCALE = Inert("learning-rate scale")
INITIALIZATION = Inert("initialization")
TRAINING = Inert("training setting")
LOSS = Inert("loss setting")
KERNEL = Inert("implementation or performance choice")
PARALLELISM = Inert("parallelism setting")
PEFT = Inert("fine-tuning setting")


def _module(**fields: Field) -> dict[str, Field]:
    """Fields of a Fast-LLM module config, which all carry a learning-rate scale."""
    return {**fields, "lr_scale": LR_SCALE}


_PARAMETER = {"initialization": INITIALIZATION, "lr_scale": LR_SCALE, "weight_decay": TRAINING}
_NORM = _module(epsilon=Value(1e-5), zero_centered=Value(False), weight=Sub("parameter"), implementation=KERNEL)
_ROPE_THETA = {"theta": Value(10000.0)}
_MLP = _module(
    intermediate_size=Value(4096), add_linear_biases=Value(True), gated=Value(False), activation=Value(None),
    layer_1=Sub("affine_linear"), layer_2=Sub("affine_linear"), pre_norm=Sub("normalization", optional=True),
    post_norm=Sub("normalization", optional=True), recompute_level=KERNEL,
)
_LANGUAGE_MODEL = _module(
    hidden_size=Value(1024), embeddings=Sub("embeddings"), decoder=Sub("block_sequence"), head=Sub("head"),
    tied_embedding_weight=Value(False), peft=Sub("peft"), use_megatron_initialization=INITIALIZATION,
)
_GATED_NORM = Sub("normalization", only=("gated_rms_norm",))

KINDS: dict[str, Kind] = {
    "gpt": Kind({"gpt": _LANGUAGE_MODEL}, "gpt", typed=False),
    "multimodal": Kind({"multimodal": {
        **_LANGUAGE_MODEL, "vision_encoder": Sub("vision_encoder"), "image_token_index": Value(None),
    }}, "multimodal", typed=False),
    "vision_encoder": Kind({"vision_encoder": _module(
        embeddings=Sub("patch_embeddings"), encoder=Sub("block_sequence"), adapter=Sub("mlp"),
        hidden_size=Value(1024), normalization=Inert("image preprocessing statistics"),
    )}, "vision_encoder", typed=False),
    "patch_embeddings": Kind({"patch_embeddings": _module(
        patch_embeddings=Sub("affine_linear"), normalization=Sub("normalization"), patch_height=Value(16),
        patch_width=Value(16), full_precision_residual=KERNEL,
    )}, "patch_embeddings", typed=False),
    "embeddings": Kind({"embeddings": _module(
        vocab_size=Value(49152), word_embeddings=Sub("parameter"), position_embeddings=Sub("optional_parameter"),
        num_position_embeddings=Value(2048), embedding_scale=Value(1.0), dropout=TRAINING,
        full_precision_residual=KERNEL, vocab_parallel=PARALLELISM,
    )}, "embeddings", typed=False),
    "head": Kind({"head": _module(
        normalization=Sub("normalization"), output_weight=Sub("parameter"), prediction_heads=Value(1),
        final_logit_softcap=Value(None), logits_scale_factor=Value(1.0), losses=LOSS, loss_implementation=KERNEL,
        cross_entropy_splits=KERNEL, prediction_loss_coefficient=LOSS,
    )}, "head", typed=False),
    "block_sequence": Kind({
        "fixed": _module(block=Sub("block"), num_blocks=Value(12)),
        "pattern": _module(blocks=Named("block"), pattern=Value(None), num_blocks=Value(12)),
    }, "fixed"),
    "block": Kind({"decoder": _module(
        mixer=Sub("mixer"), mlp=Sub("mlp"), normalization=Sub("normalization"),
        pre_mixer_normalization=Sub("normalization", optional=True),
        pre_mlp_normalization=Sub("normalization", optional=True),
        post_mixer_normalization=Sub("normalization", optional=True),
        post_mlp_normalization=Sub("normalization", optional=True),
        output_scale=Sub("optional_parameter"), dropout=TRAINING, distillation_model=LOSS,
        distillation_loss_weight=LOSS,
    )}, "decoder"),
    "mixer": Kind({
        "attention": _module(
            heads=Value(8), head_groups=Value(1), head_size=Value(128), add_linear_biases=Value(True),
            query_layer=Sub("affine_linear"), key_layer=Sub("affine_linear"), value_layer=Sub("affine_linear"),
            dense_layer=Sub("affine_linear"), rotary=Sub("rotary"), causal=Value(True),
            softmax_scale_power=Value(0.5), query_norm=Sub("normalization", optional=True),
            key_norm=Sub("normalization", optional=True), value_norm=Sub("normalization", optional=True),
            shared_key_value=Value(False),
            # Feature fields natively, but they change what the model computes: converted or refused.
            window_size=Value(None), dropout=Value(0.0),
            use_flash_attention=KERNEL, implementation=KERNEL,
        ),
        "mamba": _module(
            state_size=Value(16), d_inner=Value(2048), d_xb=Value(1024), dt_rank=Value(64),
            add_linear_biases=Value(True), repeat_kv_before_conv=Value(True),
            **{f"{name}_layer": Sub("affine_linear") for name in ("z", "x", "b", "c", "dt_input", "dt", "output")},
            convolution_layer=Sub("convolution"), d_weight=Sub("parameter"), a_log_weight=Sub("parameter"),
            cross_document_attention=TRAINING,
        ),
        "gdn": _module(
            value_heads=Value(16), key_heads=Value(8), key_head_dim=Value(64), value_head_dim=Value(64),
            normalization=_GATED_NORM, qkv_projection_layer=Sub("affine_linear"),
            ba_projection_layer=Sub("affine_linear"), output_layer=Sub("affine_linear"),
            convolution_layer=Sub("convolution"), dt_bias_weight=Sub("parameter"), a_log_weight=Sub("parameter"),
        ),
        "kda": _module(
            heads=Value(16), head_dim=Value(64), normalization=_GATED_NORM,
            **{f"{name}_projection_layer": Sub("affine_linear")
               for name in ("q", "k", "v", "f_a", "f_b", "g_a", "g_b", "beta", "output")},
            convolution_layer=Sub("convolution"), dt_bias_weight=Sub("parameter"), a_log_weight=Sub("parameter"),
        ),
        "stochastic": _module(
            mixers=Named("mixer"), main_mixer_name=Value(None), sampling_strategy=Value("uniform"),
            sampling_weights=TRAINING, predefined_layouts=TRAINING, predefined_layout_probabilities=TRAINING,
            seed_shift=TRAINING,
        ),
    }, "attention", aliases={"mamba_2": "mamba"}),
    "convolution": Kind({"convolution": _module(
        kernel_size=Value(4), activation=Value(None), weight=Sub("parameter"), bias=Sub("optional_parameter"),
    )}, "convolution", typed=False),
    "mlp": Kind({
        "mlp": _MLP,
        "moe": {
            **_MLP, "router": Sub("linear"), "experts": Value(2), "shared_experts": Value(0),
            "experts_per_token": Value(1), "routing": Value("aux_loss"),
            "router_normalization": Sub("normalization", optional=True),
            "router_scale": Sub("optional_parameter"), "router_input_scale": Value(1.0),
            "router_per_expert_scale": Sub("optional_parameter"),
            "auxiliary_loss_coefficient": LOSS, "z_loss_coefficient": LOSS, "jitter_eps": TRAINING,
            "implementation": KERNEL, "dropless_dynamic_shape": KERNEL,
        },
        "hybrid_moe": _module(
            dense=Sub("mlp", only=("mlp",)), routed=Sub("mlp", only=("moe",)),
            pre_norm=Sub("normalization", optional=True), post_norm=Sub("normalization", optional=True),
        ),
    }, "mlp"),
    "normalization": Kind({
        "layer_norm": {**_NORM, "bias": Sub("parameter")},
        "rms_norm": _NORM,
        "gated_rms_norm": {**_NORM, "activation": Value("silu")},
        "fixed_rms_norm": _module(epsilon=Value(1e-5)),
        "none": _module(),
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
    "peft": Kind({"none": {}, "lora": {"rank": Value(8), "alpha": Value(8.0), "dropout": Value(0.0),
                                       "freeze_others": PEFT}}, "none"),
    "parameter": Kind({"parameter": _PARAMETER}, "parameter", typed=False),
    "optional_parameter": Kind({"optional_parameter": {**_PARAMETER, "enabled": Value(None)}}, "optional_parameter",
                               typed=False),
    "affine_linear": Kind({"affine_linear": _module(weight=Sub("parameter"), bias=Sub("optional_parameter"),
                                                    apply_peft=PEFT)}, "affine_linear", typed=False),
    "linear": Kind({"linear": _module(weight=Sub("parameter"), apply_peft=PEFT)}, "linear", typed=False),
}


def resolve(kind: str, value: Any, path: Path = ()) -> Any:
    """A complete config of `kind` from a sparse one: defaults and default subclasses applied, inert fields dropped.

    Raises ConfigError naming the field for an unknown type or field (Fast-LLM refuses both too) and for values
    that break Fast-LLM's own validation rules."""
    return _resolve(kind, value, path, ())


def _resolve(kind: str, value: Any, path: Path, only: tuple[str, ...]) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"native config: {dotted(path)} should be a mapping, got {shown(value)}; fix the value")
    spec = KINDS[kind]
    type_name = value.get("type")
    if type_name is not None and not isinstance(type_name, str):
        raise ConfigError(f"native config: {dotted(path + ('type',))} = {shown(type_name)} should be a type name; fix "
                          "the value")
    if not spec.typed:
        if type_name is not None:
            raise ConfigError(f"native config: {dotted(path + ('type',))} = {type_name!r}, but a {kind} config has "
                              "no types; remove the field")
        type_name = spec.default_type
    elif type_name is None:  # absent, or `null` in Fast-LLM's verbose dumps: the default subclass
        type_name = only[0] if only else spec.default_type
    type_name = (spec.aliases or {}).get(type_name, type_name)
    if type_name not in spec.types or (only and type_name not in only):
        known = only or tuple(sorted(spec.types))
        raise ConfigError(f"native config: {dotted(path + ('type',))} = {type_name!r} is not a {kind} type allowed "
                          f"there (allowed: {', '.join(known)}); check the checkpoint or report the type")
    fields = spec.types[type_name]
    unknown = sorted(set(value) - set(fields) - {"type"})
    if unknown:
        raise ConfigError(
            f"native config: unknown field(s) {', '.join(dotted(path + (k,)) for k in unknown)} for {kind} "
            f"type {type_name!r}: Fast-LLM {FAST_LLM_VERSION} has no such field, and weightport refuses to drop "
            "settings it does not understand; check the field's spelling, or re-save the checkpoint with that "
            "Fast-LLM version"
        )
    out: dict[str, Any] = {"type": type_name} if spec.typed else {}
    for name, field in fields.items():
        given = value.get(name)
        if isinstance(field, Value):
            if name in value:
                _check_type(field, given, path + (name,))
            out[name] = field.default if name not in value else given
        elif isinstance(field, Sub):
            absent = field.optional and given is None
            out[name] = None if absent else _resolve(field.kind, given, path + (name,), field.only)
        elif isinstance(field, Named):
            if given is not None and not isinstance(given, dict):
                raise ConfigError(f"native config: {dotted(path + (name,))} should be a mapping of named "
                                  f"{field.kind} configs, got {given!r}")
            out[name] = {k: _resolve(field.kind, v, path + (name, k), ()) for k, v in (given or {}).items()}
    _validate(kind, out, path)
    _units(kind, out, path)
    return out


# The most repeated units a model may have: block positions times the experts of their blocks (DeepSeek-V3 has 61 x
# 256, Kimi K2 61 x 384). A count above it is a corrupt or hostile config: walking it would take minutes and gigabytes
# before any tensor could disagree with it. `fits` bounds the blocks by what the files hold.
MAX_UNITS = 2**17


def _units(kind: str, cfg: dict, path: Path) -> None:
    """Raise ConfigError for a repeat count that is negative or beyond MAX_UNITS, before anything is repeated."""
    if kind == "block_sequence":
        experts = max(_experts(cfg), 1)
        if cfg["num_blocks"] * experts > MAX_UNITS:
            raise FieldTypeError(path + ("num_blocks",), cfg["num_blocks"],
                                 f"at most {MAX_UNITS // experts:,} blocks"
                                 + (f" of {experts:,} experts" if experts > 1 else "")
                                 + f" (weightport converts at most {MAX_UNITS:,} block-experts; the largest published "
                                 "models have a few thousand)")
    if kind == "head" and not 1 <= cfg["prediction_heads"] <= 64:
        raise FieldTypeError(path + ("prediction_heads",), cfg["prediction_heads"], "between 1 and 64")


def _experts(node: Any) -> int:
    """The most experts of a mixture of experts in a (resolved) config tree, 0 if it has none."""
    if isinstance(node, list):
        return max(map(_experts, node), default=0)
    if not isinstance(node, dict):
        return 0
    own = node["experts"] if node.get("type") == "moe" and isinstance(node.get("experts"), int) else 0
    return max(own, max(map(_experts, node.values()), default=0))


def block_positions(config: dict) -> int:
    """The block positions of a resolved model config: every block sequence's blocks (decoder, vision encoder) and
    the extra blocks of multi-token prediction. Each position has at least one tensor, so files that hold fewer
    tensors cannot be this model."""
    def count(node: Any) -> int:
        if isinstance(node, list):
            return sum(map(count, node))
        if not isinstance(node, dict):
            return 0
        if node.get("type") in ("fixed", "pattern") and isinstance(node.get("num_blocks"), int):
            return node["num_blocks"]
        return sum(map(count, node.values()))

    return count(config) + max(get_int(config, ("head", "prediction_heads"), 1) - 1, 0)


def get_int(config: dict, path: Path, default: int) -> int:
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    return config if isinstance(config, int) else default


# The kind of value a field holds, from the type of its default (Fast-LLM's fields are typed alike); a float field
# takes an integer too. Fields whose default is None are not checked.
_KINDS = ((bool, (bool,), "true or false"), (int, (int,), "an integer"), (float, (int, float), "a number"),
          (str, (str,), "a string"))


class FieldTypeError(ConfigError):
    """A native field at `path` holds `value`, which is not `expected` (in words); `shown` is the value as messages
    write it (a number of thousands of digits by its length)."""

    def __init__(self, path: Path, value: Any, expected: str):
        self.path, self.value, self.expected = path, value, expected
        self.shown = f"a {len(str(value))}-digit number" if isinstance(value, int) and abs(value) > 10**30 \
            else shown(value)
        super().__init__(f"native config: {dotted(path)} = {self.shown} should be {expected}; fix the value")


def _check_type(field: Value, given: Any, path: Path) -> None:
    """Raise FieldTypeError for a value that is not of the kind of the field's default; an integer (every count and
    size of Fast-LLM's schema) must also be at least 0."""
    if field.default is None:
        return
    for kind, accepted, words in _KINDS:
        if isinstance(field.default, kind):
            if isinstance(given, bool) and kind is not bool or not isinstance(given, accepted):
                raise FieldTypeError(path, given, words)
            if kind is int and given < 0:
                raise FieldTypeError(path, given, "a count or size of at least 0")
            return


def _validate(kind: str, cfg: dict, path: Path) -> None:
    """Resolve derived defaults and check the invariants Fast-LLM enforces at validation."""
    if kind == "mlp" and cfg["type"] == "hybrid_moe":
        if cfg["routed"]["shared_experts"]:
            raise ConfigError(f"native config: {dotted(path)}.routed cannot have shared experts in a hybrid MoE")
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
    pattern = _pattern(sequence)
    return [sequence["blocks"][pattern[i % len(pattern)]] for i in range(count)]


def _pattern(sequence: dict) -> list[str]:
    pattern = sequence["pattern"]
    if not pattern or not isinstance(pattern, list):
        raise ConfigError(f"native config: a pattern block sequence needs a non-empty list `pattern`, got {pattern!r}")
    missing = sorted(set(pattern) - set(sequence["blocks"]))
    if missing:
        raise ConfigError(f"native config: pattern names {missing} have no entry in `blocks`")
    return pattern


def prediction_blocks(config: dict) -> list[dict]:
    """The extra blocks of multi-token prediction: one copy of the decoder's last block per extra head."""
    extra = config["head"]["prediction_heads"] - 1
    if not extra:
        return []
    decoder = blocks(config["decoder"])
    if not decoder:
        raise ConfigError("native config: head.prediction_heads > 1 copies the decoder's last block, but the decoder "
                          "has no blocks; fix decoder.num_blocks")
    return [decoder[-1]] * extra


def block_names(sequence: dict) -> list[str]:
    """The block name at each position (`""` for every position of a fixed sequence)."""
    if sequence["type"] == "fixed":
        return [""] * sequence["num_blocks"]
    pattern = _pattern(sequence)
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
