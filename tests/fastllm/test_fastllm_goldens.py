"""The real Fast-LLM judges weightport's native checkpoints: for every golden, the native checkpoint weightport writes
from the golden's HF side loads in Fast-LLM, and Fast-LLM's own HF export of it holds the golden's HF tensors and
model. And where Fast-LLM's importer reads an HF checkpoint, weightport writes the same native config it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

import weightport
from helpers import CASES, GOLDENS, assert_same_tensors, case, hf_config, tensors
from oracle import convert_all, export_args, needs_fastllm

pytestmark = needs_fastllm


def tf4(name: str) -> bool:
    """Goldens made under transformers 4 (Fast-LLM's apriel_hybrid_ssm export needs it) run there again."""
    return name.startswith("tf4_")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """Every golden's HF side converted to native by weightport, then exported to HF by Fast-LLM."""
    root = tmp_path_factory.mktemp("fast_llm_exports")
    jobs: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
    for name in CASES:
        fmt, model = case(name)["format"], case(name)["fast_llm_model_type"]
        weightport.convert(GOLDENS / name / "hf", root / name / "native", format=fmt)
        jobs[tf4(name)][name] = export_args(root / name / "native", root / name / "hf", fmt, model)
    return root, {**convert_all(jobs[False], root), **convert_all(jobs[True], root, tf4=True)}


@pytest.mark.parametrize("name", CASES)
def test_fast_llm_loads_weightports_native_and_exports_the_golden_model(name, exported):
    root, results = exported
    assert results[name] is None, f"Fast-LLM could not load or export weightport's native checkpoint:\n{results[name]}"
    assert_same_tensors(tensors(root / name / "hf"), tensors(GOLDENS / name / "hf"), upcast=True)  # it writes fp32
    # Fast-LLM's export of its own native checkpoint of the same model: the same config.json, key for key
    own = GOLDENS / name / ("roundtrip" if case(name)["source"] == "hf" else "hf")
    assert hf_config(root / name / "hf") == hf_config(own)
