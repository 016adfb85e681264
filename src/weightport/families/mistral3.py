"""Mistral 3 (`mistral3`, `Mistral3ForConditionalGeneration`: Mistral Small 3.1 and 3.2): a Mistral text model,
converted as `mistral`; the Pixtral vision tower and the projector with its patch merger, which Fast-LLM has no model
for, are carried unchanged, and so are their config keys. The native model is the text model (`gpt`).

Tensors are named as `save_pretrained` writes them (`language_model.model.layers.0...`, transformers 5.24's `llava`
conversion mapping, which `mistral3` uses) or by the modules (`model.language_model.layers.0...`, what
`model.state_dict()` holds); both are read. `lm_head` is tied by the top-level `tie_word_embeddings` (default true).
"""

from weightport.families import llama, llava, mistral
from weightport.spec import Carry, HFClass, Ignore, ModelSpec, Section, Sub, TextModel

CONFIG = (
    *TextModel("text_config", mistral.SPEC.config, "mistral"),
    Ignore(hf="vision_config", reason="the vision tower is carried unchanged"),
    *(Ignore(hf=key, reason="a setting of the carried vision tower and projector")
      for key in ("image_token_index", "projector_hidden_act", "vision_feature_layer", "multimodal_projector_bias",
                  "spatial_merge_size")),
)
CHECKPOINT = (Carry("vision_tower"), Carry("multi_modal_projector"), Section("", "language_model", llama.WEIGHTS))
WEIGHTS = llava.namings(CHECKPOINT)

HF_CLASS = HFClass("Mistral3Config", "transformers 5.24.0 models/mistral3/configuration_mistral3.py", {
    "text_config": Sub({"mistral": mistral.HF_CLASS}, "mistral"), "vision_config": Sub({}, "pixtral"),
    "image_token_index": 10, "projector_hidden_act": "gelu", "vision_feature_layer": -1,
    "multimodal_projector_bias": False, "spatial_merge_size": 2, "tie_word_embeddings": True,
})

SPEC = ModelSpec(name="mistral3", model_type="mistral3", architecture="Mistral3ForConditionalGeneration",
                 config=CONFIG, weights=WEIGHTS, hf_class=HF_CLASS, text=("text_config", "mistral"))
