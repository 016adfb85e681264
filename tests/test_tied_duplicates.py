"""Tied checkpoints that still hold the output projection: `lm_head.weight` (or the family's name for it) beside the
embedding it is tied to, as `model.state_dict()` lists it. transformers loads them; weightport checks the copy
bit-equal to the embedding, drops it with a note, and refuses (naming both, writing nothing) a copy that differs.
Exports of tied models write no copy, as `save_pretrained` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import weightport
from helpers import assert_same_tensors, cli, hf_config, model_inputs, native_meta, tensors
from weightport import families, synth
from weightport.errors import CoverageError

transformers = pytest.importorskip("transformers")
from test_transformers_models import BASE, CASES, build, build_llava, logits  # noqa: E402 - needs transformers

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
# (copy, original) per family where it is not (lm_head.weight, model.embed_tokens.weight)
NAMES = {"llava": ("language_model.lm_head.weight", "language_model.model.embed_tokens.weight"),
         "llava_hybrid_ssm": ("lm_head.weight", "language_model.model.embed_tokens.weight"),
         "gemma4_vlm": ("lm_head.weight", "model.language_model.embed_tokens.weight"),
         "mistral3": ("language_model.lm_head.weight", "language_model.model.embed_tokens.weight"),
         "llava_clip": ("language_model.lm_head.weight", "language_model.model.embed_tokens.weight")}


def names(family: str) -> tuple[str, str]:
    return NAMES.get(family, ("lm_head.weight", "model.embed_tokens.weight"))


def tied_config(family: str) -> dict:
    config = json.loads((FIXTURES / f"{family}.json").read_text()) | {"tie_word_embeddings": True}
    if "text_config" in config:
        config["text_config"] = config["text_config"] | {"tie_word_embeddings": True}
    return config


def add_copy(folder, family: str, change: bool = False) -> None:
    """Add the tied copy to the checkpoint's single file: bit-equal to the embedding, or with one element changed."""
    copy, original = names(family)
    weights = load_file(folder / "model.safetensors")
    weights[copy] = weights[original].clone()
    if change:
        weights[copy][3, 1] += 1
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def assert_nothing_written(folder) -> None:
    assert not folder.exists() and not list(folder.parent.glob(f".{folder.name}*"))


@pytest.mark.parametrize("family", families.FAMILIES)
def test_every_tied_family_drops_an_equal_copy_and_refuses_a_different_one(family, tmp_path):
    clean = synth.write_hf(tmp_path / "clean", tied_config(family), seed=5)
    weightport.convert(clean, tmp_path / "native_clean")
    with_copy = synth.write_hf(tmp_path / "hf", tied_config(family), seed=5)
    add_copy(with_copy, family)
    copy, original = names(family)
    plan = weightport.convert(with_copy, tmp_path / "native")
    assert (f"{copy} is a tied copy of {original} (as config.json says): the conversion checks that it is "
            "bit-equal before anything is written, then drops it") in plan.notes
    assert [(s.op, [r.name for r in s.src]) for s in plan.steps if not s.dst] == [("check equal + drop",
                                                                                 [copy, original])]
    assert_same_tensors(tensors(tmp_path / "native"), tensors(tmp_path / "native_clean"))
    weightport.convert(tmp_path / "native", tmp_path / "back")  # the export writes what save_pretrained writes
    assert_same_tensors(tensors(tmp_path / "back"), tensors(clean))

    add_copy(with_copy, family, change=True)
    with pytest.raises(CoverageError) as err:
        weightport.convert(with_copy, tmp_path / "refused")
    assert f"{copy} differs from {original} (first at element [3, 1])" in str(err.value)
    assert_nothing_written(tmp_path / "refused")


def test_a_tied_llama_saved_from_its_state_dict_converts_with_the_cli(tmp_path):
    """The literal case: `save_file(model.state_dict())` of a tied Llama, next to its config.json. transformers
    loads it; weightport's plan shows the check, its note says the copy was dropped, and native and export equal
    those of `save_pretrained`'s checkpoint."""
    model = build("llama_tied_bf16", tmp_path / "saved")  # save_pretrained: no lm_head.weight
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    (tmp_path / "hf").mkdir()
    save_file(state, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "hf" / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(logits(loaded, BASE["vocab_size"]), logits(model, BASE["vocab_size"]))

    plan = json.loads(cli("plan", tmp_path / "hf", "--json").stdout)
    assert plan["steps"][0] == {"op": "check equal + drop", "dst": [], "src": [
        {"name": "lm_head.weight", "shape": [96, 32], "dtype": "BF16"},
        {"name": "model.embed_tokens.weight", "shape": [96, 32], "dtype": "BF16"}]}
    assert "check equal + drop" in cli("plan", tmp_path / "hf").stdout
    out = cli("convert", tmp_path / "hf", tmp_path / "native").stdout
    assert "note: lm_head.weight is a tied copy of model.embed_tokens.weight" in out
    weightport.convert(tmp_path / "saved", tmp_path / "native_saved")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(tmp_path / "native_saved"))
    assert native_meta(tmp_path / "native") == native_meta(tmp_path / "native_saved")
    cli("convert", tmp_path / "native", tmp_path / "back")
    assert "lm_head.weight" not in tensors(tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "saved"))
    assert "the same model" in cli("verify", tmp_path / "hf", tmp_path / "native").stdout


def test_the_cli_refuses_a_copy_that_differs_naming_both_and_writes_nothing(tmp_path):
    build("llama_tied_bf16", tmp_path / "hf")
    add_copy(tmp_path / "hf", "llama", change=True)
    result = cli("convert", tmp_path / "hf", tmp_path / "native", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "lm_head.weight differs from model.embed_tokens.weight (first at element [3, 1])" in result.stderr
    assert "not tied as its config says" in result.stderr and "tie_word_embeddings to false" in result.stderr
    assert_nothing_written(tmp_path / "native")
    assert cli("verify", tmp_path / "hf", tmp_path / "hf", check=False).returncode == 1


def test_a_copy_of_another_dtype_is_refused_from_the_headers(tmp_path):
    build("llama_tied_bf16", tmp_path / "hf")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].float()
    save_file(weights, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CoverageError, match=r"lm_head.weight \[96, 32\] F32 cannot be a tied copy of "
                                            r"model.embed_tokens.weight \[96, 32\] BF16"):
        weightport.plan(tmp_path / "hf")


def test_a_tied_llava_with_its_text_models_lm_head(tmp_path):
    source = build_llava(tmp_path / "hf", tied=True, text="MistralConfig")
    weightport.convert(tmp_path / "hf", tmp_path / "native_clean")
    add_copy(tmp_path / "hf", "llava")
    converted = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    inputs = model_inputs(hf_config(tmp_path / "hf"))
    with torch.no_grad():
        assert torch.equal(source(**inputs).logits, converted(**inputs).logits)  # transformers loads it
    plan = weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert any(n.startswith("language_model.lm_head.weight is a tied copy") for n in plan.notes)
    assert_same_tensors(tensors(tmp_path / "native"), tensors(tmp_path / "native_clean"))


# In memory: a state_dict lists the shared tensor under both names


def tied_cases() -> list:
    """Every tiny transformers model: the tied ones (whose state_dict lists the shared tensor twice) run, the others
    are skipped saying so."""
    def tied(case: str) -> bool:
        config_cls, _, overrides = CASES[case]
        return getattr(transformers, config_cls)(**{**BASE, **overrides}).tie_word_embeddings

    why = "untied: its state_dict holds the output projection as a tensor of its own, no tied copy"
    return [case if tied(case) else pytest.param(case, marks=pytest.mark.skip(reason=why)) for case in CASES]


@pytest.mark.parametrize("case", tied_cases())
def test_import_hf_of_a_tied_state_dict(case, tmp_path):
    model = build(case, tmp_path / "hf")
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    expected = tensors(tmp_path / "native")
    config = hf_config(tmp_path / "hf")
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()  # one storage
    for items in (list(state.items()), list(reversed(state.items())),  # the copy before its original
                  [(name, tensor.clone()) for name, tensor in state.items()]):  # equal values, own storage
        assert_same_tensors(dict(weightport.import_hf(config, items)), expected)


def test_import_hf_refuses_a_tied_copy_that_differs_and_one_given_twice(tmp_path):
    model = build("llama_tied_bf16", tmp_path / "hf")
    config = hf_config(tmp_path / "hf")
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["lm_head.weight"][0, 7] = 1.0
    for items in (list(state.items()), list(reversed(state.items()))):
        with pytest.raises(CoverageError, match=r"lm_head.weight differs from model.embed_tokens.weight \(first at "
                                                r"element \[0, 7\]\)"):
            list(weightport.import_hf(config, items))
    twice = [("lm_head.weight", state["model.embed_tokens.weight"])] + list(model.state_dict().items())
    with pytest.raises(CoverageError, match="'lm_head.weight' was given twice"):
        list(weightport.import_hf(config, twice))
