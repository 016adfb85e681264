"""Llava hybrid SSM (`llava_hybrid_ssm`; HF `model_type` `llava_hybrid`, `LlavaHybridForConditionalGeneration`,
remote code): Llava whose text model is an Apriel hybrid SSM (`text_config.model_type`
`apriel_ssm_thinker_hybrid`), so its layers mix attention, Mamba and GDN by `hybrid_block_layout`.

Tensors are named as Fast-LLM exports them (`language_model.model.layers.0...`, with `model.norm.weight` and
`lm_head.weight` outside `language_model`; exports write these) or by the remote classes' modules, which are Llava's
(`model.language_model.layers.0...`, `model.language_model.norm.weight`): what `model.state_dict()` holds and, as
transformers 5 applies no conversion mapping to remote code, what `save_pretrained` writes. Both are read.
"""

from weightport.families import apriel_hybrid_ssm, llama, llava
from weightport.spec import Blocks, Constant, Ignore, Merged, ModelSpec, Tensor, override

AUTO_MAP = {
    "AutoConfig": "configuration_llava_hybrid.LlavaHybridConfig",
    "AutoModel": "modeling_llava_hybrid.LlavaHybridModel",
    "AutoModelForCausalLM": "modeling_llava_hybrid.LlavaHybridForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_llava_hybrid.LlavaHybridForConditionalGeneration",
    "AutoModelForVision2Seq": "modeling_llava_hybrid.LlavaHybridForConditionalGeneration",
}
# Fast-LLM's exporter writes the text config as a Llama one (`model_type: llama`, with Llama's bias switches).
FAST_LLM_TEXT = (
    Constant(False, hf="attention_bias", write=False, reason="Llama key of Fast-LLM's export; no biases"),
    Constant(False, hf="mlp_bias", write=False, reason="Llama key of Fast-LLM's export; no biases"),
    Ignore(hf="pretraining_tp", reason="Llama key of Fast-LLM's export; no effect on the model"),
)
TEXT = override(apriel_hybrid_ssm.SPEC.config, FAST_LLM_TEXT, drop=("hf:auto_map",))
TEXT_MODELS = {"apriel_ssm_thinker_hybrid": (("apriel_ssm_thinker_hybrid", "llama"), TEXT)}

SOURCE = "Fast-LLM 0.4.0 (7d61a1b) fast_llm_external_models/llava_hybrid/configuration_llava_hybrid.py"
TEXT_CLASS = apriel_hybrid_ssm.HF_CLASS.extend("AprielSSMHybridConfig", SOURCE, {
    "hybrid_block_layout": ["m2d"], "ssm_cfg": Merged(apriel_hybrid_ssm.SSM_DEFAULTS),
}, drop=("layer_types", "linear_attn_config"))
HF_CLASS = llava.hf_class("LlavaHybridConfig", SOURCE, {"apriel_ssm_thinker_hybrid": TEXT_CLASS,
                                                        "llama": llama.HF_CLASS}, "llama", llava.VISION_CLASSES)

SPEC = ModelSpec(
    name="llava_hybrid_ssm", model_type="llava_hybrid", architecture="LlavaHybridForConditionalGeneration",
    config=llava.config(TEXT_MODELS) + (Constant(AUTO_MAP, hf="auto_map", reason="remote code"),),
    weights=llava.weights(
        (Tensor("embeddings.word_embeddings_weight", "model.embed_tokens.weight"),
         Blocks("decoder", llama.LAYERS, apriel_hybrid_ssm.BLOCK_WEIGHTS)),
        # as Fast-LLM exports it, the head sits outside `language_model`
        outside=(Tensor("head.final_norm.weight", "model.norm.weight"),
                 Tensor("head.output_weights", "lm_head.weight", tied="embeddings.word_embeddings_weight")),
        names={**llava.MODULE_NAMES, "model.norm": "model.language_model.norm"}, saved="fast_llm"),
    native_model="multimodal", aliases=("llava_hybrid_ssm",), hf_class=HF_CLASS,
)
