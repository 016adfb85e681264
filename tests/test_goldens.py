"""The reference conversions made by the real Fast-LLM converter (tests/goldens, see MANIFEST.md), every leg."""

from __future__ import annotations

import pytest
import torch

import weightport
from weightport.core import layouts
from helpers import (
    CASES, GOLDENS, assert_same_config, assert_same_native_model, assert_same_tensors, assert_written_like, case,
    fast_llm_export_differences, hf_config, logits, native_meta, tensors,
)
from reference import native_tensors


def by_source(source: str) -> list[str]:
    """The cases that started on one side (each case runs the legs of its side; see MANIFEST.md)."""
    return [c for c in CASES if case(c)["source"] == source]


def layout_of(name: str, config: dict) -> str:
    """The config.json layout (transformers version) of a golden's HF config, which its exports are written in."""
    return layouts.normalize(config, weightport.families.load(case(name)["format"]).layouts)[1]


def assert_exported_like_fast_llm(name: str, ours: dict, theirs: dict) -> None:
    """weightport's export of a native checkpoint that records no HF model is Fast-LLM's export of it, key for key,
    but for Fast-LLM's own defects (each named in helpers.py)."""
    allowed, expected = fast_llm_export_differences(name)
    assert_same_config(ours, theirs, allowed, expected)


@pytest.mark.parametrize("name", by_source("hf"))
def test_hf_import_equals_golden_native_and_comes_back_whole(name, tmp_path):
    golden = GOLDENS / name
    weightport.convert(golden / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"), upcast=True)
    assert_written_like(native_meta(tmp_path / "native")["config"]["base_model"],
                        native_meta(golden / "fast_llm")["config"]["base_model"])
    weightport.convert(tmp_path / "native", tmp_path / "hf")
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "hf"))
    assert_same_config(hf_config(tmp_path / "hf"), hf_config(golden / "hf"))


@pytest.mark.parametrize("name", by_source("hf"))
def test_hf_import_in_float32_matches_golden_dtypes(name, tmp_path):
    golden = GOLDENS / name
    weightport.convert(golden / "hf", tmp_path / "native", dtype="float32")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"))


@pytest.mark.parametrize("name", by_source("hf"))
def test_golden_native_exports_like_fast_llm(name, tmp_path):
    """The native checkpoint Fast-LLM wrote (no record of the HF model) exports as Fast-LLM exported it: the same
    tensors, and config.json key for key in the golden's layout."""
    golden = GOLDENS / name
    theirs = hf_config(golden / "roundtrip")
    weightport.convert(golden / "fast_llm", tmp_path / "hf", format=case(name)["format"],
                       hf_layout=layout_of(name, theirs))
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "roundtrip"))
    assert_exported_like_fast_llm(name, hf_config(tmp_path / "hf"), theirs)


@pytest.mark.parametrize("name", by_source("fast_llm"))
def test_native_export_equals_golden_hf_and_comes_back(name, tmp_path):
    """The native original exports as Fast-LLM exported it (tensors; config.json key for key, in the golden's
    layout), and that export comes back to the native original and exports again to itself, config.json whole;
    Fast-LLM's own export converts to the native original too, and back to itself."""
    golden, fmt = GOLDENS / name, case(name)["format"]
    theirs = hf_config(golden / "hf")
    weightport.convert(golden / "fast_llm", tmp_path / "hf", format=fmt, hf_layout=layout_of(name, theirs))
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "hf"))
    assert_exported_like_fast_llm(name, hf_config(tmp_path / "hf"), theirs)
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"))
    model = native_meta(golden / "fast_llm")["model"]
    assert_same_native_model(native_meta(tmp_path / "native")["config"]["base_model"],
                             native_meta(golden / "fast_llm")["config"]["base_model"], model)
    weightport.convert(tmp_path / "native", tmp_path / "hf_again")
    assert_same_tensors(tensors(tmp_path / "hf_again"), tensors(tmp_path / "hf"))
    assert_same_config(hf_config(tmp_path / "hf_again"), hf_config(tmp_path / "hf"))
    weightport.convert(golden / "hf", tmp_path / "from_golden_hf", format=fmt)
    assert_same_tensors(tensors(tmp_path / "from_golden_hf"), tensors(golden / "fast_llm"))
    if (golden / "roundtrip").is_dir():  # Fast-LLM's importer read the same hf/: we write what it wrote
        assert_written_like(native_meta(tmp_path / "from_golden_hf")["config"]["base_model"],
                            native_meta(golden / "roundtrip")["config"]["base_model"])
    weightport.convert(tmp_path / "from_golden_hf", tmp_path / "golden_hf_back")
    assert_same_tensors(tensors(tmp_path / "golden_hf_back"), tensors(golden / "hf"))
    assert_same_config(hf_config(tmp_path / "golden_hf_back"), theirs)


def transformers_class(name: str) -> str | None:
    """The transformers class that loads golden `name`'s HF checkpoint, where transformers has it."""
    import transformers

    cls = (case(name).get("hf_reload_check") or {}).get("model_class")
    return cls if cls and hasattr(transformers, cls) else None


# Goldens transformers cannot load here, and why.
NO_LOGITS = {
    "apriel2_multimodal": "Apriel2 is remote code that needs CUDA kernels (causal_conv1d, mamba_ssm) for its GDN "
                          "mixer; tests/fastllm/test_fastllm_remote_code.py gives the logits of CPU-only variants",
    "apriel2_text_hybrid": "Apriel2 is remote code that needs CUDA kernels (causal_conv1d, mamba_ssm) for its GDN and "
                           "KDA mixers; tests/fastllm/test_fastllm_remote_code.py gives the logits of CPU-only "
                           "variants",
    "apriel2_text_stochastic": "Apriel2 is remote code that needs CUDA kernels (causal_conv1d, mamba_ssm) for its GDN "
                               "and KDA mixers; tests/fastllm/test_fastllm_remote_code.py gives the logits of "
                               "CPU-only variants",
    "mtp_llama": "MTPLlamaForCausalLM is remote code that needs transformers 5.14 "
                 "(transformers.modeling_attn_mask_utils); tests/fastllm/test_fastllm_remote_code.py loads it under "
                 "Fast-LLM's transformers",
    "llava_hybrid_ssm_attn_only": "LlavaHybridForConditionalGeneration is remote code that imports "
                                  "modeling_apriel_hybrid_ssm.py (CUDA kernels), which Fast-LLM does not ship beside "
                                  "it",
    "tf4_apriel_hybrid_ssm": "AprielHybridSSMForCausalLM is remote code that imports causal_conv1d and mamba_ssm "
                             "(CUDA kernels)",
}


def with_logits() -> list:
    """Every golden: those transformers loads here run, the others are skipped saying why."""
    return [pytest.param(name, marks=pytest.mark.skip(reason=NO_LOGITS[name])) if name in NO_LOGITS else name
            for name in CASES]


def test_every_golden_has_logits_or_a_reason():
    """The goldens skipped below are exactly those transformers cannot load, all of which started on the native
    side (so every golden imported from a transformers model also checks tests/reference.py)."""
    assert sorted(NO_LOGITS) == sorted(c for c in CASES if transformers_class(c) is None)
    assert all(case(c)["source"] == "fast_llm" for c in NO_LOGITS)


@pytest.mark.parametrize("name", with_logits())
def test_converted_checkpoints_give_the_same_logits(name, tmp_path):
    """Through native and back gives the golden HF logits; Fast-LLM's native exported gives Fast-LLM's export's."""
    transformers = pytest.importorskip("transformers")
    golden, fmt = GOLDENS / name, case(name)["format"]
    cls = getattr(transformers, transformers_class(name))
    weightport.convert(golden / "hf", tmp_path / "native", format=fmt)
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert torch.equal(logits(cls, golden / "hf"), logits(cls, tmp_path / "back"))
    if (golden / "roundtrip").is_dir() and case(name)["source"] == "hf":
        weightport.convert(golden / "fast_llm", tmp_path / "exported", format=fmt)
        assert torch.equal(logits(cls, golden / "roundtrip"), logits(cls, tmp_path / "exported"))


@pytest.mark.parametrize("name", [
    name if case(name)["source"] == "hf" else pytest.param(name, marks=pytest.mark.skip(
        reason="the golden started from Fast-LLM's native model, not from a transformers model, and transformers "
               "cannot load its HF export here: " + NO_LOGITS[name]))
    for name in CASES])
def test_the_reference_layout_is_fast_llms(name):
    """tests/reference.py, which computes native tensors from a transformers model's own parameters in plain torch
    (other tests hold weightport to it), gives the native checkpoint the real Fast-LLM wrote."""
    transformers = pytest.importorskip("transformers")
    model = getattr(transformers, transformers_class(name)).from_pretrained(GOLDENS / name / "hf")
    assert_same_tensors(native_tensors(model), tensors(GOLDENS / name / "fast_llm"), upcast=True)
