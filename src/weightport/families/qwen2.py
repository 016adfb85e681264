"""Qwen2 (`qwen2`, `Qwen2ForCausalLM`): Llama with Q/K/V biases always on and no output-projection bias.

Sliding-window attention (`use_sliding_window: true`) is refused rather than imported as full attention.
"""

from weightport.families import llama
from weightport.families.llama import M, P
from weightport.spec import Computed, Constant, Ignore

SPEC = llama.SPEC.extend(name="qwen2", architecture="Qwen2ForCausalLM", config=(
    Constant(False, native=f"{M}.add_linear_biases", reason="Qwen2 sets each projection's bias"),
    Constant(True, native=f"{M}.query_layer.bias.enabled", none_from="add_linear_biases",
             reason="Qwen2 always has a q_proj bias"),
    Constant(True, native=f"{M}.key_layer.bias.enabled", none_from="add_linear_biases",
             reason="Qwen2 always has a k_proj bias"),
    Constant(True, native=f"{M}.value_layer.bias.enabled", none_from="add_linear_biases",
             reason="Qwen2 always has a v_proj bias"),
    Constant(False, native=f"{M}.dense_layer.bias.enabled", none_from="add_linear_biases",
             reason="Qwen2 has no o_proj bias"),
    Constant(False, native=f"{P}.add_linear_biases", reason="Qwen2 MLPs have no biases"),
    Constant(False, hf="use_sliding_window", reason="sliding-window Qwen2 is not supported"),
    Constant(False, hf="use_mrope", write=False, reason="multimodal rotary is not supported"),
    Ignore(hf="sliding_window", reason="used only when use_sliding_window is true"),
    Ignore(hf="max_window_layers", reason="used only when use_sliding_window is true"),
    Computed("layer_types", lambda hf: ["full_attention"] * hf["num_hidden_layers"],
             reason="every Qwen2 layer attends to the whole context"),
))
