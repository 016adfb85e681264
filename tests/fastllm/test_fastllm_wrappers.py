"""The real Fast-LLM loads the native checkpoint of each wrapper format (carried parts under hf_files/ beside it) as
its text model, and its export of it holds the same model as weightport's text-only export."""

from __future__ import annotations

import pytest

import weightport
from oracle import convert_all, export_args, needs_fastllm

pytestmark = needs_fastllm
transformers = pytest.importorskip("transformers")

from test_wrappers import build  # noqa: E402 - needs transformers

TEXT_FORMATS = {"gemma4_dense": "gemma4", "gemma4_moe_untied": "gemma4", "mistral3": "mistral",
                "mistral3_tied": "mistral", "llava_clip": "llama", "llava_clip_mistral_tied": "mistral"}


def test_fastllm_loads_each_wrappers_native_checkpoint_as_its_text_model(tmp_path):
    jobs = {}
    for name, text in TEXT_FORMATS.items():
        build(name, tmp_path / name / "hf")
        weightport.convert(tmp_path / name / "hf", tmp_path / name / "native")
        assert (tmp_path / name / "native" / "hf_files" / "carried.safetensors").is_file()
        weightport.convert(tmp_path / name / "native", tmp_path / name / "text", text_only=True)
        jobs[name] = export_args(tmp_path / name / "native", tmp_path / name / "fast_llm", text)
    failures = {name: error for name, error in convert_all(jobs, tmp_path).items() if error}
    assert failures == {}
    for name in TEXT_FORMATS:
        assert weightport.verify(tmp_path / name / "text", tmp_path / name / "fast_llm") == [], name
