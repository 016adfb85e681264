"""Llava 1.5 style (`llava_clip`, HF `model_type` `llava`, `LlavaForConditionalGeneration`): a CLIP vision tower
(`vision_config.model_type: clip_vision_model`, or no `vision_config`, LlavaConfig's default), read at
`vision_feature_layer` (-2 in Llava 1.5), a two-layer projector and a Llama or Mistral text model
(`text_config.model_type`, Llama when absent), converted as `llama` or `mistral`. The vision tower and the projector,
which Fast-LLM has no model for, are carried unchanged, and so are their config keys. The native model is the text
model (`gpt`). The format shares its model type with `llava` (Pixtral vision, converted whole); `detect_by` tells
them apart.

Tensors are named as `save_pretrained` writes them (`language_model.model.layers.0...`, transformers 5.24's `llava`
conversion mapping) or by the modules (`model.language_model.layers.0...`, what `model.state_dict()` holds); both
are read. `lm_head` is tied when the top-level `tie_word_embeddings` or the text config's is true (LlavaConfig,
default false).
"""

from weightport.families import llama, llava, mistral
from weightport.spec import Carry, HFClass, Ignore, ModelSpec, Section, Sub

CONFIG = (
    *llava.text_config(llava.TEXT_MODELS),
    Ignore(hf="vision_config", reason="the vision tower is carried unchanged"),
    *(Ignore(hf=key, reason="a setting of the carried vision tower and projector")
      for key in ("image_token_index", "image_seq_length", "projector_hidden_act", "vision_feature_select_strategy",
                  "vision_feature_layer", "multimodal_projector_bias")),
)
CHECKPOINT = (Carry("vision_tower"), Carry("multi_modal_projector"), Section("", "language_model", llama.WEIGHTS))
WEIGHTS = llava.namings(CHECKPOINT)

HF_CLASS: HFClass = llava.hf_class("LlavaConfig", "transformers 5.24.0 models/llava/configuration_llava.py",
                                   {"llama": llama.HF_CLASS, "mistral": mistral.HF_CLASS}, "llama",
                                   Sub({}, "clip_vision_model"), tie_word_embeddings=False)

SPEC = ModelSpec(name="llava_clip", model_type="llava", architecture="LlavaForConditionalGeneration",
                 config=CONFIG, weights=WEIGHTS, hf_class=HF_CLASS, text=("text_config", "llama"),
                 detect_by={"vision_config.model_type": ("clip_vision_model", None)})
