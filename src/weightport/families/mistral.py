"""Mistral (`mistral`, `MistralForCausalLM`): Llama without biases, with an optional sliding window."""

from weightport.families import llama
from weightport.families.llama import HEAD_DIM, M, P, rope
from weightport.spec import Constant, HFClass, Rename

HF_CLASS = HFClass("MistralConfig", "transformers 5.24.0 models/mistral/configuration_mistral.py", {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": HEAD_DIM, "hidden_act": "silu",
    "max_position_embeddings": 131072, "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
    "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    "rope_parameters": rope(10000.0), "sliding_window": 4096, "attention_dropout": 0.0,
})

SPEC = llama.SPEC.extend(name="mistral", architecture="MistralForCausalLM", hf_class=HF_CLASS, config=(
    Constant(False, native=f"{M}.add_linear_biases", reason="Mistral attention has no biases"),
    Constant(False, native=f"{P}.add_linear_biases", reason="Mistral MLPs have no biases"),
    Rename(f"{M}.window_size", "sliding_window", default=None),
))
