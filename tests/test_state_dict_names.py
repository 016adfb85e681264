"""Checkpoints named as transformers 5 names a model's tensors in memory: `model.state_dict()`, given to `import_hf` or
saved as is. For most families these are the names `save_pretrained` writes; a Llava model holds its module names
(`model.language_model.layers.0...`, `model.vision_tower...`, `lm_head.weight`) where `save_pretrained` writes
`language_model.model.layers.0...`, `vision_tower...`, `language_model.lm_head.weight`. weightport reads both into the
same native checkpoint, exports what `save_pretrained` writes, and refuses a checkpoint that mixes the two."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

import weightport
from helpers import assert_converts_as_saved, assert_same_tensors, cli, hf_config, model_inputs, tensors
from weightport import families
from weightport.errors import CoverageError

transformers = pytest.importorskip("transformers")
from reference import native_tensors  # noqa: E402
from test_transformers_models import CASES, build, build_llava  # noqa: E402 - needs transformers

LLAVAS = {"llava": (False, "MistralConfig"), "llava_tied": (True, "MistralConfig"),
          "llava_llama": (False, "LlamaConfig"), "llava_llama_tied": (True, "LlamaConfig")}


def save_as_is(model: torch.nn.Module, config_from, folder) -> None:
    """`safetensors.torch.save_file(model.state_dict())` beside the model's config.json (tied tensors cloned: the
    safetensors library refuses shared storage)."""
    folder.mkdir()
    save_file({name: tensor.clone() for name, tensor in model.state_dict().items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    (folder / "config.json").write_text((config_from / "config.json").read_text())


def llava_outputs(model: torch.nn.Module, config: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**model_inputs(config)).logits


@pytest.fixture(params=list(LLAVAS))
def llava(request, tmp_path):
    """A tiny random Llava saved by save_pretrained and as its state_dict, and the native checkpoint of the first."""
    tied, text = LLAVAS[request.param]
    model = build_llava(tmp_path / "saved", tied=tied, text=text)
    save_as_is(model, tmp_path / "saved", tmp_path / "state_dict")
    weightport.convert(tmp_path / "saved", tmp_path / "native_saved")
    return model, tmp_path, tied


def test_what_transformers_holds_writes_and_loads(llava):
    model, root, tied = llava
    held, saved = set(model.state_dict()), set(tensors(root / "saved"))
    assert {"model.language_model.layers.1.self_attn.k_proj.weight", "model.vision_tower.patch_conv.weight",
            "model.multi_modal_projector.linear_2.bias", "lm_head.weight"} <= held
    assert {"language_model.model.layers.1.self_attn.k_proj.weight", "vision_tower.patch_conv.weight",
            "multi_modal_projector.linear_2.bias"} <= saved
    assert ("language_model.lm_head.weight" in saved) is not tied and not held & saved
    loaded = transformers.LlavaForConditionalGeneration.from_pretrained(root / "state_dict").eval()
    config = hf_config(root / "saved")
    assert torch.equal(llava_outputs(loaded, config), llava_outputs(model, config))


def test_import_hf_reads_a_llava_state_dict_in_any_order(llava):
    model, root, tied = llava
    config, expected = hf_config(root / "saved"), tensors(root / "native_saved")
    items = list(model.state_dict().items())
    random.Random(0).shuffle(items)
    for given in (items, [(name, tensor.clone()) for name, tensor in items], list(tensors(root / "saved").items())):
        assert_same_tensors(dict(weightport.import_hf(config, given)), expected)


def test_a_llava_state_dict_saved_as_is_converts_with_the_cli_and_exports_what_save_pretrained_writes(llava):
    model, root, tied = llava
    plan = json.loads(cli("plan", root / "state_dict", "--json").stdout)
    assert "the whole model: read from HF layout 'state_dict' (an export writes 'save_pretrained')" in plan["notes"]
    assert {"op": "rename", "src": [{"name": "model.language_model.norm.weight", "shape": [32], "dtype": "F32"}],
            "dst": [{"name": "head.final_norm.weight", "shape": [32], "dtype": "F32"}]} in plan["steps"]
    assert (plan["steps"][0]["op"] == "check equal + drop") is tied
    out = cli("check", root / "state_dict").stdout
    assert ("note: lm_head.weight is a tied copy of model.language_model.embed_tokens.weight" in out) is tied
    assert_converts_as_saved(root, root / "state_dict")
    exported = transformers.LlavaForConditionalGeneration.from_pretrained(root / "back").eval()
    config = hf_config(root / "saved")
    assert torch.equal(llava_outputs(exported, config), llava_outputs(model, config))
    assert "the same model" in cli("verify", root / "state_dict", root / "native").stdout


# Mixed namings are refused


def test_a_checkpoint_mixing_the_namings_is_refused_and_nothing_is_written(llava):
    _, root, tied = llava
    weights = load_file(root / "state_dict" / "model.safetensors")
    weights["language_model.model.norm.weight"] = weights.pop("model.language_model.norm.weight")
    save_file(weights, root / "state_dict" / "model.safetensors")
    result = cli("convert", root / "state_dict", root / "native", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no HF layout of the whole model is complete: 'save_pretrained' lacks language_model." in result.stderr
    assert "; 'state_dict' lacks model.language_model.norm.weight\n" in result.stderr
    assert "tensor claimed by no rule: language_model.model.norm.weight" in result.stderr
    assert not (root / "native").exists()


def test_import_hf_refuses_a_tensor_named_the_other_way(llava):
    model, root, tied = llava
    config, saved = hf_config(root / "saved"), tensors(root / "saved")
    state = model.state_dict()
    items = [(name, tensor) for name, tensor in state.items() if name != "model.vision_tower.ln_pre.weight"]
    items.append(("vision_tower.ln_pre.weight", saved["vision_tower.ln_pre.weight"]))
    with pytest.raises(CoverageError, match=r"tensor 'vision_tower.ln_pre.weight' is in HF layout 'save_pretrained' "
                                            r"of the whole model, whose first tensor came in layout 'state_dict'"):
        list(weightport.import_hf(config, items))
    partial = [(name, tensor) for name, tensor in state.items() if name != "model.language_model.norm.weight"]
    with pytest.raises(CoverageError, match="never arrived") as err:
        list(weightport.import_hf(config, partial))
    assert "model.language_model.norm.weight" in str(err.value) and "language_model.model" not in str(err.value)


@pytest.mark.parametrize("first", ["copy", "original"])
def test_a_tied_copy_is_checked_against_the_embedding_of_its_own_naming(first, tmp_path):
    model = build_llava(tmp_path / "saved", tied=True, text="MistralConfig")
    config, state = hf_config(tmp_path / "saved"), dict(model.state_dict())
    copy = state.pop("lm_head.weight")
    others = list(state.items())
    crossed = [("language_model.lm_head.weight", copy)]  # save_pretrained's name for the copy, beside module names
    late, named, layout = (("language_model.lm_head.weight", "save_pretrained", "state_dict") if first == "original"
                           else (others[0][0], "state_dict", "save_pretrained"))  # the copy decides the naming
    with pytest.raises(CoverageError, match=rf"tensor '{late}' is in HF layout '{named}' of the whole model, whose "
                                            rf"first tensor came in layout '{layout}'"):
        list(weightport.import_hf(config, others + crossed if first == "original" else crossed + others))
    changed = copy.clone()
    changed[5, 2] += 1
    given = others + [("lm_head.weight", changed)] if first == "original" else [("lm_head.weight", changed)] + others
    with pytest.raises(CoverageError, match=r"lm_head.weight differs from model.language_model.embed_tokens.weight "
                                            r"\(first at element \[5, 2\]\)"):
        list(weightport.import_hf(config, given))
    alone = [(name, tensor) for name, tensor in given if name != "model.language_model.embed_tokens.weight"]
    with pytest.raises(CoverageError, match="never arrived") as err:
        list(weightport.import_hf(config, alone))
    assert "model.language_model.embed_tokens.weight" in str(err.value)
    assert "the original of the tied copy lm_head.weight" in str(err.value)


# Every family with a transformers class


def test_every_family_with_a_transformers_class_is_checked_here():
    have = {name for name in families.FAMILIES if hasattr(transformers, families.load(name).architecture)}
    built = {families.detect(getattr(transformers, cls)().model_type) for cls, _, _ in CASES.values()}
    assert have == built | {"llava", "gemma4_vlm", "mistral3", "llava_clip"}  # wrappers: tests/test_wrappers.py


@pytest.mark.parametrize("case", list(CASES))
def test_import_hf_of_each_models_state_dict(case, tmp_path):
    """`model.state_dict()` as transformers 5 holds it (stacked Mixtral experts, tied copies included) imports into
    the native checkpoint of its save_pretrained folder."""
    model = build(case, tmp_path / "saved")
    weightport.convert(tmp_path / "saved", tmp_path / "native")
    assert_same_tensors(dict(weightport.import_hf(hf_config(tmp_path / "saved"), model.state_dict().items())),
                        tensors(tmp_path / "native"))


# llava_hybrid_ssm: remote classes with Llava's modules


def hybrid_config(llava_config: dict) -> dict:
    """The llava_hybrid config.json of a Llava whose text model is an attention-only Apriel hybrid: its remote classes
    (`LlavaHybridForConditionalGeneration(LlavaForConditionalGeneration)`, Fast-LLM 0.4.0) build Llava's modules, and
    attention layers (`t`) are Mistral's, so a Llava's state_dict has the names of such a model's."""
    text = llava_config["text_config"]
    return llava_config | {
        "model_type": "llava_hybrid", "architectures": ["LlavaHybridForConditionalGeneration"],
        "text_config": text | {"model_type": "apriel_ssm_thinker_hybrid",
                               "hybrid_block_layout": ["t"] * text["num_hidden_layers"]},
    }


@pytest.mark.parametrize("tied", [False, True])
def test_llava_hybrid_reads_module_names_and_exports_fast_llms(tied, tmp_path):
    model = build_llava(tmp_path / "saved", tied=tied, text="MistralConfig")
    weightport.convert(tmp_path / "saved", tmp_path / "native_llava")
    config = hybrid_config(hf_config(tmp_path / "saved"))
    native = dict(weightport.import_hf(config, model.state_dict().items()))
    assert_same_tensors(native, native_tensors(model))  # Fast-LLM's layout, from the model's own parameters
    assert_same_tensors(native, tensors(tmp_path / "native_llava"))
    # lm_head.weight is named alike both ways: arriving first, it decides nothing (tied, it waits for its original)
    assert_same_tensors(dict(weightport.import_hf(config, reversed(model.state_dict().items()))), native)
    save_as_is(model, tmp_path / "saved", tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    plan = weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert "the whole model: read from HF layout 'state_dict' (an export writes 'fast_llm')" in plan.notes
    assert_same_tensors(tensors(tmp_path / "native"), native)
    weightport.convert(tmp_path / "native", tmp_path / "back")
    back = tensors(tmp_path / "back")
    assert {"model.norm.weight", "language_model.model.layers.1.mlp.up_proj.weight"} <= set(back)  # Fast-LLM's names
    assert ("lm_head.weight" in back) is not tied
    weightport.convert(tmp_path / "back", tmp_path / "native2")
    assert_same_tensors(tensors(tmp_path / "native2"), native)
