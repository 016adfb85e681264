"""The reference conversions made by the real Fast-LLM converter (tests/goldens, see MANIFEST.md), every leg."""

from __future__ import annotations

import pytest
import torch

import weightport
from weightport.core import layouts
from weightport.core.paths import MISSING, dotted, leaves
from helpers import (
    CASES, FAST_LLM_DEFECTS, FAST_LLM_STRAY_KEYS, GOLDENS, assert_same_model_config, assert_same_native_model,
    assert_same_tensors,
    assert_written_like, case, hf_config, logits, native_meta, tensors,
)


def by_source(source: str) -> list[str]:
    return [c for c in CASES if case(c)["source"] == source]


@pytest.mark.parametrize("name", by_source("hf"))
def test_hf_import_equals_golden_native_and_comes_back_whole(name, tmp_path):
    golden = GOLDENS / name
    weightport.convert(golden / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"), upcast=True)
    assert_written_like(native_meta(tmp_path / "native")["config"]["base_model"],
                        native_meta(golden / "fast_llm")["config"]["base_model"])
    weightport.convert(tmp_path / "native", tmp_path / "hf")
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "hf"))
    assert hf_config(tmp_path / "hf") == hf_config(golden / "hf")


@pytest.mark.parametrize("name", by_source("hf"))
def test_hf_import_in_float32_matches_golden_dtypes(name, tmp_path):
    golden = GOLDENS / name
    weightport.convert(golden / "hf", tmp_path / "native", dtype="float32")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"))


@pytest.mark.parametrize("name", by_source("hf"))
def test_golden_native_exports_like_fast_llm(name, tmp_path):
    golden = GOLDENS / name
    weightport.convert(golden / "fast_llm", tmp_path / "hf", format=case(name)["format"])
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "roundtrip"))
    assert_same_model_config(hf_config(tmp_path / "hf"), hf_config(golden / "roundtrip"), case(name)["format"],
                             FAST_LLM_DEFECTS.get(name, ()))


@pytest.mark.parametrize("name", by_source("fast_llm"))
def test_native_export_equals_golden_hf_and_comes_back(name, tmp_path):
    golden, fmt = GOLDENS / name, case(name)["format"]
    weightport.convert(golden / "fast_llm", tmp_path / "hf", format=fmt)
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(golden / "hf"))
    assert_same_model_config(hf_config(tmp_path / "hf"), hf_config(golden / "hf"), fmt, FAST_LLM_DEFECTS.get(name, ()))
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert_same_tensors(tensors(tmp_path / "native"), tensors(golden / "fast_llm"))
    model = native_meta(golden / "fast_llm")["model"]
    assert_same_native_model(native_meta(tmp_path / "native")["config"]["base_model"],
                             native_meta(golden / "fast_llm")["config"]["base_model"], model)
    weightport.convert(golden / "hf", tmp_path / "from_golden_hf", format=fmt)
    assert_same_tensors(tensors(tmp_path / "from_golden_hf"), tensors(golden / "fast_llm"))
    if (golden / "roundtrip").is_dir():  # Fast-LLM's importer read the same hf/: we write what it wrote
        assert_written_like(native_meta(tmp_path / "from_golden_hf")["config"]["base_model"],
                            native_meta(golden / "roundtrip")["config"]["base_model"])


def in_transformers(name: str) -> bool:
    import transformers

    return hasattr(transformers, case(name).get("hf_reload_check", {}).get("model_class") or "-")


@pytest.mark.parametrize("name", [c for c in CASES if in_transformers(c)])
def test_converted_checkpoints_give_the_same_logits(name, tmp_path):
    """Through native and back gives the golden HF logits; Fast-LLM's native exported gives Fast-LLM's export's."""
    transformers = pytest.importorskip("transformers")
    golden, fmt = GOLDENS / name, case(name)["format"]
    cls = getattr(transformers, case(name)["hf_reload_check"]["model_class"])
    weightport.convert(golden / "hf", tmp_path / "native", format=fmt)
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert torch.equal(logits(cls, golden / "hf"), logits(cls, tmp_path / "back"))
    if (golden / "roundtrip").is_dir() and case(name)["source"] == "hf":
        weightport.convert(golden / "fast_llm", tmp_path / "exported", format=fmt)
        assert torch.equal(logits(cls, golden / "roundtrip"), logits(cls, tmp_path / "exported"))


@pytest.mark.parametrize("name", CASES)
def test_native_export_has_every_key_of_fast_llm_export(name, tmp_path):
    """Without any record of the HF model, an export still writes every key the HF config class has, as
    save_pretrained does: each key and value of Fast-LLM's own export (made by the class) is there, in the same
    config.json layout, except Fast-LLM's defects."""
    golden = GOLDENS / name
    theirs = hf_config(golden / ("hf" if case(name)["source"] == "fast_llm" else "roundtrip"))
    spec = weightport.families.load(case(name)["format"])
    layout = layouts.normalize(theirs, spec.layouts)[1]
    weightport.convert(golden / "fast_llm", tmp_path / "hf", format=spec.name, hf_layout=layout)
    mine = leaves(hf_config(tmp_path / "hf"))
    skip = FAST_LLM_DEFECTS.get(name, ()) + FAST_LLM_STRAY_KEYS.get(name, ()) + ("dtype",)
    differ = {dotted(p): (v, mine.get(p, MISSING)) for p, v in leaves(theirs).items()
              if mine.get(p, MISSING) != v and not any(dotted(p).startswith(s) for s in skip)}
    assert differ == {}
