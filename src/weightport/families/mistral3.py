"""Mistral 3 (`mistral3`, `Mistral3ForConditionalGeneration`: Mistral Small 3.1 and 3.2): a Mistral text model,
converted as `mistral`; the Pixtral vision tower and the projector with its patch merger, which Fast-LLM has no model
for, are carried unchanged, and so are their config keys. The native model is the text model (`gpt`).

Tensors are named as `save_pretrained` writes them (`language_model.model.layers.0...`, transformers 5.24's `llava`
conversion mapping, which `mistral3` uses) or by the modules (`model.language_model.layers.0...`, what
`model.state_dict()` holds); both are read. `lm_head` is tied by the top-level `tie_word_embeddings` (default
true), which transformers 5 reads and writes. transformers 4 tied by the text model's (MistralConfig's default false)
and wrote no top-level key. A config.json in its layout that the two read alike is read so; one they read otherwise
(neither key: Mistral Small 3.1 and 3.2, which hold an `lm_head` of their own, and the same config.json beside the
weights transformers 5 saves from it, which hold none) is tied as its files are: untied where they hold an
`lm_head`. Exports in that layout write the tie in the text config, as transformers 4 did.
"""

from weightport.families import llama, llava, mistral
from weightport.spec import (
    ROTARY_V4, Carry, FilesDecide, HFClass, Ignore, ModelSpec, Relayout, Section, Sub, TextModel,
)

CONFIG = (
    *TextModel("text_config", mistral.SPEC.config, "mistral"),
    Ignore(hf="vision_config", reason="the vision tower is carried unchanged"),
    *(Ignore(hf=key, reason="a setting of the carried vision tower and projector")
      for key in ("image_token_index", "projector_hidden_act", "vision_feature_layer", "multimodal_projector_bias",
                  "spatial_merge_size")),
)
CHECKPOINT = (Carry("vision_tower"), Carry("multi_modal_projector"), Section("", "language_model", llama.WEIGHTS))
WEIGHTS = llava.namings(CHECKPOINT)


def _tied_by_text(config: dict) -> dict:
    """transformers 4 ties a Mistral3 model by its text config's `tie_word_embeddings` (default false), transformers 5
    by the top-level key (default true). Where the two read the same, the top-level key takes that value; where they
    read otherwise, it is left out, for the checkpoint's files to decide (`FILES_DECIDE`)."""
    text = config.get("text_config")
    by_text = text.get("tie_word_embeddings", False) if isinstance(text, dict) else False
    out = {k: v for k, v in config.items() if k != "tie_word_embeddings"}
    return {**out, "tie_word_embeddings": by_text} if by_text == config.get("tie_word_embeddings", True) else out


def _tied_in_text(config: dict) -> dict:
    out = dict(config)
    tied = out.pop("tie_word_embeddings", True)
    if isinstance(out.get("text_config"), dict):
        out["text_config"] = {**out["text_config"], "tie_word_embeddings": tied}
    return out


TRANSFORMERS4 = Relayout("transformers4", ROTARY_V4.detect, lambda c: _tied_by_text(ROTARY_V4.to_canonical(c)),
                         lambda c: ROTARY_V4.from_canonical(_tied_in_text(c)))
# A config.json in transformers 4's layout that the two versions read otherwise (neither key, as Mistral Small 3.1 and
# 3.2 have it) is tied as its files are: transformers 5 reads it as tied and saves no lm_head, Mistral's own
# checkpoints hold one.
FILES_DECIDE = FilesDecide("tie_word_embeddings", "head.output_weights", present=False, absent=True,
                           layouts=("transformers4",),
                           reason="transformers 4 ties a Mistral3 model by text_config.tie_word_embeddings, default "
                                  "false; transformers 5 by tie_word_embeddings, default true")

# Without a text_config, Mistral3Config makes Mistral Small 3.1's text model, not MistralConfig's default one
# (`sub_configs_defaults`, transformers 5.25 models/mistral3/configuration_mistral3.py; `rope_theta` there).
SMALL_TEXT = {
    "attention_dropout": 0.0, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 32768, "max_position_embeddings": 131072, "num_attention_heads": 32, "num_hidden_layers": 40,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_parameters": {"rope_theta": 1000000000.0},
    "sliding_window": None, "use_cache": True, "vocab_size": 131072,
}
HF_CLASS = HFClass("Mistral3Config", "transformers 5.24.0 models/mistral3/configuration_mistral3.py", {
    "text_config": Sub({"mistral": mistral.HF_CLASS}, "mistral", SMALL_TEXT), "vision_config": Sub({}, "pixtral"),
    "image_token_index": 10, "projector_hidden_act": "gelu", "vision_feature_layer": -1,
    "multimodal_projector_bias": False, "spatial_merge_size": 2, "tie_word_embeddings": True,
})

SPEC = ModelSpec(name="mistral3", model_type="mistral3", architecture="Mistral3ForConditionalGeneration",
                 config=CONFIG, weights=WEIGHTS, layouts=(TRANSFORMERS4,), hf_class=HF_CLASS,
                 text=("text_config", "mistral"), decided_by_files=(FILES_DECIDE,))
