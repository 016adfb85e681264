"""Tiny models of the four formats whose remote modeling code builds each mixer from a nested config dict
(apriel2_text, apriel2, apriel_hybrid_ssm, llava_hybrid_ssm), each with every mixer type of its format, as native
checkpoints in the form Fast-LLM trains and saves them: no record of the HF model (every config.json key an export
writes comes from the rules), and Mamba convolution and dt biases left unset (they follow the mixer's
`add_linear_biases`), as a Fast-LLM config that does not name them has them.

tests/test_remote_code_keys.py compares weightport's exports of them with Fast-LLM's exports of the same native
checkpoints (recorded in fixtures/fast_llm_exports/ by tests/fastllm/record_fast_llm_exports.py);
tests/fastllm/test_fastllm_remote_code_keys.py builds their modules with Fast-LLM's modeling files and checks that the
recording is what the real Fast-LLM writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

import weightport
from helpers import native_meta, saved_by_fast_llm
from weightport import synth

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = FIXTURES / "fast_llm_exports"
# case -> (format, Fast-LLM model type, whether Fast-LLM's export of it needs transformers 4)
CASES = {
    "apriel2_text": ("apriel2_text", "gpt", False),
    "apriel2": ("apriel2", "multimodal", False),
    "apriel_hybrid_ssm": ("apriel_hybrid_ssm", "gpt", True),
    "llava_hybrid_ssm": ("llava_hybrid_ssm", "multimodal", False),
}
SEED = 3


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / "hf_configs" / f"{name}.json").read_text())


def apriel2_decoder() -> dict:
    """A pattern decoder with one block of each Apriel2 mixer: attention (per-layer bias overrides; and with every
    bias on), sliding-window attention, Mamba (biases off; and on), GDN, KDA, and a stochastic mixer holding one of
    each leaf type. Rotary is `mistral_1d`, the 1-D type Fast-LLM's modeling file builds (it has no yarn or llama3);
    the stochastic mixer samples uniformly (`weighted` needs `sampling_weights`, which a native config does not
    keep). Mamba biases are null, as Fast-LLM exports an unset bias."""
    blocks = copy.deepcopy(fixture("apriel2_text")["decoder"]["blocks"])
    blocks["attn"]["mixer"]["rotary"] = {"type": "mistral_1d", "theta": 10000.0}
    blocks["attn_biased"] = copy.deepcopy(blocks["swa"])
    blocks["attn_biased"]["mixer"].update(add_linear_biases=True)
    del blocks["attn_biased"]["mixer"]["window_size"]
    blocks["mamba"]["mixer"].update(conv_bias=None, dt_proj_bias=None)
    blocks["mamba_biased"] = copy.deepcopy(blocks["mamba"])
    blocks["mamba_biased"]["mixer"].update(add_linear_biases=True, conv_bias=True, dt_proj_bias=True)
    stochastic = blocks["stochastic"]["mixer"]
    stochastic.pop("sampling_strategy")
    stochastic["mixers"]["mamba"] = copy.deepcopy(blocks["mamba"]["mixer"])
    return {"type": "pattern", "num_blocks": len(blocks), "pattern": list(blocks), "blocks": blocks}


def hf_config(name: str) -> dict:
    """The HF config.json case `name` is imported from."""
    if name in ("apriel2_text", "apriel2"):
        return {**fixture(name), "decoder": apriel2_decoder()}
    if name == "apriel_hybrid_ssm":  # t, m2, gdn, m2 with every Mamba bias off
        return fixture(name)
    config = fixture(name)
    text = config["text_config"]
    text.update(hybrid_block_layout=["t", "m2", "gdn"], num_hidden_layers=3,
                linear_attn_config=fixture("apriel_hybrid_ssm")["linear_attn_config"])
    text["ssm_cfg"].update(conv_bias=False, dt_proj_bias=False)
    return config


def unset_mamba_biases(folder: Path) -> None:
    """Leave unset, in the native checkpoint `folder`, every Mamba convolution and dt bias switch that equals its
    mixer's `add_linear_biases` (the same model: an unset switch follows it)."""
    meta = native_meta(folder)

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mamba":
                for layer in ("convolution_layer", "dt_layer"):
                    if node[layer]["bias"]["enabled"] == node["add_linear_biases"]:
                        node[layer]["bias"]["enabled"] = None
            for value in node.values():
                visit(value)

    visit(meta["config"])
    (folder / "metadata.yaml").write_text(yaml.safe_dump(meta))


def native(name: str, folder: Path) -> Path:
    """Case `name` as a native checkpoint weightport made (imported from seeded random HF weights in `folder/hf`,
    with its record in `folder/native`), saved as Fast-LLM saves it in `folder/saved`, which is returned."""
    hf = synth.write_hf(folder / "hf", hf_config(name), format=CASES[name][0], seed=SEED)
    weightport.convert(hf, folder / "native")
    saved = saved_by_fast_llm(folder / "native", folder / "saved")
    unset_mamba_biases(saved)
    return saved


def recorded(name: str) -> dict:
    """Fast-LLM's export of case `name` (its config.json), as recorded."""
    return json.loads((RECORDED / f"{name}.json").read_text())
