"""`--format` names the format to read a config.json as; a config.json of another model type that another format
reads is refused with one line naming both and what to do, not a list of the keys the named format does not know."""

from __future__ import annotations

import json

import weightport
from helpers import cli
from weightport import synth


def test_format_of_another_model_type_is_refused_naming_the_format_the_config_is(tmp_path):
    synth.write_hf(tmp_path / "llama", synth.tiny_llama())
    result = cli("convert", tmp_path / "llama", tmp_path / "out", "--format", "mistral3", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == ("weightport: error: config.json has model_type = 'llama', but format mistral3 reads "
                             "model_type 'mistral3'; it is a llama checkpoint: drop --format (or pass --format "
                             "llama)\n")
    wrapper = {"model_type": "gemma4", "text_config": {"model_type": "gemma4_text"}}
    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "config.json").write_text(json.dumps(wrapper))
    result = cli("check", tmp_path / "gemma", "--format", "gemma4", check=False)
    assert "format gemma4 reads model_type 'gemma4_text'; it is a gemma4_vlm checkpoint" in result.stderr
    assert not (tmp_path / "out").exists()
    weightport.convert(tmp_path / "llama", tmp_path / "out", format="llama")  # its own format is fine
