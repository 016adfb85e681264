"""Exports of the formats whose remote modeling code builds each mixer from a nested config dict write every key that
code reads, for every mixer type: `modeling_apriel2.py` (Fast-LLM 0.4.0, fast_llm_external_models/apriel2/) reads
`conv_bias` and `dt_proj_bias` of a Mamba mixer with `[...]`, so an export without them cannot be loaded
(`KeyError: 'conv_bias'`), and reads `add_linear_biases` with a default of False, so an attention mixer that
leaves it out loses its biases.

The native checkpoints are those of tests/remote_code_cases.py: every mixer type of each format, saved as Fast-LLM
saves them (no record of the HF model, so every key comes from the rules; Mamba biases left unset). Their exports are
compared key for key with Fast-LLM's own exports of the same checkpoints (recorded from the real Fast-LLM; see
tests/fastllm/record_fast_llm_exports.py, and tests/fastllm/test_fastllm_remote_code_keys.py, which also builds
each mixer module from these exports with Fast-LLM's modeling files).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import weightport
from helpers import (
    EXPORT_CHOICES, FAST_LLM_DEFECTS, FAST_LLM_NO_DTYPE, FAST_LLM_STRAY_KEYS, assert_same_config, assert_same_tensors,
    hf_config, saved_by_fast_llm, tensors,
)
from remote_code_cases import CASES, SEED, fixture, native, recorded
from weightport import synth
from weightport.core.paths import MISSING

MAMBA_PATHS = ("decoder.blocks.mamba.mixer", "decoder.blocks.stochastic.mixer.mixers.mamba")
# Where weightport's export differs from Fast-LLM's, {path: (weightport's, Fast-LLM's)}, and why.
APRIEL2 = {
    # Fast-LLM writes an unset Mamba bias switch as null (`_apriel2_mamba_aux_export`), which modeling_apriel2.py
    # builds as no bias; weightport writes the bias the layer has (an unset switch follows add_linear_biases), so that
    # the HF model has the layer's bias tensor (Fast-LLM refuses to export those: "Un-handled entries")
    **{f"{mixer}.{key}": (False, None) for mixer in MAMBA_PATHS for key in ("conv_bias", "dt_proj_bias")},
    **{f"decoder.blocks.mamba_biased.mixer.{key}": (True, None) for key in ("conv_bias", "dt_proj_bias")},
    # Fast-LLM leaves out an attention's add_linear_biases when true, which modeling_apriel2.py reads as false
    "decoder.blocks.attn_biased.mixer.add_linear_biases": (True, MISSING),
}
# AprielSSMHybridConfig fills ssm_cfg from its defaults; Fast-LLM's llava_hybrid_ssm export names the text model
# `llama` (a Fast-LLM defect, see helpers.FAST_LLM_DEFECTS), so no class fills its ssm_cfg
SSM_FILLED = {"activation": "identity", "chunk_size": 128, "d_conv": 4, "dt_init": "random", "dt_init_floor": 1e-4,
              "dt_max": 0.1, "dt_min": 0.001, "dt_scale": 1.0, "expand": 1, "n_qk_heads": 32, "n_v_heads": 32}
EXPECTED = {
    "apriel2_text": APRIEL2,
    "apriel2": APRIEL2,
    # Fast-LLM's export under transformers 4 loses the GDN sizes (AprielHybridSSMConfig replaces linear_attn_config
    # by its defaults); the transformers 4 layout choices are those of the tf4_apriel_hybrid_ssm golden
    "apriel_hybrid_ssm": {**EXPORT_CHOICES["tf4_apriel_hybrid_ssm"],
                          **{f"linear_attn_config.{k}": (v, MISSING)
                             for k, v in fixture("apriel_hybrid_ssm")["linear_attn_config"].items()}},
    "llava_hybrid_ssm": {**EXPORT_CHOICES["llava_hybrid_ssm_attn_only"],
                         **{f"text_config.ssm_cfg.{k}": (v, MISSING) for k, v in SSM_FILLED.items()}},
}
# Fast-LLM's llava_hybrid_ssm defects (a Llama text config with Llama's keys, a stray `type`; see helpers.py), but
# for ssm_cfg, compared above, and hybrid_block_layout, which names no block twice here, so that Fast-LLM's pattern
# is the layout
ALLOWED = {"llava_hybrid_ssm": FAST_LLM_STRAY_KEYS["llava_hybrid_ssm_attn_only"] + tuple(
    k for k in FAST_LLM_DEFECTS["llava_hybrid_ssm_attn_only"]
    if k not in ("text_config.ssm_cfg", "text_config.hybrid_block_layout"))}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    """Every case exported by weightport: from the checkpoint as Fast-LLM saves it (`<case>/export`, rules only) and
    from the one weightport wrote with its record of the HF model (`<case>/recorded_export`)."""
    root = tmp_path_factory.mktemp("remote_code_keys")
    for name, (format, _, _) in CASES.items():
        weightport.convert(native(name, root / name), root / name / "export", format=format)
        weightport.convert(root / name / "native", root / name / "recorded_export")
    return root


@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_write_every_mixer_key_that_fast_llms_export_writes(name, exports):
    """Key for key, every nested mixer dict included, weightport's export is Fast-LLM's, but for the differences
    pinned above, each with its reason."""
    assert_same_config(hf_config(exports / name / "export"), recorded(name),
                       FAST_LLM_NO_DTYPE + ALLOWED.get(name, ()), EXPECTED[name])


def mamba_layers(config: dict) -> dict[str, dict]:
    """Every Mamba mixer of an exported config.json: {HF tensor prefix of the mixer: the dict holding its
    `conv_bias` and `dt_proj_bias`}."""
    if "decoder" in config:  # apriel2: per block, a mixer dict; a stochastic mixer's sub-mixers too
        out = {}
        for i, block in enumerate(config["decoder"]["pattern"]):
            mixer = config["decoder"]["blocks"][block]["mixer"]
            subs = mixer["mixers"].items() if mixer["type"] == "stochastic" else [("", mixer)]
            out |= {f"model.decoder.blocks.{i}.mixer." + (f"mixers.{k}." if k else ""): v for k, v in subs
                    if v["type"] == "mamba"}
        return out
    text = config.get("text_config", config)  # Apriel hybrid SSM: one ssm_cfg for every m2 layer
    root = "language_model.model" if "text_config" in config else "model"
    return {f"{root}.layers.{i}.mixer.": text["ssm_cfg"] for i, kind in enumerate(text["hybrid_block_layout"])
            if kind == "m2"}


@pytest.mark.parametrize("export", ["export", "recorded_export"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_mamba_mixer_says_which_biases_its_tensors_have(name, export, exports):
    """Each Mamba mixer dict holds `conv_bias` and `dt_proj_bias` (the modeling files read them to build the layer),
    true exactly where the export holds that layer's `conv1d.bias` / `dt_proj.bias`, or (exported as it was
    imported) null where there is none, as Fast-LLM writes an unset switch."""
    config = hf_config(exports / name / export)
    names = set(tensors(exports / name / export))
    layers = mamba_layers(config)
    assert len(layers) == {"apriel2_text": 3, "apriel2": 3, "apriel_hybrid_ssm": 2, "llava_hybrid_ssm": 1}[name]
    for prefix, mixer in layers.items():
        for key, tensor in (("conv_bias", "conv1d.bias"), ("dt_proj_bias", "dt_proj.bias")):
            has = prefix + tensor in names
            assert prefix + "conv1d.weight" in names and key in mixer, f"{prefix}: no {key}"
            assert mixer[key] in ((has,) if export == "export" else (True,) if has else (False, None)), \
                f"{prefix}: {key} = {mixer[key]!r}, and the export {'holds' if has else 'lacks'} {prefix + tensor}"


def apriel2_text(mamba: dict, attention: dict) -> dict:
    """A tiny apriel2_text config.json: a Mamba block (the fixture's, updated with `mamba`; None removes a key) and
    an attention block (likewise)."""
    config = fixture("apriel2_text")
    blocks = config["decoder"]["blocks"]
    for block, changes in (("mamba", mamba), ("attn", attention)):
        mixer = blocks[block]["mixer"]
        mixer.update(changes)
        for key in [k for k, v in changes.items() if v is MISSING]:
            del mixer[key]
    blocks["attn"]["mixer"]["rotary"] = {"type": "mistral_1d", "theta": 10000.0}
    config["decoder"] = {"type": "pattern", "num_blocks": 2, "pattern": ["attn", "mamba"],
                         "blocks": {k: blocks[k] for k in ("attn", "mamba")}}
    return config


@pytest.mark.parametrize("mamba, attention", [
    pytest.param({"conv_bias": MISSING, "dt_proj_bias": MISSING}, {"add_linear_biases": MISSING}, id="absent"),
    pytest.param({"conv_bias": None, "dt_proj_bias": None}, {"add_linear_biases": True}, id="null"),
    pytest.param({"conv_bias": False, "dt_proj_bias": True}, {"add_linear_biases": False}, id="set"),
    pytest.param({"add_linear_biases": True, "conv_bias": True, "dt_proj_bias": False}, {}, id="biased"),
])
def test_configs_with_or_without_the_keys_come_back_whole(mamba, attention, tmp_path):
    """An HF config.json without the keys (Fast-LLM's importer accepts it; an absent add_linear_biases is true, as
    Fast-LLM exports it), with them null (as Fast-LLM exports unset biases) or set converts to native and back to
    itself, tensors and config.json; as Fast-LLM saves it (no record), it exports the keys, naming the biases its
    tensors have."""
    config = apriel2_text(mamba, attention)
    hf = synth.write_hf(tmp_path / "hf", copy.deepcopy(config), format="apriel2_text", seed=SEED)
    weightport.convert(hf, tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_config(hf_config(tmp_path / "back"), config)
    assert_same_tensors(tensors(tmp_path / "back"), tensors(hf))

    weightport.convert(saved_by_fast_llm(tmp_path / "native", tmp_path / "saved"), tmp_path / "export",
                       format="apriel2_text")
    exported = hf_config(tmp_path / "export")
    names = set(tensors(tmp_path / "export"))
    mixer = exported["decoder"]["blocks"]["mamba"]["mixer"]
    assert mixer["conv_bias"] == ("model.decoder.blocks.1.mixer.conv1d.bias" in names)
    assert mixer["dt_proj_bias"] == ("model.decoder.blocks.1.mixer.dt_proj.bias" in names)
    assert exported["decoder"]["blocks"]["attn"]["mixer"]["add_linear_biases"] == (
        "model.decoder.blocks.0.mixer.k_proj.bias" in names)
