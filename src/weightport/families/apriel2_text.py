"""Apriel2 text (`apriel2_text`, `Apriel2ForCausalLM`, remote code): a typed HF config that mirrors the native
tree. The decoder is `fixed` or `pattern` with named blocks; each block's mixer is attention, Mamba, GDN, KDA or
a stochastic mixer holding several named sub-mixers (all stored). Native field names are used in HF too, except
the rotary type `mistral_1d` (native `default`) and activations (HF names).
"""

from weightport.families import llama
from weightport.families.apriel_hybrid_ssm import GATED_NORM, GDN_WEIGHTS, MAMBA_WEIGHTS
from weightport.spec import (
    Blocks, Choice, Constant, Entries, From, HFClass, Ignore, Items, Linear, ModelSpec, Nested, NoBiases, Rename,
    Section, Switch, T, Tensor, override,
)

AUTO_MAP = {
    "AutoConfig": "configuration_apriel2.Apriel2TextConfig",
    "AutoModel": "modeling_apriel2.Apriel2TextModel",
    "AutoModelForCausalLM": "modeling_apriel2.Apriel2ForCausalLM",
}


def _same(*names: str, **defaults: object) -> tuple:
    """Fields with the same name on both sides (with an optional default)."""
    return tuple(Rename(n, n, **({"default": defaults[n]} if n in defaults else {})) for n in names + tuple(defaults))


def _bias(*layers: str) -> tuple:
    """Per-layer bias switches, written only when set."""
    return tuple(Rename(f"{layer}.bias.enabled", f"{layer}.bias.enabled", default=None, omit=None, unset=None)
                 for layer in layers)


CONTEXT = ("theta", "scale_factor", "original_context_length")
ROTARY = Choice("rotary", "rotary", options={
    "default": (("mistral_1d", "default"), _same("theta")),
    "llama3": ("llama3", _same(*CONTEXT, "low_frequency_factor", "high_frequency_factor")),
    "yarn": ("yarn", _same(*CONTEXT, "beta_fast", "beta_slow", attention_factor=None)),
})
NORM = override(GATED_NORM, (Constant("gated_rms_norm", native="normalization.type"),))  # the type is written
CONVOLUTION = (Rename("convolution_layer.kernel_size", "convolution_layer.kernel_size", default=4),
               Constant(None, native="convolution_layer.activation", write=False),
               Constant(None, native="convolution_layer.bias.enabled", write=False))
ATTENTION = (
    *_same("heads", "head_groups", "head_size"),
    ROTARY,
    # Fast-LLM 0.4.0's modeling_apriel2.py (Apriel2Attention) reads add_linear_biases with a default of false, so it
    # is always written; Fast-LLM's exporter leaves it out when true (gpt/conversion/apriel2.py), and an HF config
    # without it reads as true, as its importer reads it.
    Rename("add_linear_biases", "add_linear_biases", default=True),
    Rename("window_size", "window_size", default=None, omit=None, unset=None),
    *_bias("query_layer", "key_layer", "value_layer", "dense_layer"),
    Constant(True, native="causal", reason="Apriel2 attention is causal", write=False),
    Constant(0.5, native="softmax_scale_power", write=False),
    *(Constant(None, native=norm) for norm in ("query_norm", "key_norm", "value_norm")),
    Constant(False, native="shared_key_value"),
    Constant(0.0, native="dropout", reason="Apriel2 has no attention dropout setting", write=False),
)
MAMBA = (
    *_same("state_size", "d_inner", "d_xb", "dt_rank", "add_linear_biases"),
    Rename("convolution_layer.kernel_size", "d_conv", default=4),
    # Fast-LLM 0.4.0's modeling_apriel2.py (Apriel2Mamba) reads conv_bias and dt_proj_bias with `[...]`, so they are
    # always written, as the bias the layer has (an unset switch follows add_linear_biases). Fast-LLM's exporter
    # writes an unset switch as null (gpt/conversion/apriel2.py, _apriel2_mamba_aux_export), which that file builds as
    # no bias; null or absent reads as unset, as its importer reads it.
    Rename("convolution_layer.bias.enabled", "conv_bias", default=None, none_from="add_linear_biases"),
    Rename("dt_layer.bias.enabled", "dt_proj_bias", default=None, none_from="add_linear_biases"),
    Constant(None, native="convolution_layer.activation"),
    Constant(True, native="repeat_kv_before_conv", reason="Apriel2 Mamba repeats K/V before the convolution"),
    *NoBiases("z_layer", "x_layer", "b_layer", "c_layer", "dt_input_layer", "output_layer"),
)
GDN = (
    *_same("value_heads", "key_heads", "key_head_dim", "value_head_dim"), *CONVOLUTION, *NORM,
    *NoBiases("qkv_projection_layer", "ba_projection_layer", "output_layer"),
)
KDA = (
    *_same("heads", "head_dim"), *CONVOLUTION,
    Rename("normalization.epsilon", "normalization.epsilon", default=1e-5),
    *(rule for rule in NORM if rule.native != "normalization.epsilon"),
    *NoBiases(*(f"{p}_projection_layer" for p in ("q", "k", "v", "f_a", "f_b", "g_a", "g_b", "beta", "output"))),
)
MIXERS = {"attention": ("attention", ATTENTION), "mamba": ("mamba", MAMBA), "gdn": ("gdn", GDN), "kda": ("kda", KDA)}
STOCHASTIC = (
    Entries("mixers", "mixers", (Choice("", "", MIXERS),)),
    Rename("main_mixer_name", "main_mixer_name"),
    Rename("sampling_strategy", "sampling_strategy", default="uniform", omit="uniform", unset="uniform"),
)
MLP = (
    *_same("intermediate_size", "gated", "add_linear_biases"),
    Rename("activation", "activation", values=llama.ACTIVATIONS),
    *_bias("layer_1", "layer_2"),
    Constant(None, native="pre_norm"),
    Constant(None, native="post_norm"),
)
RMS_NORM = {"rms_norm": ("rms_norm", (Rename("epsilon", "epsilon"), Constant(False, native="zero_centered")))}
BLOCK = (
    Constant("decoder", native="type"),
    Choice("mixer", "mixer", {**MIXERS, "stochastic": ("stochastic", STOCHASTIC)}),
    Choice("mlp", "mlp", {"mlp": ("mlp", MLP)}),
    Choice("normalization", "normalization", RMS_NORM),
    *(Constant(None, native=f"{n}_normalization") for n in ("pre_mixer", "pre_mlp", "post_mixer", "post_mlp")),
    Constant(None, native="output_scale.enabled", write=False),
)
CONFIG = (
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.vocab_size", "vocab_size"),
    Rename("tied_embedding_weight", "tie_word_embeddings", default=False),
    Constant(1.0, native="embeddings.embedding_scale"),
    Constant(None, native="embeddings.position_embeddings.enabled", write=False),
    Ignore(native="embeddings.num_position_embeddings", reason="used only by position embeddings"),
    Ignore(hf="embeddings.max_position_embeddings", reason="native models have no position limit; kept in metadata"),
    Choice("decoder", "decoder", {
        "fixed": ("fixed", (Rename("num_blocks", "num_blocks"), Nested("block", "block", BLOCK))),
        "pattern": ("pattern", (*_same("num_blocks", "pattern"), Entries("blocks", "blocks", BLOCK))),
    }),
    Choice("head.normalization", "head.normalization", RMS_NORM),
    Constant(1, native="head.prediction_heads"),
    Constant(None, native="head.final_logit_softcap"),
    Constant(1.0, native="head.logits_scale_factor", write=False),
    Constant("none", native="peft.type", reason="merge adapters before converting"),
    Constant(AUTO_MAP, hf="auto_map", reason="the transformers classes are remote code"),
)

KDA_WEIGHTS = (
    *(Linear(f"{p}_proj", f"{p}_proj") for p in ("q", "k", "v", "f_a", "f_b", "g_a", "g_b", "beta", "o")),
    *(Linear(f"{p}_conv", f"{p}_conv") for p in ("q", "k", "v")),
    Tensor("A_log", "A_log"), Tensor("dt_bias", "dt_bias"), Tensor("norm.weight", "norm.weight"),
)
MIXER_WEIGHTS = {"attention": ("", llama.ATTENTION_WEIGHTS), "mamba": ("", MAMBA_WEIGHTS), "gdn": ("", GDN_WEIGHTS),
                 "kda": ("", KDA_WEIGHTS)}
BLOCK_WEIGHTS = (
    Switch("mixer", "mixer", {**{k: ("mixer", rules) for k, (_, rules) in MIXER_WEIGHTS.items()},
                              "stochastic": ("mixer",
                                             (Items("mixers", "mixers", (Switch("", "", MIXER_WEIGHTS),)),))}),
    Section("mlp", "mlp", (
        Switch("", "", {True: ("", (Linear("layer_1", "gate_proj", "up_proj"),)),
                               False: ("", (Linear("layer_1", "up_proj"),))}, on="gated"),
        Linear("layer_2", "down_proj", ops=(T(),)),
    )),
    Tensor("norm_1.weight", "input_layernorm.weight"),
    Tensor("norm_2.weight", "post_attention_layernorm.weight"),
)
WEIGHTS = (
    Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
    Blocks("decoder", "model.decoder.blocks", BLOCK_WEIGHTS),
    Tensor("head.final_norm.weight", "model.norm.weight"),
    Tensor("head.output_weights", "lm_head.weight", tied="embeddings.word_embeddings_weight"),
)



def _default_decoder(hf: dict) -> dict:
    block = {
        "mixer": {"type": "attention", "heads": 32, "head_groups": 32, "head_size": hf["hidden_size"] // 32,
                  "rotary": {"type": "default", "theta": 10000.0}, "add_linear_biases": False},
        "mlp": {"type": "mlp", "intermediate_size": hf["hidden_size"] * 4, "activation": "silu", "gated": True,
                "add_linear_biases": False},
        "normalization": {"type": "rms_norm", "epsilon": 1e-5},
    }
    return {"type": "fixed", "num_blocks": 32, "block": block}


HF_CLASS = HFClass("Apriel2TextConfig", "Fast-LLM 0.4.0 (7d61a1b) fast_llm_external_models/apriel2/"
                   "configuration_apriel2.py", {
    "hidden_size": 4096, "vocab_size": 32000, "decoder": From(_default_decoder, "a 32-layer attention decoder"),
    "embeddings": From(lambda hf: {"max_position_embeddings": 2048}, "2048 positions"),
    "head": From(lambda hf: {"normalization": {"type": "rms_norm", "epsilon": 1e-5}}, "an RMS-normed head"),
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "use_cache": True,
})

SPEC = ModelSpec(name="apriel2_text", model_type="apriel2_text", architecture="Apriel2ForCausalLM", config=CONFIG,
                 weights=WEIGHTS, hf_class=HF_CLASS)
