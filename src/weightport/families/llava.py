"""Llava (`llava`, `LlavaForConditionalGeneration`) with Pixtral vision (`vision_config.model_type: pixtral`; CLIP
vision is `llava_clip`): a Pixtral vision encoder, a two-layer projector and a Mistral or Llama text model
(`text_config.model_type`), in one checkpoint (native model `multimodal`).

Pixtral's patch convolution (Hv, 3, p, p) is flattened natively to (Hv, 3*p*p); its attention is bidirectional
with 2-D rotary. The projector is the native vision adapter (`linear_2` stored transposed). Tensors are named as
`save_pretrained` writes them (`language_model.model.layers.0...`; exports write these) or by the model's modules,
as transformers 5 holds them (`model.language_model.layers.0...`, `lm_head.weight`: a `model.state_dict()`); both
are read.
"""

from weightport.families import llama, mistral
from weightport.spec import (
    Alternatives, AnyOf, Blocks, Choice, Constant, Derived, Flatten, From, HFClass, Ignore, Linear, ModelSpec, Nested,
    NoBiases, Rename, Renamed, Section, Sub, T, Tensor, override,
)

# Pixtral's image normalization (CLIP statistics), which Fast-LLM records with the vision encoder.
IMAGE_NORMALIZATION = (
    Constant([0.48145466, 0.4578275, 0.40821073], native="normalization.mean", reason="image preprocessing"),
    Constant([0.26862954, 0.26130258, 0.27577711], native="normalization.std", reason="image preprocessing"),
)
UNSET = ("query_layer", "key_layer", "value_layer", "dense_layer")


def _rms(path: str) -> tuple:
    return (Constant("rms_norm", native=f"{path}.type"),
            Constant(1e-5, native=f"{path}.epsilon", reason="Pixtral's norms use 1e-5 whatever the config says"),
            Constant(False, native=f"{path}.zero_centered"))


def pixtral_head_size(hf: dict) -> int:
    """The width of Pixtral's attention heads: hidden_size / num_attention_heads. PixtralAttention sizes its
    projections (hidden_size x hidden_size) and splits its heads so whatever `head_dim` says (transformers 5.25 and
    4.57 models/pixtral/modeling_pixtral.py), and Fast-LLM's Pixtral importer reads head_size so. `head_dim` sizes
    only the rotary: PixtralVisionConfig derives it from the same two keys where config.json has none (and transformers
    4 overwrote a given one with it); transformers 5 keeps a given one, and a model whose head_dim is another width
    fails in its forward pass (the rotary cannot apply to its heads), so it is read as transformers 4 read it, and
    the value is kept and written back."""
    if hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError("Pixtral's attention needs hidden_size to be a multiple of num_attention_heads")
    return hf["hidden_size"] // hf["num_attention_heads"]


VISION_BLOCK = (
    Constant("decoder", native="type"),
    Nested("mixer", "", (
        Constant("attention", native="type"),
        Rename("heads", "num_attention_heads"),
        Rename("head_groups", "num_attention_heads"),
        Derived("head_size", pixtral_head_size, hf="head_dim",
                reason="Pixtral's heads are hidden_size / num_attention_heads wide, whatever head_dim says"),
        Constant(False, native="add_linear_biases"),
        *NoBiases(*UNSET),
        Rename("dropout", "attention_dropout", default=0.0),
        Constant(False, native="causal", reason="vision attention sees the whole image"),
        Constant(0.5, native="softmax_scale_power"),
        *(Constant(None, native=norm) for norm in ("query_norm", "key_norm", "value_norm")),
        Constant(False, native="shared_key_value"),
        Constant(None, native="window_size", write=False),
        Constant("default_2d", native="rotary.type", reason="Pixtral's 2-D rotary"),
        Constant("default", hf="rope_parameters.rope_type", also=("axial",), reason="transformers 5.2x says axial"),
        Rename("rotary.theta", "rope_parameters.rope_theta", default=10000.0),
    )),
    Nested("mlp", "", (
        Constant("mlp", native="type"),
        Rename("intermediate_size", "intermediate_size"),
        Rename("activation", "hidden_act", values=llama.ACTIVATIONS),
        Constant(True, native="gated"),
        Constant(False, native="add_linear_biases"),
        *NoBiases("layer_1", "layer_2"),
        Constant(None, native="pre_norm"),
        Constant(None, native="post_norm"),
    )),
    *_rms("normalization"),
    *(Constant(None, native=f"{n}_normalization") for n in ("pre_mixer", "pre_mlp", "post_mixer", "post_mlp")),
    Constant(None, native="output_scale.enabled", write=False),
)
VISION = (
    Constant("pixtral", hf="model_type", reason="the vision encoder is Pixtral"),
    Rename("hidden_size", "hidden_size"),
    Rename("embeddings.patch_height", "patch_size"),
    Rename("embeddings.patch_width", "patch_size"),
    Constant(3, hf="num_channels", reason="images are RGB"),
    Constant(None, native="embeddings.patch_embeddings.bias.enabled",
             reason="Pixtral's patch convolution has no bias", write=False),
    *_rms("embeddings.normalization"),
    Constant("fixed", native="encoder.type"),
    Rename("encoder.num_blocks", "num_hidden_layers"),
    Nested("encoder.block", "", VISION_BLOCK),
    *IMAGE_NORMALIZATION,
    Ignore(hf="image_size", reason="the largest image the processor makes; not a weight shape"),
    *(Ignore(hf=key, reason="not used by the Pixtral encoder's forward pass")
      for key in ("initializer_factor", "initializer_range", "layer_norm_eps", "projection_dim", "vocab_size")),
)
ADAPTER = (
    Constant("mlp", native="type"),
    Rename("activation", "projector_hidden_act", values=llama.ACTIVATIONS),
    Rename("add_linear_biases", "multimodal_projector_bias", default=True),
    Derived("intermediate_size", lambda hf: hf["text_config"]["hidden_size"], reason="the projector is text-sized"),
    Constant(False, native="gated"),
    *NoBiases("layer_1", "layer_2"),
    Constant(None, native="pre_norm"),
    Constant(None, native="post_norm"),
)
# Without a record of the HF model, an export writes the first text model that fits: Llama, LlavaConfig's default
# text model (as Fast-LLM's exporter writes it too), unless the model needs Mistral's sliding window.
TEXT_MODELS = {"llama": ("llama", llama.SPEC.config + (
    Constant(None, hf="sliding_window", write=False, reason="Fast-LLM's export leaves it in Llama text configs"),)),
    "mistral": ("mistral", mistral.SPEC.config)}


def text_config(text_models: dict) -> tuple:
    """The config rules of a Llava text model selected by `text_config.model_type` (Llama when absent). The
    embeddings are tied when the top-level `tie_word_embeddings` or the text model's is true
    (LlavaConfig.__post_init__, transformers 5.24)."""
    untied = {kind: (spelled, override(rules, drop=("tied_embedding_weight",)))
              for kind, (spelled, rules) in text_models.items()}
    return (
        Choice("", "text_config", untied, key="model_type", default="llama", stored=False),
        AnyOf("tied_embedding_weight", ("tie_word_embeddings", "text_config.tie_word_embeddings")),
    )


def config(text_models: dict) -> tuple:
    """The Llava config table around text models selected by `text_config.model_type` (see `text_config`)."""
    return (
        *text_config(text_models),
        Nested("vision_encoder", "vision_config", VISION),
        Nested("vision_encoder.adapter", "", ADAPTER),
        Rename("image_token_index", "image_token_index"),
        Constant("full", hf="vision_feature_select_strategy", reason="the adapter reads every patch"),
        Constant(-1, hf="vision_feature_layer", reason="the adapter reads the last encoder layer"),
        Ignore(hf="image_seq_length", reason="a processor setting"),
        Constant("mlp", hf="type", write=False, reason="a stray key that Fast-LLM's exporter writes"),
    )


VISION_WEIGHTS = (
    Tensor("embeddings.patch_embeddings.weight", "patch_conv.weight",
           ops=(Flatten(1, (3, "embeddings.patch_height", "embeddings.patch_width")),)),
    Tensor("embeddings.normalization.weight", "ln_pre.weight"),
    Blocks("encoder", "transformer.layers", (
        Section("mixer", "attention", llama.ATTENTION_WEIGHTS),
        Section("mlp", "feed_forward", llama.MLP_WEIGHTS),
        Tensor("norm_1.weight", "attention_norm.weight"),
        Tensor("norm_2.weight", "ffn_norm.weight"),
    )),
)


# transformers 5 names a Llava model's tensors by its modules (`model.state_dict()`, or a checkpoint saved from it as
# is); save_pretrained writes the names above through its conversion mapping for `llava` (transformers 5.24
# conversion_mapping.py), whose prefix renames these undo. transformers loads both.
MODULE_NAMES = {"language_model.model": "model.language_model", "language_model.lm_head": "lm_head",
                "vision_tower": "model.vision_tower", "multi_modal_projector": "model.multi_modal_projector"}


def weights(text: tuple, outside: tuple = (), names: dict = MODULE_NAMES, saved: str = "save_pretrained") -> tuple:
    """The Llava weight table around a text model's weight table (and `outside` it, tensors the checkpoint keeps
    beside `language_model`) in two namings of the whole model: the checkpoint's (`saved`, which exports write) and
    the modules' (`state_dict`), which `names` renames it to."""
    checkpoint = (
        Section("vision_encoder", "vision_tower", VISION_WEIGHTS),
        Linear("vision_encoder.adapter.layer_1", "multi_modal_projector.linear_1"),
        Linear("vision_encoder.adapter.layer_2", "multi_modal_projector.linear_2", ops=(T(),)),
        Section("", "language_model", text),
        *outside,
    )
    return namings(checkpoint, names, saved)


def namings(checkpoint: tuple, names: dict = MODULE_NAMES, saved: str = "save_pretrained") -> tuple:
    """A Llava-like weight table in two namings of the whole model: the checkpoint's (`saved`, which exports write)
    and the modules' (`state_dict`), which `names` renames it to."""
    return (Alternatives("", {saved: ("", checkpoint), "state_dict": ("", (Renamed(checkpoint, names),))}),)


PIXTRAL = HFClass("PixtralVisionConfig", "transformers 5.24.0 models/pixtral/configuration_pixtral.py", {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "num_channels": 3, "image_size": 1024, "patch_size": 16, "hidden_act": "gelu", "attention_dropout": 0.0,
    "rope_parameters": From(lambda hf: {"rope_theta": 10000.0, "rope_type": "default"}, "2-D rotary, theta 10000"),
    "initializer_range": 0.02, "head_dim": llama.HEAD_DIM,
}, pinned={"rope_parameters": {"rope_theta": 10000.0, "rope_type": "axial"}})


def hf_class(name: str, source: str, text: dict, text_default: str, vision: Sub, **keys: object) -> HFClass:
    """A Llava-like config class around `text` classes (by `model_type`) and a vision class."""
    return HFClass(name, source, {
        "vision_config": vision, "text_config": Sub(text, text_default), "image_token_index": 32000,
        "image_seq_length": 576, "projector_hidden_act": "gelu", "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2, "multimodal_projector_bias": True, **keys,
    })


# Without a vision_config the class makes a CLIP one, which this format does not convert.
VISION_CLASSES = Sub({"pixtral": PIXTRAL}, "clip_vision_model")
HF_CLASS = hf_class("LlavaConfig", "transformers 5.24.0 models/llava/configuration_llava.py",
                    {"llama": llama.HF_CLASS, "mistral": mistral.HF_CLASS}, "llama", VISION_CLASSES,
                    tie_word_embeddings=False)

SPEC = ModelSpec(name="llava", model_type="llava", architecture="LlavaForConditionalGeneration",
                 config=config(TEXT_MODELS), weights=weights(llama.WEIGHTS), native_model="multimodal",
                 hf_class=HF_CLASS, detect_by={"vision_config.model_type": ("pixtral",)})
