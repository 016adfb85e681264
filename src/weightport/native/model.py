"""The native model's parameters (names and shapes) as a function of its resolved config.

This mirrors the module tree Fast-LLM builds, independently of any family declaration: a plan's native side must
equal this inventory exactly, which is how missing, extra and mis-shaped tensors are caught on both directions.
"""

from __future__ import annotations

from weightport.native.schema import blocks, has_bias, prediction_blocks

Shapes = dict[str, tuple[int, ...]]


def parameters(config: dict) -> Shapes:
    """Every stored parameter of a resolved `gpt` base-model config, by native name."""
    hidden = config["hidden_size"]
    vocab = config["embeddings"]["vocab_size"]
    out: Shapes = {"embeddings.word_embeddings_weight": (vocab, hidden)}
    if config["embeddings"]["position_embeddings"]["enabled"]:
        out["embeddings.position_embeddings_weight"] = (config["embeddings"]["num_position_embeddings"], hidden)
    for i, block in enumerate(blocks(config["decoder"])):
        out.update(_block(block, hidden, f"decoder.{i}"))
    out.update(_norm(config["head"]["normalization"], hidden, "head.final_norm"))
    for j, block in enumerate(prediction_blocks(config)):  # extra heads' output weights are tied, never stored
        out.update(_block(block, hidden, f"multi_token_prediction.blocks.{j}"))
        out.update(_norm(config["head"]["normalization"], hidden, f"multi_token_prediction.heads.{j}.final_norm"))
    if not config["tied_embedding_weight"]:
        out["head.output_weights"] = (vocab, hidden)
    if config.get("vision_encoder"):
        out.update(_vision(config["vision_encoder"], hidden, "vision_encoder"))
    return out


def _vision(vision: dict, text_hidden: int, prefix: str) -> Shapes:
    hidden, patches = vision["hidden_size"], vision["embeddings"]
    size = 3 * patches["patch_height"] * patches["patch_width"]  # input channels are fixed at 3
    out = _linear({"add_linear_biases": False, **patches}, "patch_embeddings",
                  f"{prefix}.embeddings.patch_embeddings", hidden, size)
    out.update(_norm(patches["normalization"], hidden, f"{prefix}.embeddings.normalization"))
    for i, block in enumerate(blocks(vision["encoder"])):
        out.update(_block(block, hidden, f"{prefix}.encoder.{i}"))
    out.update(_mlp(vision["adapter"], hidden, f"{prefix}.adapter", out_size=text_hidden))
    return out


def _norm(norm: dict | None, size: int, prefix: str) -> Shapes:
    kind = None if norm is None else norm["type"]
    if kind in ("layer_norm",):
        return {f"{prefix}.weight": (size,), f"{prefix}.bias": (size,)}
    if kind in ("rms_norm", "gated_rms_norm"):
        return {f"{prefix}.weight": (size,)}
    return {}


def _linear(owner: dict, layer: str, name: str, out_size: int, in_size: int, bias_size: int | None = None) -> Shapes:
    shapes: Shapes = {f"{name}.weight": (out_size, in_size)}
    if has_bias(owner, layer):
        shapes[f"{name}.bias"] = (bias_size if bias_size is not None else out_size,)
    return shapes


def _block(block: dict, hidden: int, prefix: str) -> Shapes:
    out: Shapes = {}
    out.update(_norm(block["pre_mixer_normalization"] or block["normalization"], hidden, f"{prefix}.norm_1"))
    out.update(_norm(block["pre_mlp_normalization"] or block["normalization"], hidden, f"{prefix}.norm_2"))
    out.update(_norm(block["post_mixer_normalization"], hidden, f"{prefix}.post_mixer_norm"))
    out.update(_norm(block["post_mlp_normalization"], hidden, f"{prefix}.post_mlp_norm"))
    if block["output_scale"]["enabled"]:
        out[f"{prefix}.output_scale"] = (1,)
    out.update(MIXERS[block["mixer"]["type"]](block["mixer"], hidden, f"{prefix}.mixer"))
    out.update(MLPS[block["mlp"]["type"]](block["mlp"], hidden, f"{prefix}.mlp"))
    return out


def _attention(mixer: dict, hidden: int, prefix: str) -> Shapes:
    heads, groups, size = mixer["heads"], mixer["head_groups"], mixer["head_size"]
    kv_rows = (1 if mixer["shared_key_value"] else 2) * groups * size
    out = _linear(mixer, "query_layer", f"{prefix}.query", heads * size, hidden)
    out.update(_linear(mixer, "key_layer", f"{prefix}.key_value", kv_rows, hidden))
    out.update(_linear(mixer, "dense_layer", f"{prefix}.dense", hidden, heads * size))
    for norm in ("query_norm", "key_norm", "value_norm"):
        out.update(_norm(mixer[norm], size, f"{prefix}.{norm}"))
    return out


def _mlp(mlp: dict, hidden: int, prefix: str, experts: int = 1, out_size: int | None = None) -> Shapes:
    size, out_size = mlp["intermediate_size"] * experts, out_size or hidden
    out = _linear(mlp, "layer_1", f"{prefix}.layer_1", size * (2 if mlp["gated"] else 1), hidden)
    out.update(_linear(mlp, "layer_2", f"{prefix}.layer_2", size, out_size, bias_size=out_size))
    out.update(_norm(mlp["pre_norm"], hidden, f"{prefix}.pre_norm"))
    out.update(_norm(mlp["post_norm"], hidden, f"{prefix}.post_norm"))
    return out


def _moe(mlp: dict, hidden: int, prefix: str) -> Shapes:
    experts = mlp["experts"]
    out = {f"{prefix}.router.weight": (experts - mlp["shared_experts"], hidden)}
    out.update(_mlp(mlp, hidden, prefix, experts))
    out.update(_norm(mlp["router_normalization"], hidden, f"{prefix}.router_normalization"))
    if mlp["router_scale"]["enabled"]:
        out[f"{prefix}.router_scale"] = (hidden,)
    if mlp["router_per_expert_scale"]["enabled"]:
        out[f"{prefix}.router_per_expert_scale"] = (experts,)
    return out


def _conv(mixer: dict, name: str, channels: int, bias: bool | None = None) -> Shapes:
    layer = mixer["convolution_layer"]
    out: Shapes = {f"{name}.weight": (channels, 1, layer["kernel_size"])}
    if bias if bias is not None else layer["bias"]["enabled"]:
        out[f"{name}.bias"] = (channels,)
    return out


def _mamba(mixer: dict, hidden: int, prefix: str) -> Shapes:
    inner, xb, rank, state = mixer["d_inner"], mixer["d_xb"], mixer["dt_rank"], mixer["state_size"]
    out = _linear(mixer, "z_layer", f"{prefix}.in_proj", 2 * inner + 2 * xb, hidden)
    out.update(_linear(mixer, "dt_input_layer", f"{prefix}.dt_in_proj", rank, hidden))
    out.update(_linear(mixer, "dt_layer", f"{prefix}.dt_proj", inner, rank))
    channels = inner if mixer["repeat_kv_before_conv"] else xb
    out.update(_conv(mixer, f"{prefix}.convolution", channels, has_bias(mixer, "convolution_layer")))
    out.update({f"{prefix}.A_log": (inner, state), f"{prefix}.D": (inner,)})
    out.update(_linear(mixer, "output_layer", f"{prefix}.out_proj", hidden, inner))
    return out


def _plain(mixer: dict, layer: str, name: str, out_size: int, in_size: int) -> Shapes:
    """A linear layer of a mixer without a global bias switch: biased only when its bias is enabled."""
    return _linear({**mixer, "add_linear_biases": False}, layer, name, out_size, in_size)


def _gdn(mixer: dict, hidden: int, prefix: str) -> Shapes:
    keys = mixer["key_heads"] * mixer["key_head_dim"]
    values = mixer["value_heads"] * mixer["value_head_dim"]
    out = _plain(mixer, "qkv_projection_layer", f"{prefix}.in_proj_qkvz", 2 * keys + 2 * values, hidden)
    out.update(_plain(mixer, "ba_projection_layer", f"{prefix}.in_proj_ba", 2 * mixer["value_heads"], hidden))
    out.update(_conv(mixer, f"{prefix}.convolution", 2 * keys + values))
    out.update(_plain(mixer, "output_layer", f"{prefix}.out_proj", hidden, values))
    out.update({f"{prefix}.dt_bias": (mixer["value_heads"],), f"{prefix}.A_log": (mixer["value_heads"],)})
    out.update(_norm(mixer["normalization"], mixer["value_head_dim"], f"{prefix}.norm"))
    return out


def _kda(mixer: dict, hidden: int, prefix: str) -> Shapes:
    heads, dim = mixer["heads"], mixer["head_dim"]
    out: Shapes = {}
    for name in ("q", "k", "v"):
        out.update(_plain(mixer, f"{name}_projection_layer", f"{prefix}.{name}_proj", heads * dim, hidden))
        out.update(_conv(mixer, f"{prefix}.{name}_conv", heads * dim))
    for name in ("f", "g"):
        out.update(_plain(mixer, f"{name}_a_projection_layer", f"{prefix}.{name}_a_proj", dim, hidden))
        out.update(_plain(mixer, f"{name}_b_projection_layer", f"{prefix}.{name}_b_proj", heads * dim, dim))
    out.update(_plain(mixer, "beta_projection_layer", f"{prefix}.beta_proj", heads, hidden))
    out.update(_plain(mixer, "output_projection_layer", f"{prefix}.o_proj", hidden, heads * dim))
    out.update({f"{prefix}.dt_bias": (heads * dim,), f"{prefix}.A_log": (heads,)})
    out.update(_norm(mixer["normalization"], dim, f"{prefix}.norm"))
    return out


def _stochastic(mixer: dict, hidden: int, prefix: str) -> Shapes:
    out: Shapes = {}
    for name, sub in mixer["mixers"].items():
        out.update(MIXERS[sub["type"]](sub, hidden, f"{prefix}.mixers.{name}"))
    return out


MIXERS = {"attention": _attention, "mamba": _mamba, "gdn": _gdn, "kda": _kda, "stochastic": _stochastic}
def _hybrid_moe(mlp: dict, hidden: int, prefix: str) -> Shapes:
    out = _mlp(mlp["dense"], hidden, f"{prefix}.dense")
    out.update(_moe(mlp["routed"], hidden, f"{prefix}.routed"))
    out.update(_norm(mlp["pre_norm"], hidden, f"{prefix}.pre_norm"))
    out.update(_norm(mlp["post_norm"], hidden, f"{prefix}.post_norm"))
    return out


MLPS = {"mlp": _mlp, "moe": _moe, "hybrid_moe": _hybrid_moe}
