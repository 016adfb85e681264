"""SmolLM-style Llama (`smollm`, `LlamaForCausalLM` with `model_type` `smollm`): a hypothetical variant used by the
"Adding a family" guide. It is Llama without biases, so it only pins four values."""

from weightport.families import llama
from weightport.families.llama import M, P
from weightport.spec import Constant

SPEC = llama.SPEC.extend(name="smollm", model_type="smollm", config=(
    Constant(False, native=f"{M}.add_linear_biases", reason="SmolLM attention has no biases"),
    Constant(False, native=f"{P}.add_linear_biases", reason="SmolLM MLPs have no biases"),
    Constant(False, hf="attention_bias", reason="SmolLM configs say so explicitly"),
    Constant(False, hf="mlp_bias", reason="SmolLM configs say so explicitly"),
))
