"""Llama (`llama`, `LlamaForCausalLM`): the reference dense decoder that Mistral and Qwen2 vary.

HF config is flat; the native decoder is a `fixed` sequence of one attention + gated-MLP block. K and V are fused
natively (`key_value` = [K; V] rows), gate and up too (`layer_1` = [gate; up]), and `down_proj` is stored
transposed. Biases are global switches (`attention_bias`, `mlp_bias`).
"""

from weightport.spec import (
    Blocks, Choice, Constant, Ignore, Linear, ModelSpec, Rename, Section, T, Tensor,
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
ROTARY = Choice(f"{M}.rotary", "rope_parameters", key="rope_type", default="default", options={
    "default": ("default", (THETA,)),
    "llama3": ("llama3", (THETA, FACTOR, CONTEXT, Rename("low_frequency_factor", "low_freq_factor"),
                          Rename("high_frequency_factor", "high_freq_factor"))),
    "yarn": ("yarn", (THETA, FACTOR, CONTEXT, Rename("attention_factor", "attention_factor", default=None),
                      Rename("beta_fast", "beta_fast", default=32.0), Rename("beta_slow", "beta_slow", default=1.0))),
})


def _head_size(hf: dict) -> int:
    if hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError("hidden_size is not a multiple of num_attention_heads; give head_dim explicitly")
    return hf["hidden_size"] // hf["num_attention_heads"]


def _unset(*paths: str) -> tuple:
    return tuple(Constant(None, native=p, reason="Llama layers take the global setting") for p in paths)


CONFIG = (
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.vocab_size", "vocab_size"),
    Rename("tied_embedding_weight", "tie_word_embeddings", default=False),
    Constant(1.0, native="embeddings.embedding_scale", reason="Llama does not scale embeddings"),
    Constant(None, native="embeddings.position_embeddings.enabled", reason="Llama has rotary positions only"),
    Ignore(native="embeddings.num_position_embeddings", reason="used only by position embeddings"),
    Ignore(hf="max_position_embeddings", reason="native models have no position limit; kept in metadata"),
    Ignore(hf="pretraining_tp", reason="a tensor-parallel hint of pretraining; no effect on the model"),
    Constant("fixed", native="decoder.type", reason="Llama layers are all alike"),
    Rename("decoder.num_blocks", "num_hidden_layers"),
    Constant("decoder", native=f"{B}.type"),
    Constant("attention", native=f"{M}.type", reason="Llama mixes with attention"),
    Rename(f"{M}.heads", "num_attention_heads"),
    Rename(f"{M}.head_groups", "num_key_value_heads", default=lambda hf: hf["num_attention_heads"]),
    Rename(f"{M}.head_size", "head_dim", default=_head_size),
    Rename(f"{M}.add_linear_biases", "attention_bias", default=False),
    *_unset(f"{M}.query_layer.bias.enabled", f"{M}.key_layer.bias.enabled", f"{M}.value_layer.bias.enabled",
            f"{M}.dense_layer.bias.enabled"),
    Rename(f"{M}.dropout", "attention_dropout", default=0.0),
    ROTARY,
    Constant(True, native=f"{M}.causal"),
    Constant(0.5, native=f"{M}.softmax_scale_power", reason="scores are scaled by head_size ** -0.5"),
    Constant(None, native=f"{M}.query_norm"),
    Constant(None, native=f"{M}.key_norm"),
    Constant(None, native=f"{M}.value_norm"),
    Constant(False, native=f"{M}.shared_key_value"),
    Constant(None, native=f"{M}.window_size", reason="Llama attends to the whole context"),
    Constant("mlp", native=f"{P}.type"),
    Rename(f"{P}.intermediate_size", "intermediate_size"),
    Rename(f"{P}.add_linear_biases", "mlp_bias", default=False),
    *_unset(f"{P}.layer_1.bias.enabled", f"{P}.layer_2.bias.enabled"),
    Constant(True, native=f"{P}.gated", reason="Llama's MLP is gated (gate_proj)"),
    Rename(f"{P}.activation", "hidden_act", values=ACTIVATIONS, default="silu"),
    Constant(None, native=f"{P}.pre_norm"),
    Constant(None, native=f"{P}.post_norm"),
    Constant("rms_norm", native=f"{B}.normalization.type"),
    Rename(f"{B}.normalization.epsilon", "rms_norm_eps", default=1e-6),
    Constant(False, native=f"{B}.normalization.zero_centered"),
    *(Constant(None, native=f"{B}.{n}_normalization") for n in ("pre_mixer", "pre_mlp", "post_mixer", "post_mlp")),
    Constant(None, native=f"{B}.output_scale.enabled"),
    Constant("rms_norm", native="head.normalization.type"),
    Rename("head.normalization.epsilon", "rms_norm_eps", default=1e-6),
    Constant(False, native="head.normalization.zero_centered"),
    Constant(1, native="head.prediction_heads", reason="Llama predicts one token"),
    Constant(None, native="head.final_logit_softcap"),
    Constant(1.0, native="head.logits_scale_factor", reason="Llama does not scale logits"),
    Constant("none", native="peft.type", reason="merge adapters before converting"),
)

ATTENTION = (Linear("query", "q_proj"), Linear("key_value", "k_proj", "v_proj"), Linear("dense", "o_proj"))
MLP = (Linear("layer_1", "gate_proj", "up_proj"), Linear("layer_2", "down_proj", ops=(T(),)))
BLOCK = (
    Section("mixer", "self_attn", ATTENTION),
    Section("mlp", "mlp", MLP),
    Tensor("norm_1.weight", "input_layernorm.weight"),
    Tensor("norm_2.weight", "post_attention_layernorm.weight"),
)
LAYERS = "model.layers"
WEIGHTS = (
    Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
    Blocks("decoder", LAYERS, BLOCK),
    Tensor("head.final_norm.weight", "model.norm.weight"),
    Tensor("head.output_weights", "lm_head.weight"),
)

SPEC = ModelSpec(name="llama", model_type="llama", architecture="LlamaForCausalLM", config=CONFIG, weights=WEIGHTS)
