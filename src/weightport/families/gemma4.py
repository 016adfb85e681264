"""Gemma 4 text (`gemma4`, HF `model_type` `gemma4_text`, `Gemma4ForCausalLM`).

`layer_types` names each layer `sliding_attention` or `full_attention`; natively a pattern decoder with one block
per kind. Full layers have their own head size (`global_head_dim`), KV heads (`num_global_key_value_heads`, applied
only with `attention_k_eq_v`, which shares K as V) and proportional rotary. Attention has per-head q/k norms and a
weightless v norm, scores are not scaled, every block has post-norms and a frozen `layer_scalar`. With
`enable_moe_block` the MLP is a hybrid: a dense branch under `mlp.` plus routed experts at the block root, stored
stacked (`experts.gate_up_proj` (E, 2I, H), `experts.down_proj` (E, H, I), no `.weight` suffix).
transformers 5.15 and later write the full-layer sizes as `per_layer_config`; both layouts are read.
"""

from weightport.families import llama
from weightport.spec import (
    Blocks, Choice, Constant, Derived, Flatten, From, HFClass, Ignore, Layout, Linear, ModelSpec, Nested,
    NoBiases, Rename, Section, Switch, T, Tensor, per_layer,
)


def _norm(path: str, kind: str = "rms_norm", write_zero_centered: bool = False) -> tuple:
    """A norm of `kind` whose epsilon is the model's `rms_norm_eps` (Fast-LLM's importer sets `zero_centered` only
    for the head's)."""
    rules = (Constant(kind, native=f"{path}.type"), Rename(f"{path}.epsilon", "rms_norm_eps"))
    zero_centered = Constant(False, native=f"{path}.zero_centered", write=write_zero_centered)
    return rules + ((zero_centered,) if kind == "rms_norm" else ())


def _full_kv_heads(hf: dict) -> int:
    """transformers applies `num_global_key_value_heads` to full layers only when K is shared as V."""
    shared, heads = hf.get("attention_k_eq_v"), hf.get("num_global_key_value_heads")
    return heads if shared and heads is not None else hf["num_key_value_heads"]


ROPE = "rope_parameters"
ATTENTION = (
    Constant("attention", native="type"),
    Rename("heads", "num_attention_heads"),
    Constant(False, native="add_linear_biases", reason="Gemma 4 attention has no biases"),
    *NoBiases("query_layer", "key_layer", "value_layer", "dense_layer"),
    Rename("dropout", "attention_dropout", default=0.0),
    Constant(True, native="causal", write=False),
    Constant(0.0, native="softmax_scale_power", reason="Gemma 4 does not scale attention scores"),
    *_norm("query_norm"), *_norm("key_norm"), *_norm("value_norm", "fixed_rms_norm"),
)
SLIDING = (
    Rename("head_size", "head_dim"),
    Rename("head_groups", "num_key_value_heads"),
    Constant(False, native="shared_key_value", write=False),
    Rename("window_size", "sliding_window"),
    Constant("default", native="rotary.type"),
    Constant("default", hf=f"{ROPE}.sliding_attention.rope_type"),
    Rename("rotary.theta", f"{ROPE}.sliding_attention.rope_theta"),
)
FULL = (
    Rename("head_size", "global_head_dim"),
    Derived("head_groups", _full_kv_heads, hf="num_global_key_value_heads", reason="full layers' KV heads"),
    Rename("shared_key_value", "attention_k_eq_v", default=False, unset=False),
    Constant(None, native="window_size", reason="full layers attend to the whole context", write=False),
    Constant("proportional", native="rotary.type"),
    Constant("proportional", hf=f"{ROPE}.full_attention.rope_type"),
    Rename("rotary.theta", f"{ROPE}.full_attention.rope_theta"),
    Rename("rotary.partial_rotary_factor", f"{ROPE}.full_attention.partial_rotary_factor", default=1.0),
)
GATED = (  # every MLP of Gemma 4: dense, routed experts
    Rename("activation", "hidden_activation", values=llama.ACTIVATIONS),
    Constant(True, native="gated"),
    Constant(False, native="add_linear_biases"),
    *NoBiases("layer_1", "layer_2"),
)
DENSE = (Constant("mlp", native="type"), *GATED, Rename("intermediate_size", "intermediate_size"))
HYBRID = (
    Nested("dense", "", (*DENSE, *_norm("pre_norm"), *_norm("post_norm"))),
    Nested("routed", "", (
        Constant("moe", native="type"), *GATED, Rename("intermediate_size", "moe_intermediate_size"),
        Rename("experts", "num_experts"), Rename("experts_per_token", "top_k_experts"),
        Constant(0, native="shared_experts", write=False), Constant("aux_loss", native="routing", write=False),
        *_norm("router_normalization", "fixed_rms_norm"),
        Constant(True, native="router_scale.enabled"), Constant(True, native="router_per_expert_scale.enabled"),
        Derived("router_input_scale", lambda hf: hf["hidden_size"] ** -0.5, reason="the router reads x / sqrt(H)"),
        *_norm("pre_norm"), *_norm("post_norm"),
    )),
    Constant(None, native="pre_norm", write=False),
    Constant(None, native="post_norm", write=False),
)


def _block(mixer: tuple) -> tuple:
    return (
        Constant("decoder", native="type"),
        Nested("mixer", "", ATTENTION + mixer),
        Choice("mlp", "", key="enable_moe_block", default=False, options={
            "mlp": (False, (*DENSE, Constant(None, native="pre_norm", write=False),
                            Constant(None, native="post_norm", write=False))),
            "hybrid_moe": (True, HYBRID),
        }),
        *_norm("normalization"), *_norm("post_mixer_normalization"), *_norm("post_mlp_normalization"),
        Constant(None, native="pre_mixer_normalization", write=False),
        Derived("pre_mlp_normalization", lambda hf: {"type": "none"} if hf.get("enable_moe_block") else
                {"type": "rms_norm", "epsilon": hf["rms_norm_eps"]}, reason="MoE blocks normalize in each branch"),
        Constant(True, native="output_scale.enabled", reason="the frozen layer_scalar"),
        Constant(0.0, native="output_scale.lr_scale", reason="layer_scalar is a buffer, never trained"),
    )


CONFIG = (
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.vocab_size", "vocab_size"),
    Derived("embeddings.embedding_scale", lambda hf: hf["hidden_size"] ** 0.5, reason="embeddings scale by sqrt(H)"),
    Constant(None, native="embeddings.position_embeddings.enabled", write=False),
    Ignore(native="embeddings.num_position_embeddings", reason="used only by position embeddings"),
    Rename("tied_embedding_weight", "tie_word_embeddings", default=True),
    Rename("decoder.num_blocks", "num_hidden_layers"),
    Layout("decoder", "layer_types", {"sliding_attention": _block(SLIDING), "full_attention": _block(FULL)}),
    *_norm("head.normalization", write_zero_centered=True),
    Constant(1, native="head.prediction_heads", write=False),
    Rename("head.final_logit_softcap", "final_logit_softcapping", default=None, unset=None),
    Constant(1.0, native="head.logits_scale_factor", write=False),
    Constant("none", native="peft.type", reason="merge adapters before converting"),
    Constant(False, hf="attention_bias", reason="Gemma 4 attention has no biases"),
    Constant(0, hf="hidden_size_per_layer_input", reason="per-layer input embeddings are not supported"),
    Constant(0, hf="num_kv_shared_layers", reason="KV sharing across layers is not supported"),
    Constant(False, hf="use_double_wide_mlp", reason="double-wide MLPs are not supported"),
    Constant(None, hf="use_bidirectional_attention", also=("vision",), reason="text attention is causal"),
    Ignore(hf="vocab_size_per_layer_input", reason="used only by per-layer input embeddings, which are off"),
    Ignore(hf="max_position_embeddings", reason="native models have no position limit; kept in metadata"),
    *(Ignore(hf=key, reason="read by full_attention layers") for key in (
        "global_head_dim", "num_global_key_value_heads", "attention_k_eq_v", f"{ROPE}.full_attention")),
    *(Ignore(hf=key, reason="read by sliding_attention layers") for key in (
        "head_dim", "num_key_value_heads", "sliding_window", f"{ROPE}.sliding_attention")),
    *(Ignore(hf=key, reason="read by MoE blocks") for key in ("moe_intermediate_size", "num_experts",
                                                              "top_k_experts")),
)

ATTENTION_WEIGHTS = (
    Linear("query", "q_proj"),
    Switch("", "", {False: ("", (Linear("key_value", "k_proj", "v_proj"),)),
                    True: ("", (Linear("key_value", "k_proj"),))},
           on="shared_key_value"),
    Linear("dense", "o_proj"),
    Tensor("query_norm.weight", "q_norm.weight"),
    Tensor("key_norm.weight", "k_norm.weight"),
)
EXPERTS = ("routed.experts", -1)
HYBRID_WEIGHTS = (
    Section("dense", "mlp", llama.MLP_WEIGHTS),
    Tensor("dense.pre_norm.weight", "pre_feedforward_layernorm.weight"),
    Tensor("dense.post_norm.weight", "post_feedforward_layernorm_1.weight"),
    Tensor("routed.pre_norm.weight", "pre_feedforward_layernorm_2.weight"),
    Tensor("routed.post_norm.weight", "post_feedforward_layernorm_2.weight"),
    Tensor("routed.router.weight", "router.proj.weight"),
    Tensor("routed.router_scale", "router.scale"),
    Tensor("routed.router_per_expert_scale", "router.per_expert_scale"),
    Tensor("routed.layer_1.weight", "experts.gate_up_proj", ops=(Flatten(0, EXPERTS),)),
    Tensor("routed.layer_2.weight", "experts.down_proj", ops=(T(), Flatten(0, EXPERTS))),
)
BLOCK_WEIGHTS = (
    Section("mixer", "self_attn", ATTENTION_WEIGHTS),
    Switch("mlp", "mlp", {"mlp": ("mlp", llama.MLP_WEIGHTS), "hybrid_moe": ("", HYBRID_WEIGHTS)}),
    Tensor("norm_1.weight", "input_layernorm.weight"),
    Tensor("norm_2.weight", "pre_feedforward_layernorm.weight"),
    Tensor("post_mixer_norm.weight", "post_attention_layernorm.weight"),
    Tensor("post_mlp_norm.weight", "post_feedforward_layernorm.weight"),
    Tensor("output_scale", "layer_scalar"),
)
WEIGHTS = (
    Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
    Blocks("decoder", llama.LAYERS, BLOCK_WEIGHTS),
    Tensor("head.final_norm.weight", "model.norm.weight"),
    Tensor("head.output_weights", "lm_head.weight", tied="embeddings.word_embeddings_weight"),
)

# Written in the flat layout of transformers 5.14 (`global_head_dim`, `num_global_key_value_heads`), which 5.15 and
# later write as `per_layer_config`; every other default is as in 5.24.
HF_CLASS = HFClass("Gemma4TextConfig", "transformers 5.24.0 models/gemma4/configuration_gemma4.py", {
    "vocab_size": 262144, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 30,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072, "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
    "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "tie_word_embeddings": True,
    "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                                           "rope_type": "proportional"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "attention_bias": False, "attention_dropout": 0.0, "sliding_window": 512,
    "layer_types": From(lambda hf: ["full_attention" if (i + 1) % 6 == 0 or i == hf["num_hidden_layers"] - 1
                                    else "sliding_attention" for i in range(hf["num_hidden_layers"])],
                        "every sixth layer full, and the last"),
    "final_logit_softcapping": None, "use_bidirectional_attention": None, "vocab_size_per_layer_input": 262144,
    "hidden_size_per_layer_input": 256, "attention_k_eq_v": False, "num_kv_shared_layers": 0,
    "enable_moe_block": False, "use_double_wide_mlp": False, "num_experts": None, "top_k_experts": None,
    "moe_intermediate_size": None, "global_head_dim": 512, "num_global_key_value_heads": None,
})

PER_LAYER = per_layer(HF_CLASS.fill)  # transformers 5.15+'s per_layer_config, read with the class's defaults

SPEC = ModelSpec(name="gemma4", model_type="gemma4_text", architecture="Gemma4ForCausalLM", config=CONFIG,
                 weights=WEIGHTS, layouts=(PER_LAYER,), canonical=("transformers5",), hf_class=HF_CLASS)
