"""weightport writes native configs the way Fast-LLM's own importer writes them: the real Fast-LLM imports an HF
checkpoint, weightport imports the same one, and both native checkpoints set exactly the same config fields (Fast-LLM
compares explicitly set fields, for example in its Gemma 4 export) and hold the same tensors. And Fast-LLM exports
weightport's native checkpoint of each tiny model back to the model it came from.

The HF checkpoints are tiny real transformers models of every case in test_transformers_models.py (Gemma 4 written
in the config layout of Fast-LLM's transformers, 5.14), and weightport's HF exports of the goldens that started on
the native side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import weightport
from helpers import GOLDENS, assert_same_tensors, assert_written_like, case, native_meta, tensors
from oracle import convert_all, export_args, import_args, needs_fastllm
from test_transformers_models import CASES, build

pytestmark = needs_fastllm

# Fast-LLM's importer refuses these; weightport converts them (see MANIFEST.md's defects).
REFUSED_BY_FAST_LLM = {
    "qwen2_tied_head_dim_bf16": "Fast-LLM's qwen2 import rejects an explicit head_dim",
    "llava_hybrid_ssm_attn_only": "Fast-LLM's llava_hybrid_ssm import expects model_type llava_hybrid_ssm, which "
                                  "the HF class does not write",
    "tf4_apriel_hybrid_ssm": "Fast-LLM's apriel_hybrid_ssm import refuses ssm_cfg keys its own HF class writes",
}


def readable_by_fast_llm(folder: Path) -> None:
    """What Fast-LLM's importer needs and transformers 5.24 leaves out, filled in with transformers' own values:
    Mixtral's `head_dim: null` becomes hidden_size / heads, and a yarn `attention_factor` is written
    (0.1 ln(factor) + 1)."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("head_dim", 0) is None:
        config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type") == "yarn" and rope.get("attention_factor") is None:
        rope["attention_factor"] = 0.1 * math.log(rope["factor"]) + 1.0
    (folder / "config.json").write_text(json.dumps(config, indent=2))
EXPORT_REFUSED_BY_FAST_LLM = {
    "qwen2_tied_head_dim_bf16": "Fast-LLM's qwen2 export omits head_dim, so it requires heads * head_size == hidden",
}
MODELS = list(CASES)
NATIVE_GOLDENS = [name for name in sorted(p.name for p in GOLDENS.iterdir() if (p / "case.json").is_file())
                  if case(name)["source"] == "fast_llm" and name not in REFUSED_BY_FAST_LLM]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """Each HF checkpoint, Fast-LLM's import of it, and Fast-LLM's export of weightport's import of it."""
    root = tmp_path_factory.mktemp("fast_llm_imports")
    jobs: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
    for name in MODELS:
        build(name, root / name / "transformers")
        hf = root / name / "hf"
        if name.startswith("gemma4"):  # transformers 5.15+ writes per_layer_config, which 5.14 does not read
            weightport.convert(root / name / "transformers", root / name / "via", to="native")
            weightport.convert(root / name / "via", hf, hf_layout="transformers5")
        else:
            (root / name / "transformers").rename(hf)
        readable_by_fast_llm(hf)
        fmt = weightport.open_checkpoint(hf).spec.name
        if name not in REFUSED_BY_FAST_LLM:
            jobs[False][name] = import_args(hf, root / name / "fast_llm", fmt)
        weightport.convert(hf, root / name / "weightport")
        if name not in EXPORT_REFUSED_BY_FAST_LLM:
            jobs[False][f"{name}/export"] = export_args(root / name / "weightport", root / name / "exported", fmt)
    for name in NATIVE_GOLDENS:
        fmt = case(name)["format"]
        weightport.convert(GOLDENS / name / "fast_llm", root / name / "hf", format=fmt)
        tf4 = name.startswith("tf4_")  # Fast-LLM reads apriel_hybrid_ssm with transformers 4
        jobs[tf4][name] = import_args(root / name / "hf", root / name / "fast_llm", fmt,
                                      case(name)["fast_llm_model_type"])
    return root, {**convert_all(jobs[False], root), **convert_all(jobs[True], root, tf4=True)}


@pytest.mark.parametrize("name", [m for m in MODELS if m not in REFUSED_BY_FAST_LLM] + NATIVE_GOLDENS + [
    pytest.param(name, marks=pytest.mark.skip(reason=why)) for name, why in REFUSED_BY_FAST_LLM.items()])
def test_weightport_writes_the_native_config_fast_llm_writes(name, imported):
    root, results = imported
    assert results[name] is None, f"Fast-LLM could not import the HF checkpoint:\n{results[name]}"
    weightport.convert(root / name / "hf", root / name / "fp32", dtype="float32")  # Fast-LLM imports to fp32
    ours, theirs = native_meta(root / name / "fp32"), native_meta(root / name / "fast_llm")
    assert_written_like(ours["config"]["base_model"], theirs["config"]["base_model"])
    assert ours["model"] == theirs["model"]
    assert_same_tensors(tensors(root / name / "fp32"), tensors(root / name / "fast_llm"))


@pytest.mark.parametrize("name", [m for m in MODELS if m not in EXPORT_REFUSED_BY_FAST_LLM] + [
    pytest.param(name, marks=pytest.mark.skip(reason=why)) for name, why in EXPORT_REFUSED_BY_FAST_LLM.items()])
def test_fast_llm_exports_weightports_native_to_the_same_model(name, imported):
    """Gemma 4 dense included: Fast-LLM's exporter compares the block's norms as configs, explicit fields and all."""
    root, results = imported
    assert results[f"{name}/export"] is None, f"Fast-LLM could not export:\n{results[f'{name}/export']}"
    assert_same_tensors(tensors(root / name / "exported"), tensors(root / name / "hf"), upcast=True)


def test_fast_llm_reads_pixtral_heads_as_weightport_does(tmp_path):
    """Pixtral's heads are hidden_size / num_attention_heads wide for Fast-LLM's importer too: where the vision
    config leaves the sizes to PixtralVisionConfig's defaults (the Pixtral-12B config as transformers' test gives it,
    less the stray keys Fast-LLM refuses), and where its head_dim is another width (8-wide heads, head_dim 16)."""
    from test_hf_classes import fixture
    from test_published import published, write_wrapper

    defaults = published("pixtral-12b-class-defaults") | {"torch_dtype": "float32"}
    for sub in ("vision_config", "text_config"):  # keys PixtralVisionConfig and MistralConfig do not define
        defaults[sub] = {k: v for k, v in defaults[sub].items() if k not in ("is_composition", "tie_word_embeddings")}
    other = fixture("llava")
    other["vision_config"]["head_dim"] = 16
    jobs = {}
    for name, config in (("defaults", defaults), ("head_dim", other)):
        write_wrapper(tmp_path / name / "hf", config)
        jobs[name] = import_args(tmp_path / name / "hf", tmp_path / name / "fast_llm", "llava", "multimodal")
    results = convert_all(jobs, tmp_path)
    for name, width in (("defaults", 64), ("head_dim", 8)):
        assert results[name] is None, f"Fast-LLM could not import {name}:\n{results[name]}"
        weightport.convert(tmp_path / name / "hf", tmp_path / name / "ours")
        ours, theirs = native_meta(tmp_path / name / "ours"), native_meta(tmp_path / name / "fast_llm")
        assert_written_like(ours["config"]["base_model"], theirs["config"]["base_model"])
        assert ours["config"]["base_model"]["vision_encoder"]["encoder"]["block"]["mixer"]["head_size"] == width
        assert_same_tensors(tensors(tmp_path / name / "ours"), tensors(tmp_path / name / "fast_llm"))
