"""The config.json files of published models (`tests/fixtures/published`, scaled down: only sizes changed, every
other key and value as published; SOURCES.md says where each comes from) convert as they are: a synthetic checkpoint
goes to native and back bit for bit with the same config.json, transformers loads both with the class the config
names and gives the same logits, and weightport reads each config as transformers reads it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import weightport
from helpers import assert_same_tensors, cli, hf_config, model_inputs, tensors
from weightport import api, families, synth
from weightport.native.schema import canonical

transformers = pytest.importorskip("transformers")

PUBLISHED = Path(__file__).parent / "fixtures" / "published"
NAMES = sorted(p.stem for p in PUBLISHED.glob("*.json"))
# converted with the real command in subprocesses; the others through the API
BY_COMMAND = ("smollm2-360m-instruct", "mixtral-8x7b-v0.1", "pixtral-12b", "qwen2.5-7b-instruct-yarn")
WEIGHT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def published(name: str) -> dict:
    return json.loads((PUBLISHED / f"{name}.json").read_text())


def loaded_logits(folder: Path) -> torch.Tensor:
    """The float32 logits of the checkpoint in `folder`, loaded with the class its config.json names; every tensor
    of the checkpoint is one the class expects, and every parameter is loaded."""
    config = hf_config(folder)
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, f"{cls.__name__} does not load {folder} as it is"
    with torch.no_grad():
        return model.eval()(**model_inputs(config)).logits


def test_the_corpus_is_whole():
    assert len(NAMES) >= 30 and set(BY_COMMAND) <= set(NAMES)
    sources = (PUBLISHED / "SOURCES.md").read_text()
    assert [name for name in NAMES if f"`{name}`" not in sources] == [], "a fixture without its source"


@pytest.mark.parametrize("name", NAMES)
def test_published_config_round_trips_with_equal_logits(name, tmp_path):
    config = published(name)
    dtype = WEIGHT_DTYPES[config.get("torch_dtype", config.get("dtype", "float32"))]
    source = synth.write_hf(tmp_path / "hf", config, dtype=dtype)
    native, back = tmp_path / "native", tmp_path / "back"
    if name in BY_COMMAND:
        cli("convert", source, native)
        cli("convert", native, back)
    else:
        weightport.convert(source, native)
        weightport.convert(native, back)
    assert_same_tensors(tensors(back), tensors(source))
    assert hf_config(back) == config
    assert torch.equal(loaded_logits(back), loaded_logits(source))


@pytest.mark.parametrize("name", NAMES)
def test_published_config_reads_as_transformers_reads_it(name):
    """What transformers' config class makes of the file (every default filled, old spellings updated) is the same
    model to weightport as the file itself."""
    config = published(name)
    spec = families.load(families.detect(config))
    made = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(copy.deepcopy(config)).to_dict()
    assert canonical(api.import_config(spec, config)[1]) == canonical(api.import_config(spec, made)[1])

