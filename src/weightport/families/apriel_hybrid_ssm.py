"""Apriel hybrid SSM (`apriel_hybrid_ssm`, `AprielHybridSSMForCausalLM`, remote code): Mistral whose layers each
pick a mixer, named per layer by `hybrid_block_layout`: `t` attention (under `self_attn`), `m2` Mamba and `gdn`
gated delta net (both under `mixer`). Mamba sizes are in `ssm_cfg` and GDN sizes in `linear_attn_config`, shared
by every layer of that kind. The HF config class also writes `layer_types` and default `ssm_cfg` /
`linear_attn_config` entries; they are accepted and kept.
"""

import math

from weightport.families import llama, mistral
from weightport.spec import (
    Blocks, Constant, From, Ignore, Layout, Linear, Merged, Nested, NoBiases, Rename, Switch, Tensor, override,
    section,
)

S, L = "ssm_cfg", "linear_attn_config"
AUTO_MAP = {
    "AutoConfig": "configuration_apriel_hybrid_ssm.AprielHybridSSMConfig",
    "AutoModel": "modeling_apriel_hybrid_ssm.AprielHybridSSMModel",
    "AutoModelForCausalLM": "modeling_apriel_hybrid_ssm.AprielHybridSSMForCausalLM",
}


MIXER_BIAS = "follows the mixer's bias switch"
GATED_NORM = (  # Fast-LLM types this field as a gated RMS norm, and its importers leave it at its defaults
    Constant("gated_rms_norm", native="normalization.type", write=False),
    Constant(1e-5, native="normalization.epsilon", reason="not configurable in HF", write=False),
    Constant(False, native="normalization.zero_centered", write=False),
    Constant("silu", native="normalization.activation", write=False),
)
MAMBA = (
    Constant("mamba", native="type"),
    Rename("state_size", f"{S}.d_state"),
    Rename("d_inner", f"{S}.d_inner", default=lambda hf: hf["hidden_size"] * hf[S].get("expand", 1)),
    Rename("d_xb", f"{S}.d_xb", default=lambda hf: hf["hidden_size"]),
    Rename("dt_rank", f"{S}.dt_rank", default=lambda hf: math.ceil(hf["hidden_size"] / 16)),
    Rename("add_linear_biases", f"{S}.bias"),
    Rename("repeat_kv_before_conv", f"{S}.repeat_kv_before_conv", default=True),
    Rename("convolution_layer.kernel_size", f"{S}.d_conv", default=4),
    Rename("convolution_layer.bias.enabled", f"{S}.conv_bias", default=True, none_from="add_linear_biases"),
    Rename("dt_layer.bias.enabled", f"{S}.dt_proj_bias", default=True, none_from="add_linear_biases"),
    Constant(None, native="convolution_layer.activation"),
    *NoBiases("z_layer", "x_layer", "b_layer", "c_layer", "dt_input_layer", "output_layer", reason=MIXER_BIAS),
)
GDN = (
    Constant("gdn", native="type"),
    Rename("value_heads", f"{L}.gdn_num_value_heads"),
    Rename("key_heads", f"{L}.gdn_num_key_heads"),
    Rename("key_head_dim", f"{L}.gdn_key_head_dim"),
    Rename("value_head_dim", f"{L}.gdn_value_head_dim"),
    Rename("convolution_layer.kernel_size", f"{L}.gdn_linear_conv_kernel_size", default=4),
    Constant(None, native="convolution_layer.activation"),
    Constant(None, native="convolution_layer.bias.enabled"),
    *GATED_NORM,
    *NoBiases("qkv_projection_layer", "ba_projection_layer", "output_layer", reason=MIXER_BIAS),
)
ATTENTION_BLOCK = section(mistral.SPEC.config, "decoder.block")
# Every key the HF config class may write into ssm_cfg / linear_attn_config; layers of a kind read theirs.
SSM_KEYS = ("d_state", "d_inner", "expand", "d_xb", "dt_rank", "bias", "repeat_kv_before_conv", "d_conv",
            "conv_bias", "dt_proj_bias", "activation", "chunk_size", "dt_init", "dt_init_floor", "dt_max", "dt_min",
            "dt_scale", "n_qk_heads", "n_v_heads")
GDN_KEYS = ("gdn_num_value_heads", "gdn_num_key_heads", "gdn_key_head_dim", "gdn_value_head_dim",
            "gdn_linear_conv_kernel_size")
KDA_KEYS = ("head_dim", "num_heads", "short_conv_kernel_size")

CONFIG = (
    Layout("decoder", "hybrid_block_layout", {
        "t": ATTENTION_BLOCK,
        "m2": override(ATTENTION_BLOCK, (Nested("mixer", "", MAMBA),)),
        "gdn": override(ATTENTION_BLOCK, (Nested("mixer", "", GDN),)),
    }, single_is_fixed=True),
    Constant(AUTO_MAP, hf="auto_map", reason="the transformers classes are remote code"),
    Ignore(hf="layer_types", reason="a per-layer copy of hybrid_block_layout the HF config class adds for vLLM"),
    *(Ignore(hf=f"{S}.{key}", reason="read by m2 layers; unused by other layers or only at initialization")
      for key in SSM_KEYS),
    *(Ignore(hf=f"{L}.{key}", reason="read by gdn layers") for key in GDN_KEYS),
    *(Ignore(hf=f"{L}.{key}", reason="KDA settings; this format has no layer name for KDA") for key in KDA_KEYS),
)

MAMBA_WEIGHTS = (
    Linear("in_proj", "in_proj"), Linear("dt_in_proj", "dt_in_proj"), Linear("dt_proj", "dt_proj"),
    Linear("convolution", "conv1d"), Tensor("A_log", "A_log"), Tensor("D", "D"), Linear("out_proj", "out_proj"),
)
GDN_WEIGHTS = (
    Linear("in_proj_qkvz", "in_proj_qkvz"), Linear("in_proj_ba", "in_proj_ba"), Linear("convolution", "convolution"),
    Linear("out_proj", "out_proj"), Tensor("A_log", "A_log"), Tensor("dt_bias", "dt_bias"),
    Tensor("norm.weight", "norm.weight"),
)
BLOCK_WEIGHTS = override(llama.BLOCK_WEIGHTS, (Switch("mixer", "mixer", {
    "attention": ("self_attn", llama.ATTENTION_WEIGHTS), "mamba": ("mixer", MAMBA_WEIGHTS),
    "gdn": ("mixer", GDN_WEIGHTS),
}),))

# The class fills `ssm_cfg` entry by entry from these defaults (d_inner 32 * 128, d_xb None: the hidden size).
SSM_DEFAULTS = {
    "d_state": 64, "n_v_heads": 32, "n_qk_heads": 32, "expand": 1, "chunk_size": 128, "activation": "identity",
    "bias": False, "d_conv": 4, "d_inner": 32 * 128, "d_xb": None, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
    "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True,
}
LAYER_TYPES = {"t": "full_attention", "swa": "sliding_attention", "gdn": "gated_delta_net", "kl": "kimi_linear",
               "m2": "mamba2"}
HF_CLASS = mistral.HF_CLASS.extend(
    "AprielHybridSSMConfig",
    "Fast-LLM 0.4.0 (7d61a1b) fast_llm_external_models/apriel_hybrid_ssm/configuration_apriel_hybrid_ssm.py", {
        "hybrid_block_layout": ["t"],
        "ssm_cfg": Merged({**SSM_DEFAULTS, "dt_proj_bias": True, "repeat_kv_before_conv": True}),
        "layer_types": From(lambda hf: [LAYER_TYPES[name] for name in hf["hybrid_block_layout"]],
                            "hybrid_block_layout in vLLM's names"),
        "linear_attn_config": Merged({"short_conv_kernel_size": 4, "head_dim": 128, "num_heads": 32}),
    })

SPEC = mistral.SPEC.extend(
    name="apriel_hybrid_ssm", architecture="AprielHybridSSMForCausalLM", config=CONFIG,
    drop=("decoder.type", "decoder.block"), weights=(Blocks("decoder", llama.LAYERS, BLOCK_WEIGHTS),),
    hf_layout="transformers4",  # the remote config class is a transformers 4 MistralConfig
    hf_class=HF_CLASS,
)
