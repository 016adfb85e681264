"""The real systems behind tests/test_remote_code_keys.py, for the models of tests/remote_code_cases.py (every mixer
type of apriel2_text, apriel2, apriel_hybrid_ssm and llava_hybrid_ssm, saved as Fast-LLM saves them):

- the recorded Fast-LLM exports that test compares weightport's exports with (tests/fixtures/fast_llm_exports/) are
  what the real Fast-LLM exporter writes now;
- each module of weightport's Apriel2 exports builds from the exported config.json with Fast-LLM's own
  `modeling_apriel2.py` on CPU, until it needs a CUDA kernel (`CausalConv1d`, the first thing a Mamba, GDN or KDA
  mixer builds after reading its config: a missing key fails before it, as `KeyError: 'conv_bias'` did), and the
  modules that build (attention blocks and sub-mixers, the vision encoder) hold exactly the exported tensors.

The Apriel hybrid SSM formats' modeling files cannot be imported on CPU (see NOT_ON_CPU in
test_fastllm_remote_code.py); their keys are compared with Fast-LLM's exports only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import weightport
from helpers import hf_config, tensors
from oracle import needs_fastllm, plain_python
from record_fast_llm_exports import fast_llm_exports
from remote_code_cases import CASES, native, recorded
from test_fastllm_remote_code import FOLDERS, external_models  # noqa: F401  (a fixture)

pytestmark = needs_fastllm
MODULES = Path(__file__).parent / "remote_code_modules.py"
KERNEL = ["ImportError", ("CausalConv1d requires CUDA kernels from causal_conv1d and mamba_ssm. "
                          "Install with: pip install causal-conv1d mamba-ssm")]
APRIEL2 = ("apriel2_text", "apriel2")


def test_the_recorded_exports_are_what_fast_llm_writes(tmp_path):
    assert fast_llm_exports(tmp_path) == {name: recorded(name) for name in CASES}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, external_models) -> Path:  # noqa: F811
    """The Apriel2 cases exported by weightport with Fast-LLM's modeling files: from the checkpoint as Fast-LLM saves
    it (`<case>/export`) and from the one weightport wrote, with its record of the HF model
    (`<case>/recorded_export`)."""
    root = tmp_path_factory.mktemp("remote_code_modules")
    for name in APRIEL2:
        code = external_models / FOLDERS[name]
        weightport.convert(native(name, root / name), root / name / "export", format=name, modeling_code=code)
        weightport.convert(root / name / "native", root / name / "recorded_export", modeling_code=code)
    return root


def under(shapes: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {name[len(prefix):]: shape for name, shape in shapes.items() if name.startswith(prefix)}


@pytest.mark.parametrize("export", ["export", "recorded_export"])
@pytest.mark.parametrize("name", APRIEL2)
def test_every_mixer_builds_from_the_export_with_fast_llms_modeling_code(name, export, exports, tmp_path):
    folder = exports / name / export
    result = plain_python(MODULES, folder, modules_cache=tmp_path / "modules")
    built = json.loads(result.stdout.strip().splitlines()[-1])
    shapes = {key: list(tensor.shape) for key, tensor in tensors(folder).items()}
    decoder = hf_config(folder)["decoder"]
    wanted = {}
    for i, block in enumerate(decoder["pattern"]):
        mixer = decoder["blocks"][block]["mixer"]
        subs = mixer.get("mixers", {}) if mixer["type"] == "stochastic" else {}
        kernels = [m for m in [mixer, *subs.values()] if m["type"] in ("mamba", "gdn", "kda")]
        wanted[f"blocks.{i}"] = ({"error": KERNEL} if kernels else
                                 {"parameters": under(shapes, f"model.decoder.blocks.{i}.")})
        for sub, config in subs.items():
            prefix = f"blocks.{i}.mixer.mixers.{sub}"
            wanted[prefix] = ({"parameters": under(shapes, f"model.decoder.{prefix}.")}
                              if config["type"] == "attention" else {"error": KERNEL})
    main = [decoder["blocks"][b]["mixer"] for b in decoder["pattern"]]
    wanted["cache"] = {"parameters": {"mixer_types": [
        m["mixers"][m["main_mixer_name"]]["type"] if m["type"] == "stochastic" else m["type"] for m in main]}}
    if name == "apriel2":
        wanted["vision_encoder"] = {"parameters": under(shapes, "model.vision_encoder.")}
    assert built == wanted
