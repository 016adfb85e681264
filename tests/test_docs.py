"""The "Adding a family" guide's example is real: it registers, converts and round-trips."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import weightport
from helpers import assert_same_config, assert_same_tensors, hf_config, tensors
from weightport import api, families, synth
from weightport.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "smollm.py"


@pytest.fixture(scope="module")
def smollm():
    spec = importlib.util.spec_from_file_location("smollm_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    families.register(module.SPEC)
    yield module.SPEC
    families.unregister("smollm")  # later tests see the built-in families only


def test_the_guide_shows_the_example_file_verbatim(smollm):
    guide = (EXAMPLE.parent.parent / "adding-a-family.md").read_text()
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.strip() and code in EXAMPLE.read_text()


def test_the_example_family_converts_both_ways(smollm, tmp_path):
    source = synth.write_hf(tmp_path / "hf", synth.tiny_llama(model_type="smollm"), seed=5)
    weightport.convert(source, tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(source))
    assert_same_config(hf_config(tmp_path / "back"), hf_config(source))


def test_the_example_family_refuses_what_it_cannot_hold(smollm):
    with pytest.raises(ConfigError, match="attention_bias = True, but smollm requires False"):
        api.import_config(smollm, synth.tiny_llama(model_type="smollm", attention_bias=True))
    native = api.import_config(smollm, synth.tiny_llama(model_type="smollm"))[1]
    native["decoder"]["block"]["mlp"]["add_linear_biases"] = True
    with pytest.raises(ConfigError, match="SmolLM MLPs have no biases"):
        api.export_config(smollm, native, "transformers5")
