"""Mixtral (`mixtral`, `MixtralForCausalLM`): Mistral with a mixture-of-experts MLP (`block_sparse_moe`).

Experts are fused natively: `layer_1` stacks each expert's [gate (w1); up (w3)] rows in expert order, `layer_2`
stacks each expert's down projection (w2) transposed. The router is `gate`.
"""

from weightport.families import llama, mistral
from weightport.families.llama import P
from weightport.spec import Blocks, Constant, Ignore, Rename, Section, T, Tensor, override

MOE = (
    Tensor("router.weight", "gate.weight"),
    Tensor("layer_1.weight", ("experts.{expert}.w1.weight", "experts.{expert}.w3.weight"), experts="experts"),
    Tensor("layer_2.weight", "experts.{expert}.w2.weight", ops=(T(),), experts="experts"),
)

SPEC = mistral.SPEC.extend(name="mixtral", architecture="MixtralForCausalLM", config=(
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
    Blocks("decoder", llama.LAYERS, override(llama.BLOCK_WEIGHTS, (Section("mlp", "block_sparse_moe", MOE),))),
))
