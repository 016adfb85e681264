"""Qwen2 (`qwen2`, `Qwen2ForCausalLM`): Llama with Q/K/V biases always on and no output-projection bias.

Sliding-window attention (`use_sliding_window: true`) is refused rather than imported as full attention.
"""

from weightport.families import llama
from weightport.families.llama import M, P, rope
from weightport.spec import Computed, Constant, From, HFClass, Ignore, Rename


def _layer_types(hf: dict) -> list[str]:
    window = hf["sliding_window"] if hf["use_sliding_window"] else None
    return ["sliding_attention" if window is not None and i >= hf["max_window_layers"] else "full_attention"
            for i in range(hf["num_hidden_layers"])]


HF_CLASS = HFClass("Qwen2Config", "transformers 5.24.0 models/qwen2/configuration_qwen2.py", {
    "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768,
    "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True, "tie_word_embeddings": False,
    "rope_parameters": rope(10000.0), "use_sliding_window": False,
    # the class keeps the window only with use_sliding_window
    "sliding_window": From(lambda hf: 4096 if hf["use_sliding_window"] else None, "4096 with use_sliding_window"),
    "max_window_layers": 28, "layer_types": From(_layer_types, "sliding from max_window_layers on, if windowed"),
    "attention_dropout": 0.0, "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
})

SPEC = llama.SPEC.extend(name="qwen2", architecture="Qwen2ForCausalLM", hf_class=HF_CLASS, config=(
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
    # Qwen2Config has no head_dim (Qwen2's attention reads one if given, else hidden_size // num_attention_heads):
    # written only where it differs, as save_pretrained writes it (and Fast-LLM's qwen2 importer refuses a head_dim)
    Rename(f"{M}.head_size", "head_dim", default=llama.default_head_size,
           omit=lambda hf: hf["hidden_size"] // hf["num_attention_heads"]),
    Computed("layer_types", lambda hf: ["full_attention"] * hf["num_hidden_layers"],
             reason="every Qwen2 layer attends to the whole context"),
))
