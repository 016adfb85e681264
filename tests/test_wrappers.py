"""Wrapper formats: published vision-language checkpoints whose text model Fast-LLM trains (`gemma4_vlm`, `mistral3`,
`llava_clip`).
Tiny real transformers models (fixed seed): the text model converts (to the tensors tests/reference.py computes from
the model's own parameters), the towers and projectors are carried bit for bit; the export is the same wrapper (same
tensors, same config.json, same logits with an image and audio), or the text model alone as its causal LM; a
checkpoint Fast-LLM saved (no carried parts) takes them from `--origin`."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import weightport
from helpers import (
    assert_converts_as_saved, assert_same_config, assert_same_tensors, cli, hf_config, saved_by_fast_llm, tensors,
)
from reference import native_tensors
from weightport.core.paths import MISSING
from weightport.errors import ConfigError

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)
GEMMA4_TEXT = dict(head_dim=8, global_head_dim=16, hidden_size_per_layer_input=0, sliding_window=8,
                   layer_types=["sliding_attention", "sliding_attention", "full_attention"])
MOE = dict(enable_moe_block=True, num_experts=3, top_k_experts=2, moe_intermediate_size=16,
           attention_k_eq_v=True, num_global_key_value_heads=1)
TOKENS = dict(image_token_id=90, audio_token_id=91, video_token_id=92, boi_token_id=93, eoi_token_id=94,
              boa_token_id=89, eoa_token_index=88)


def gemma4(**text: object) -> transformers.PreTrainedConfig:
    vision = transformers.Gemma4VisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=2, head_dim=8, patch_size=4,
                                             position_embedding_size=64)
    audio = transformers.Gemma4AudioConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    return transformers.Gemma4Config(text_config=transformers.Gemma4TextConfig(**BASE, **GEMMA4_TEXT, **text),
                                     vision_config=vision, audio_config=audio, **TOKENS)


def mistral3(tied: bool) -> transformers.PreTrainedConfig:
    vision = transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                              num_attention_heads=4, patch_size=4, image_size=16, head_dim=8)
    return transformers.Mistral3Config(text_config=transformers.MistralConfig(**BASE), vision_config=vision,
                                       image_token_index=95, spatial_merge_size=2, tie_word_embeddings=tied)


def llava_clip(text: str, tied: bool = False) -> transformers.PreTrainedConfig:
    """Llava 1.5 style: a CLIP tower read at its second-to-last layer, 16x16 images of 4x4 patches (16 tokens)."""
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=16, patch_size=4, projection_dim=32)
    text_config = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[text](**BASE)
    return transformers.LlavaConfig(text_config=text_config, vision_config=vision, image_token_index=95,
                                    image_seq_length=16, vision_feature_layer=-2, tie_word_embeddings=tied)


CASES = {
    "gemma4_dense": (lambda: gemma4(), "Gemma4ForConditionalGeneration", "Gemma4ForCausalLM"),
    "gemma4_moe_untied": (lambda: gemma4(**MOE, tie_word_embeddings=False), "Gemma4ForConditionalGeneration",
                          "Gemma4ForCausalLM"),
    "mistral3": (lambda: mistral3(False), "Mistral3ForConditionalGeneration", "MistralForCausalLM"),
    "mistral3_tied": (lambda: mistral3(True), "Mistral3ForConditionalGeneration", "MistralForCausalLM"),
    "llava_clip": (lambda: llava_clip("llama"), "LlavaForConditionalGeneration", "LlamaForCausalLM"),
    "llava_clip_mistral_tied": (lambda: llava_clip("mistral", tied=True), "LlavaForConditionalGeneration",
                                "MistralForCausalLM"),
}


def build(name: str, folder) -> torch.nn.Module:
    make, cls, _ = CASES[name]
    config = make()
    if name == "gemma4_moe_untied":
        config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config)
    with torch.no_grad():
        for param in model.parameters():  # norms too, so a mis-mapped tensor cannot hide behind ones
            param.normal_(0, 0.05)
    model.eval().save_pretrained(folder)
    return model


def inputs(config: dict) -> dict:
    """A prompt with an image (and for Gemma 4 an audio clip) in front of a few text tokens."""
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(3, 80, (1, 6), generator=generator)
    if config["model_type"] == "gemma4":  # 3x3 patches pooled (kernel 3) to one token; 64 audio frames to 16
        patch = config["vision_config"]["patch_size"]
        ids = [torch.tensor([[config["image_token_id"]]]), torch.full((1, 16), config["audio_token_id"]), text]
        return {"input_ids": torch.cat(ids, 1), "pixel_values": torch.rand(1, 9, 3 * patch * patch,
                                                                         generator=generator),
                "image_position_ids": torch.tensor([[[x, y] for y in range(3) for x in range(3)]]),
                "input_features": torch.randn(1, 64, 128, generator=generator),
                "input_features_mask": torch.ones(1, 64, dtype=torch.bool)}
    if config["model_type"] == "llava":  # CLIP: a 16x16 image of 4x4 patches, sixteen tokens (the class token dropped)
        return {"input_ids": torch.cat([torch.full((1, 16), config["image_token_index"]), text], 1),
                "pixel_values": torch.randn(1, 3, 16, 16, generator=generator)}
    # Pixtral: a 16x16 image of 4x4 patches, merged 2x2 into four tokens
    return {"input_ids": torch.cat([torch.full((1, 4), config["image_token_index"]), text], 1),
            "pixel_values": torch.randn(1, 3, 16, 16, generator=generator), "image_sizes": torch.tensor([[16, 16]])}


def outputs(model: torch.nn.Module, **kwargs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs).logits


def load(name: str, folder, text_only: bool = False) -> torch.nn.Module:
    """The model in `folder`, its tensors copied out of the memory-mapped file: CPU kernels take other paths for
    tensors at other alignments (a file's tensor order), which changes the last bit of Gemma 4's logits."""
    model = getattr(transformers, CASES[name][2 if text_only else 1]).from_pretrained(folder).eval()
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


@pytest.mark.parametrize("name", CASES)
def test_wrapper_through_native_and_back(name, tmp_path):
    build(name, tmp_path / "hf")
    source = load(name, tmp_path / "hf")  # as loaded: buffers the checkpoint does not hold take their load values
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    native = tensors(tmp_path / "native")
    assert not any("vision" in n or "audio" in n or "projector" in n for n in native)  # only the text model
    assert_same_tensors(native, native_tensors(source))  # Fast-LLM's layout of the text model
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    assert_same_config(hf_config(tmp_path / "back"), hf_config(tmp_path / "hf"))
    prompt = inputs(hf_config(tmp_path / "hf"))
    assert torch.equal(outputs(source, **prompt), outputs(load(name, tmp_path / "back"), **prompt))
    # the text model alone, as its causal LM: the wrapper's logits on text
    weightport.convert(tmp_path / "native", tmp_path / "text", text_only=True)
    text = hf_config(tmp_path / "text")
    assert text["architectures"] == [CASES[name][2]] and "vision_config" not in text
    # what save_pretrained writes for the causal LM of the wrapper's text config, key for key, but that the text model
    # ties as the wrapper does (which ties by its top-level key), and that no transformers_version is written
    getattr(transformers, CASES[name][2])(source.config.get_text_config()).save_pretrained(tmp_path / "text_saved")
    saved = hf_config(tmp_path / "text_saved")
    expected = {"transformers_version": (MISSING, saved["transformers_version"])}
    if source.config.tie_word_embeddings != saved["tie_word_embeddings"]:
        expected["tie_word_embeddings"] = (source.config.tie_word_embeddings, saved["tie_word_embeddings"])
    assert_same_config(text, saved, expected=expected)
    tokens = torch.randint(3, 80, (2, 10), generator=torch.Generator().manual_seed(2))
    assert torch.equal(outputs(source, input_ids=tokens), outputs(load(name, tmp_path / "text", True),
                                                                  input_ids=tokens))


def carried(native) -> dict[str, torch.Tensor]:
    """The HF tensors a native folder keeps beside its model (`hf_files/carried*.safetensors`), by name."""
    out: dict[str, torch.Tensor] = {}
    for file in sorted((native / "hf_files").glob("carried*.safetensors")):
        out |= load_file(file)
    return out


@pytest.mark.parametrize("name", CASES)
def test_a_wrappers_state_dict_saved_as_is_converts_as_its_save_pretrained_checkpoint(name, tmp_path):
    """`model.state_dict()` saved as is: transformers 5's module names (`model.language_model.layers...`,
    `model.vision_tower...`, `lm_head.weight`) where save_pretrained writes Llava's and Mistral 3's
    `language_model.model.layers...`, `vision_tower...` (Gemma 4 names alike, its tied `lm_head.weight` copy aside).
    It converts to the native checkpoint of the save_pretrained folder, carried tensors kept under the names
    save_pretrained writes, and exports what save_pretrained writes, with the original model's logits."""
    from test_state_dict_names import save_as_is

    model = build(name, tmp_path / "saved")
    save_as_is(model, tmp_path / "saved", tmp_path / "state_dict")
    renamed = CASES[name][1] != "Gemma4ForConditionalGeneration"
    assert set(tensors(tmp_path / "state_dict")).isdisjoint(tensors(tmp_path / "saved")) is renamed
    notes = weightport.plan(tmp_path / "state_dict").notes
    read = "the whole model: read from HF layout 'state_dict' (an export writes 'save_pretrained')"
    assert (read in notes) is renamed
    cli("convert", tmp_path / "saved", tmp_path / "native_saved")
    assert_converts_as_saved(tmp_path, tmp_path / "state_dict")  # native tensors, metadata; exported tensors, config
    kept = carried(tmp_path / "native")
    assert kept and set(kept) <= set(tensors(tmp_path / "saved"))  # under the names save_pretrained writes
    assert_same_tensors(kept, carried(tmp_path / "native_saved"))
    assert "the same model" in cli("verify", tmp_path / "state_dict", tmp_path / "native").stdout
    prompt = inputs(hf_config(tmp_path / "saved"))
    for folder in ("state_dict", "back"):  # transformers loads both as the original model
        assert torch.equal(outputs(load(name, tmp_path / folder), **prompt), outputs(model, **prompt)), folder


def test_a_wrapper_checkpoint_naming_its_carried_parts_the_other_way_is_refused(tmp_path):
    """The text model in module names, the vision tower in save_pretrained's: refused, naming both layouts."""
    from test_state_dict_names import save_as_is

    save_as_is(build("llava_clip", tmp_path / "saved"), tmp_path / "saved", tmp_path / "hf")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights = {n.removeprefix("model.") if n.startswith("model.vision_tower.") else n: t for n, t in weights.items()}
    save_file(weights, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    failed = cli("convert", tmp_path / "hf", tmp_path / "native", check=False)
    assert failed.returncode == 1 and not (tmp_path / "native").exists()
    assert ("39 tensor(s) of carried parts named as in HF layout 'save_pretrained' of the whole model, the other "
            "tensors as in layout 'state_dict': name them all one way (vision_tower.embeddings.class_embedding, "
            in failed.stderr)


def train_one_weight(folder) -> str:
    """Change one text weight, as training would; returns its native name."""
    file = next(folder.glob("model_*.safetensors"))
    weights = load_file(file)
    name = next(k for k in sorted(weights) if ".mlp.layer_2." in k)
    weights[name] = weights[name] + 1.0
    save_file(weights, file, metadata={"format": "pt"})
    return name.partition("/")[0]


@pytest.mark.parametrize("name", ["gemma4_dense", "mistral3", "llava_clip"])  # one case of each wrapper format
def test_a_trained_checkpoint_fastllm_saved_exports_with_its_origin(name, tmp_path):
    build(name, tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    saved_by_fast_llm(tmp_path / "native", tmp_path / "trained")
    train_one_weight(tmp_path / "trained")
    wrapper = {"gemma4_dense": "gemma4_vlm", "mistral3": "mistral3", "llava_clip": "llava_clip"}[name]
    with pytest.raises(ConfigError, match="--origin.*--text-only"):
        weightport.convert(tmp_path / "trained", tmp_path / "nowhere", format=wrapper)
    failed = cli("convert", tmp_path / "trained", tmp_path / "nowhere", "--format", wrapper, check=False)
    assert failed.returncode == 1 and "--origin" in failed.stderr and not (tmp_path / "nowhere").exists()
    source = tensors(tmp_path / "hf")
    for origin in ("hf", "native"):  # the HF folder, or the native folder weightport wrote at import
        out = tmp_path / f"from_{origin}"
        cli("convert", tmp_path / "trained", out, "--origin", tmp_path / origin)
        back = tensors(out)
        assert sorted(back) == sorted(source)
        assert_same_config(hf_config(out), hf_config(tmp_path / "hf"))
        differ = [k for k in source if not torch.equal(back[k], source[k])]
        assert len(differ) == 1 and "mlp.down_proj" in differ[0]
    cli("convert", tmp_path / "trained", tmp_path / "text", "--origin", tmp_path / "hf", "--text-only")
    assert hf_config(tmp_path / "text")["architectures"] == [CASES[name][2]]


def test_plan_check_inspect_and_formats_list_the_carried_parts(tmp_path):
    build("gemma4_dense", tmp_path / "hf")
    plan = cli("plan", tmp_path / "hf").stdout
    assert "carry" in plan and "model.vision_tower" in plan and "bytes" in plan
    assert "model.audio_tower" in cli("check", tmp_path / "hf").stdout
    cli("convert", tmp_path / "hf", tmp_path / "native")
    assert (tmp_path / "native" / "hf_files" / "carried.safetensors").is_file()
    for folder in ("hf", "native"):
        shown = cli("inspect", tmp_path / folder).stdout
        assert "carried     model.vision_tower" in shown and "model.embed_audio" in shown
    formats = cli("formats").stdout
    assert "gemma4_vlm" in formats and "carries model.vision_tower" in formats
    assert "carry" in cli("plan", tmp_path / "native").stdout


def test_text_only_applies_to_wrappers_only(tmp_path):
    build("mistral3", tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "text", text_only=True)
    with pytest.raises(ConfigError, match="--text-only applies to exports"):
        weightport.convert(tmp_path / "hf", tmp_path / "n3", text_only=True)
    weightport.convert(tmp_path / "text", tmp_path / "n2")
    with pytest.raises(ConfigError, match="not a wrapper"):
        weightport.convert(tmp_path / "n2", tmp_path / "t2", text_only=True)
    # --format of the text family is the text model alone too
    weightport.convert(tmp_path / "native", tmp_path / "mistral", format="mistral")
    assert hf_config(tmp_path / "mistral")["architectures"] == ["MistralForCausalLM"]


def test_wrapper_tables_are_the_pinned_transformers_classes():
    from test_hf_classes import assert_table_is_class

    from weightport import families

    assert_table_is_class(families.load("gemma4_vlm").hf_class, transformers.Gemma4Config,
                          subs=("text_config", "vision_config", "audio_config"))
    assert_table_is_class(families.load("mistral3").hf_class, transformers.Mistral3Config,
                          subs=("text_config", "vision_config"))
    assert_table_is_class(families.load("llava_clip").hf_class, transformers.LlavaConfig,
                          subs=("text_config", "vision_config"))


def test_llava_formats_are_told_apart_by_their_vision_tower(tmp_path):
    """`llava` (Pixtral vision, converted whole) and `llava_clip` share the model type: the vision config decides,
    as transformers reads it (no vision_config, or one naming no type, is CLIP)."""
    from weightport import families

    pixtral = {"model_type": "llava", "vision_config": {"model_type": "pixtral"}}
    assert families.detect(pixtral) == "llava"
    for config in ({"model_type": "llava", "vision_config": {"model_type": "clip_vision_model"}},
                   {"model_type": "llava"}, {"model_type": "llava", "vision_config": {"hidden_size": 32}}):
        assert families.detect(config) == "llava_clip"
    assert transformers.LlavaConfig().vision_config.model_type == "clip_vision_model"
    with pytest.raises(ConfigError, match="siglip_vision_model.*weightport does not convert this model"):
        families.detect({"model_type": "llava", "vision_config": {"model_type": "siglip_vision_model"}})
    build("llava_clip", tmp_path / "hf")  # a whole checkpoint: import, then export, by its own format
    plan = weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert plan.family == "llava_clip"
    assert yaml.safe_load((tmp_path / "native" / "metadata.yaml").read_text())["metadata"]["weightport"][
        "format"] == "llava_clip"


def siglip_llava(folder) -> None:
    """A tiny Llava with a SigLIP vision tower, a kind neither llava nor llava_clip reads."""
    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=16, patch_size=4)
    config = transformers.LlavaConfig(text_config=transformers.LlamaConfig(**BASE), vision_config=vision,
                                      image_token_index=95, image_seq_length=16)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(folder)


REFUSED = {  # (source, --format): what the error says after the key and its value
    ("pixtral", "llava_clip"): "vision_config.model_type = 'pixtral', but format llava_clip needs "
                               "vision_config.model_type 'clip_vision_model' or absent; it is a llava checkpoint: "
                               "drop --format (or pass --format llava)",
    ("clip", "llava"): "vision_config.model_type = 'clip_vision_model', but format llava needs "
                       "vision_config.model_type 'pixtral'; it is a llava_clip checkpoint: drop --format (or pass "
                       "--format llava_clip)",
    ("siglip", "llava_clip"): "vision_config.model_type = 'siglip_vision_model', but format llava_clip needs "
                              "vision_config.model_type 'clip_vision_model' or absent; no format reads it (llava: "
                              "vision_config.model_type 'pixtral'): weightport does not convert this model",
}


@pytest.mark.parametrize("source, format", list(REFUSED))
def test_a_format_whose_vision_tower_the_config_does_not_have_is_refused(source, format, tmp_path):
    """`--format` (`format=`) cannot make a Llava of one vision tower another format of its model type: the values
    that `detect_by` names are checked wherever a config.json is read as a format (CLI, API, streaming, --origin)."""
    from test_transformers_models import build_llava

    {"pixtral": lambda f: build_llava(f, tied=False, text="MistralConfig"), "clip": lambda f: build("llava_clip", f),
     "siglip": siglip_llava}[source](tmp_path / "hf")
    said = REFUSED[source, format]
    for command in ("convert", "plan", "check"):
        failed = cli(command, tmp_path / "hf", *(["native"] if command == "convert" else []), "--format", format,
                     check=False)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, command
        assert f"weightport: error: config.json has {said}" in failed.stderr, command
    assert not (tmp_path / "native").exists() and not (tmp_path / "hf" / "native").exists()
    with pytest.raises(ConfigError, match=re.escape(said)):
        weightport.convert(tmp_path / "hf", tmp_path / "native", format=format)
    assert not (tmp_path / "native").exists()
    with pytest.raises(ConfigError, match=re.escape(said)):
        list(weightport.import_hf(hf_config(tmp_path / "hf"), tensors(tmp_path / "hf").items(), format=format))
    if source == "siglip":  # without --format: refused too, naming what each format reads
        failed = cli("convert", tmp_path / "hf", tmp_path / "native", check=False)
        assert failed.returncode == 1 and "which no format of that type reads (llava: vision_config.model_type " \
            "'pixtral'; llava_clip: vision_config.model_type 'clip_vision_model' or absent)" in failed.stderr
        with pytest.raises(ConfigError, match=re.escape(said)):  # nor as the origin of a trained checkpoint
            weightport.api.open_origin(tmp_path / "hf", format)
    else:  # its own format converts it
        weightport.convert(tmp_path / "hf", tmp_path / "native")
        with pytest.raises(ConfigError, match=f"disagrees with --origin {re.escape(str(tmp_path / 'hf'))}"):
            weightport.convert(tmp_path / "native", tmp_path / "back", origin=tmp_path / "hf", format=format)
