"""Mistral (`mistral`, `MistralForCausalLM`): Llama without biases, with an optional sliding window."""

from weightport.families import llama
from weightport.families.llama import M, P
from weightport.spec import Constant, Rename

SPEC = llama.SPEC.extend(name="mistral", architecture="MistralForCausalLM", config=(
    Constant(False, native=f"{M}.add_linear_biases", reason="Mistral attention has no biases"),
    Constant(False, native=f"{P}.add_linear_biases", reason="Mistral MLPs have no biases"),
    Rename(f"{M}.window_size", "sliding_window", default=None),
))
