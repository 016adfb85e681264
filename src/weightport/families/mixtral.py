"""Mixtral (`mixtral`, `MixtralForCausalLM`): Mistral with a mixture-of-experts MLP.

Experts are fused natively: `layer_1` stacks each expert's [gate (w1); up (w3)] rows in expert order, `layer_2`
stacks each expert's down projection (w2) transposed. The router is `gate`. HF checkpoints hold the experts one by
one (`block_sparse_moe.experts.{e}.w1.weight`: what transformers 5's `save_pretrained` still writes, and what an
export writes) or stacked, as transformers 5 models hold them (`mlp.experts.gate_up_proj` (E, 2I, H) with gate rows
first, `mlp.experts.down_proj` (E, H, I): a `model.state_dict()` saved as is); both are read.
"""

from weightport.families import llama, mistral
from weightport.families.llama import P, rope
from weightport.spec import Alternatives, Blocks, Constant, Flatten, HFClass, Ignore, Rename, T, Tensor, override

HF_CLASS = HFClass("MixtralConfig", "transformers 5.24.0 models/mixtral/configuration_mixtral.py", {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": None, "hidden_act": "silu",
    "max_position_embeddings": 131072, "initializer_range": 0.02, "rms_norm_eps": 1e-5, "use_cache": True,
    "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "sliding_window": None,
    "attention_dropout": 0.0, "num_experts_per_tok": 2, "num_local_experts": 8, "output_router_logits": False,
    "router_aux_loss_coef": 0.001, "router_jitter_noise": 0.0, "rope_parameters": rope(1000000.0),
})

PER_EXPERT = (
    Tensor("router.weight", "gate.weight"),
    Tensor("layer_1.weight", ("experts.{expert}.w1.weight", "experts.{expert}.w3.weight"), experts="experts"),
    Tensor("layer_2.weight", "experts.{expert}.w2.weight", ops=(T(),), experts="experts"),
)
STACKED = (
    Tensor("router.weight", "gate.weight"),
    Tensor("layer_1.weight", "experts.gate_up_proj", ops=(Flatten(0, ("experts", -1)),)),
    Tensor("layer_2.weight", "experts.down_proj", ops=(T(), Flatten(0, ("experts", -1)))),
)
MOE = Alternatives("mlp", {"save_pretrained": ("block_sparse_moe", PER_EXPERT), "state_dict": ("mlp", STACKED)})

SPEC = mistral.SPEC.extend(name="mixtral", architecture="MixtralForCausalLM", hf_class=HF_CLASS, config=(
    Constant("moe", native=f"{P}.type", reason="every Mixtral layer routes to experts"),
    Rename(f"{P}.experts", "num_local_experts"),
    Rename(f"{P}.experts_per_token", "num_experts_per_tok"),
    Constant(0, native=f"{P}.shared_experts", reason="Mixtral has no shared experts"),
    Constant("aux_loss", native=f"{P}.routing", reason="Mixtral routes top-k"),
    Constant(None, native=f"{P}.router_normalization", reason="the router reads the block input as is"),
    Constant(1.0, native=f"{P}.router_input_scale"),
    Constant(None, native=f"{P}.router_scale.enabled", write=False),
    Constant(None, native=f"{P}.router_per_expert_scale.enabled", write=False),
    Ignore(hf="router_aux_loss_coef", reason="a training setting (load-balancing loss weight)"),
    Ignore(hf="router_jitter_noise", reason="a training setting (router noise)"),
    Ignore(hf="output_router_logits", reason="a runtime output switch"),
), weights=(
    Blocks("decoder", llama.LAYERS, override(llama.BLOCK_WEIGHTS, (MOE,))),
))
