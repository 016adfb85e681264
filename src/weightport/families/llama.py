"""Llama (`llama`, `LlamaForCausalLM`): the reference dense decoder that Mistral, Qwen2 and others vary.

HF config is flat; the native decoder is a `fixed` sequence of one attention + gated-MLP block. K and V are fused
natively (`key_value` = [K; V] rows), gate and up too (`layer_1` = [gate; up]), and `down_proj` is stored
transposed. Biases are global switches (`attention_bias`, `mlp_bias`).
"""

from weightport.spec import (
    Blocks, Choice, Constant, From, HFClass, Ignore, Linear, Merged, ModelSpec, Nested, NoBiases, Rename, Section, T,
    Tensor,
)

B = "decoder.block"
M = f"{B}.mixer"
P = f"{B}.mlp"

# HF activation name -> native; HF exact `gelu` has no native twin and maps to Fast-LLM's (tanh) `gelu`.
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu", "relu": "relu",
               "relu2": "squared_relu", "sigmoid": "sigmoid", "identity": "identity"}

THETA = Rename("theta", "rope_theta", default=10000.0)
CONTEXT = Rename("original_context_length", "original_max_position_embeddings")
FACTOR = Rename("scale_factor", "factor")
ROTARY = Choice("rotary", "rope_parameters", key="rope_type", default="default", options={
    "default": ("default", (THETA,)),
    "llama3": ("llama3", (THETA, FACTOR, CONTEXT, Rename("low_frequency_factor", "low_freq_factor"),
                          Rename("high_frequency_factor", "high_freq_factor"))),
    "yarn": ("yarn", (THETA, FACTOR, CONTEXT, Rename("attention_factor", "attention_factor", default=None),
                      Rename("beta_fast", "beta_fast", default=32.0), Rename("beta_slow", "beta_slow", default=1.0))),
})


def rope(theta: float) -> Merged:
    """transformers 5's `rope_parameters`: a missing `rope_type` is the older `type`, else `default`; a missing
    `rope_theta` is the class's; a scaled type's missing `original_max_position_embeddings` is the model's
    `max_position_embeddings`."""
    return Merged({
        "rope_theta": theta, "rope_type": From(lambda p: p.get("type", "default"), "`type`, else default"),
        "original_max_position_embeddings": From(
            lambda p: p["max_position_embeddings"] if p["rope_type"] in ("llama3", "yarn", "longrope") else None,
            "for scaled rotary types, max_position_embeddings (transformers 5.24 standardize_rope_params)"),
    })


KV_HEADS = From(lambda hf: hf["num_attention_heads"], "as many KV heads as query heads")
HEAD_DIM = From(lambda hf: hf["hidden_size"] // hf["num_attention_heads"], "hidden_size // num_attention_heads")
HF_CLASS = HFClass("LlamaConfig", "transformers 5.24.0 models/llama/configuration_llama.py", {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": KV_HEADS, "hidden_act": "silu", "max_position_embeddings": 2048,
    "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True, "pad_token_id": None, "bos_token_id": 1,
    "eos_token_id": 2, "pretraining_tp": 1, "tie_word_embeddings": False, "rope_parameters": rope(10000.0),
    "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "head_dim": HEAD_DIM,
})


def default_head_size(hf: dict) -> int:
    if hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError("hidden_size is not a multiple of num_attention_heads; give head_dim explicitly")
    return hf["hidden_size"] // hf["num_attention_heads"]


ATTENTION = (
    Constant("attention", native="type", reason="Llama mixes with attention"),
    Rename("heads", "num_attention_heads"),
    Rename("head_groups", "num_key_value_heads", default=lambda hf: hf["num_attention_heads"]),
    Rename("head_size", "head_dim", default=default_head_size),
    Rename("add_linear_biases", "attention_bias", default=False),
    *NoBiases("query_layer", "key_layer", "value_layer", "dense_layer", reason="biases are global switches"),
    Rename("dropout", "attention_dropout", default=0.0),
    ROTARY,
    Ignore(hf="rope_parameters.type", reason="rope_type's older name, which transformers reads only in its absence"),
    Constant(True, native="causal"),
    Constant(0.5, native="softmax_scale_power", reason="scores are scaled by head_size ** -0.5"),
    Constant(None, native="query_norm"),
    Constant(None, native="key_norm"),
    Constant(None, native="value_norm"),
    Constant(False, native="shared_key_value"),
    Constant(None, native="window_size", reason="Llama attends to the whole context", write=False),
)
MLP = (
    Constant("mlp", native="type"),
    Rename("intermediate_size", "intermediate_size"),
    Rename("add_linear_biases", "mlp_bias", default=False),
    *NoBiases("layer_1", "layer_2", reason="biases are global switches"),
    Constant(True, native="gated", reason="Llama's MLP is gated (gate_proj)"),
    Rename("activation", "hidden_act", values=ACTIVATIONS, default="silu"),
    Constant(None, native="pre_norm"),
    Constant(None, native="post_norm"),
)
BLOCK = (
    Constant("decoder", native="type"),
    Nested("mixer", "", ATTENTION),
    Nested("mlp", "", MLP),
    Constant("rms_norm", native="normalization.type"),
    Rename("normalization.epsilon", "rms_norm_eps", default=1e-6),
    Constant(False, native="normalization.zero_centered"),
    *(Constant(None, native=f"{n}_normalization") for n in ("pre_mixer", "pre_mlp", "post_mixer", "post_mlp")),
    Constant(None, native="output_scale.enabled", write=False),
)
CONFIG = (
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.vocab_size", "vocab_size"),
    Rename("tied_embedding_weight", "tie_word_embeddings", default=False),
    Constant(1.0, native="embeddings.embedding_scale", reason="Llama does not scale embeddings"),
    Constant(None, native="embeddings.position_embeddings.enabled", reason="Llama has rotary positions only",
             write=False),
    Ignore(native="embeddings.num_position_embeddings", reason="used only by position embeddings"),
    Ignore(hf="max_position_embeddings", reason="native models have no position limit; kept in metadata"),
    Ignore(hf="pretraining_tp", reason="a tensor-parallel hint of pretraining; no effect on the model"),
    Constant(False, hf="rope_interleaved", write=False,
             reason="interleaved rotary pairs (nanotron's layout, which SmolLM2 configs name) are not what "
                    "transformers' Llama-style models rotate (halves)"),
    Constant("fixed", native="decoder.type", reason="Llama layers are all alike"),
    Rename("decoder.num_blocks", "num_hidden_layers"),
    Nested(B, "", BLOCK),
    Constant("rms_norm", native="head.normalization.type"),
    Rename("head.normalization.epsilon", "rms_norm_eps", default=1e-6),
    Constant(False, native="head.normalization.zero_centered"),
    Constant(1, native="head.prediction_heads", reason="Llama predicts one token"),
    Constant(None, native="head.final_logit_softcap"),
    Constant(1.0, native="head.logits_scale_factor", reason="Llama does not scale logits", write=False),
    Constant("none", native="peft.type", reason="merge adapters before converting"),
)

ATTENTION_WEIGHTS = (Linear("query", "q_proj"), Linear("key_value", "k_proj", "v_proj"), Linear("dense", "o_proj"))
MLP_WEIGHTS = (Linear("layer_1", "gate_proj", "up_proj"), Linear("layer_2", "down_proj", ops=(T(),)))
BLOCK_WEIGHTS = (
    Section("mixer", "self_attn", ATTENTION_WEIGHTS),
    Section("mlp", "mlp", MLP_WEIGHTS),
    Tensor("norm_1.weight", "input_layernorm.weight"),
    Tensor("norm_2.weight", "post_attention_layernorm.weight"),
)
LAYERS = "model.layers"
WEIGHTS = (
    Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
    Blocks("decoder", LAYERS, BLOCK_WEIGHTS),
    Tensor("head.final_norm.weight", "model.norm.weight"),
    Tensor("head.output_weights", "lm_head.weight", tied="embeddings.word_embeddings_weight"),
)

SPEC = ModelSpec(name="llama", model_type="llama", architecture="LlamaForCausalLM", config=CONFIG, weights=WEIGHTS,
                 hf_class=HF_CLASS)
