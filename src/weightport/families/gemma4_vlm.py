"""Gemma 4 as published (`gemma4_vlm`, HF `model_type` `gemma4`, `Gemma4ForConditionalGeneration`): the Gemma 4 text
model under `model.language_model.` and `text_config`, converted as `gemma4`; the vision and audio towers and their
projectors into the text model's width (`embed_vision`, `embed_audio`), which Fast-LLM has no model for, are carried
unchanged, and so are their config keys. The native model is the text model (`gpt`). The format is not named
`gemma4`, the model type, because `gemma4` is the text format (HF `gemma4_text`).

`save_pretrained` writes the modules' names (transformers 5.24 has no conversion mapping for `gemma4`); `lm_head`
is tied to the embeddings by the top-level `tie_word_embeddings` (default true), the key transformers reads.
"""

from weightport.families import gemma4
from weightport.spec import Carry, HFClass, Ignore, ModelSpec, Renamed, Sub, TextModel, within

TOKENS = ("boi_token_id", "eoi_token_id", "image_token_id", "video_token_id", "boa_token_id", "eoa_token_index",
          "audio_token_id")
CONFIG = (
    *TextModel("text_config", gemma4.CONFIG, "gemma4_text"),
    Ignore(hf="vision_config", reason="the vision tower is carried unchanged"),
    Ignore(hf="audio_config", reason="the audio tower is carried unchanged"),
    *(Ignore(hf=key, reason="marks image, video and audio places in the prompt, which the carried towers fill")
      for key in TOKENS),
)
PARTS = ("vision_tower", "embed_vision", "audio_tower", "embed_audio")
WEIGHTS = (
    Renamed(gemma4.WEIGHTS, {"model": "model.language_model"}),
    *(Carry(f"model.{part}") for part in PARTS),
)

HF_CLASS = HFClass("Gemma4Config", "transformers 5.24.0 models/gemma4/configuration_gemma4.py", {
    "text_config": Sub({"gemma4_text": gemma4.HF_CLASS}, "gemma4_text"), "vision_config": None, "audio_config": None,
    "boi_token_id": 255999, "eoi_token_id": 258882, "image_token_id": 258880, "video_token_id": 258884,
    "boa_token_id": 256000, "eoa_token_index": 258883, "audio_token_id": 258881, "initializer_range": 0.02,
    "tie_word_embeddings": True,
})

SPEC = ModelSpec(name="gemma4_vlm", model_type="gemma4", architecture="Gemma4ForConditionalGeneration",
                 config=CONFIG, weights=WEIGHTS, layouts=(within("text_config", gemma4.PER_LAYER),),
                 canonical=gemma4.SPEC.canonical, hf_class=HF_CLASS, text=("text_config", "gemma4"))
