"""Apriel2 multimodal (`apriel2`, `Apriel2ForConditionalGeneration`, remote code): the Apriel2 text model at the
HF root plus an optional `vision_encoder` sub-config (patch embeddings, a fixed attention encoder with Pixtral
2-D rotary, an MLP adapter) and `image_token_index`. The vision config mirrors the native tree, as the text does.
"""

from weightport.families import apriel2_text, llava
from weightport.spec import (
    Blocks, Choice, Computed, Constant, Flatten, Linear, ModelSpec, Nested, Rename, Section, T, Tensor, override,
)

AUTO_MAP = {
    "AutoConfig": "configuration_apriel2.Apriel2Config",
    "AutoModel": "modeling_apriel2.Apriel2Model",
    "AutoModelForCausalLM": "modeling_apriel2.Apriel2ForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_apriel2.Apriel2ForConditionalGeneration",
}
ROTARY = Choice("rotary", "rotary", {
    "default_2d": ("pixtral_2d", (
        Rename("theta", "theta"),
        Computed("patch_size", lambda hf: hf["vision_encoder"]["embeddings"]["patch_height"],
                 reason="the encoder's patch size, repeated"),
        Constant(1024, hf="max_image_size", reason="the image size the 2-D rotary is built for"),
    )),
    "default": ("mistral_1d", (Rename("theta", "theta"),)),
})
ATTENTION = override(apriel2_text.ATTENTION, (
    ROTARY,
    Rename("add_linear_biases", "add_linear_biases"),
    Rename("causal", "causal"),
    Constant(None, native="window_size", reason="vision attention sees the whole image", write=False),
    Constant(False, hf="cross_document_attention", reason="images attend within themselves"),
))
BLOCK = override(apriel2_text.BLOCK, (Choice("mixer", "mixer", {"attention": ("attention", ATTENTION)}),))
VISION = (
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.patch_height", "embeddings.patch_height"),
    Rename("embeddings.patch_width", "embeddings.patch_width"),
    Constant(3, hf="embeddings.input_channels", reason="images are RGB"),
    Constant(3, hf="num_channels", reason="images are RGB"),
    Constant(None, native="embeddings.patch_embeddings.bias.enabled", reason="the patch embedding has no bias",
             write=False),
    Choice("embeddings.normalization", "embeddings.normalization", apriel2_text.RMS_NORM),
    Choice("encoder", "encoder", {"fixed": ("fixed", (Rename("num_blocks", "num_blocks"),
                                                      Nested("block", "block", BLOCK)))}),
    Computed("patch_size", lambda hf: hf["vision_encoder"]["embeddings"]["patch_height"], reason="a mirror"),
    Computed("num_hidden_layers", lambda hf: hf["vision_encoder"]["encoder"]["num_blocks"], reason="a mirror"),
    Choice("adapter", "adapter", {"mlp": ("mlp", apriel2_text.MLP)}),
    *llava.IMAGE_NORMALIZATION,
)
CONFIG = override(apriel2_text.CONFIG, (
    Constant(AUTO_MAP, hf="auto_map", reason="the transformers classes are remote code"),
    Nested("vision_encoder", "vision_encoder", VISION),  # Fast-LLM's multimodal model always has one
    Rename("image_token_index", "image_token_index", default=None, omit=None),
))
VISION_WEIGHTS = (
    Tensor("embeddings.patch_embeddings.weight", "embeddings.patch_embeddings.weight",
           ops=(Flatten(1, (3, "embeddings.patch_height", "embeddings.patch_width")),)),
    Tensor("embeddings.normalization.weight", "embeddings.normalization.weight"),
    Blocks("encoder", "encoder.blocks", apriel2_text.BLOCK_WEIGHTS),
    Linear("adapter.layer_1", "adapter.linear_1"),
    Linear("adapter.layer_2", "adapter.linear_2", ops=(T(),)),
)

SPEC = ModelSpec(name="apriel2", model_type="apriel2", architecture="Apriel2ForConditionalGeneration", config=CONFIG,
                 weights=apriel2_text.WEIGHTS + (Section("vision_encoder", "model.vision_encoder", VISION_WEIGHTS),),
                 native_model="multimodal",
                 hf_class=apriel2_text.HF_CLASS.extend("Apriel2Config", apriel2_text.HF_CLASS.source, {
                     "vision_encoder": None, "image_token_index": None}))
