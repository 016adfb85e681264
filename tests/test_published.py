"""The config.json files of published models (`tests/fixtures/published`, scaled down: only sizes changed, every
other key and value as published; SOURCES.md says where each comes from) convert as they are: a synthetic checkpoint
goes to native and back bit for bit with the same config.json, transformers loads both with the class the config
names and gives the same logits, and weightport reads each config as transformers reads it.

The checkpoint of a wrapper format (`gemma4_vlm`, `mistral3`, `llava_clip`: vision towers and projectors carried),
and of the configs in `REAL_MODELS`, is the transformers model the config names, with seeded weights, beside the
config.json as published; its logits are those of a prompt with an image."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import weightport
from helpers import (
    assert_same_config, assert_same_tensors, cli, hf_config, model_inputs, native_meta, saved_by_fast_llm, tensors,
)
from weightport import api, families, synth
from weightport.errors import ConfigError
from weightport.native.schema import canonical

transformers = pytest.importorskip("transformers")

PUBLISHED = Path(__file__).parent / "fixtures" / "published"
NAMES = sorted(p.stem for p in PUBLISHED.glob("*.json"))
# converted with the real command in subprocesses; the others through the API
BY_COMMAND = ("smollm2-360m-instruct", "mixtral-8x7b-v0.1", "pixtral-12b", "qwen2.5-7b-instruct-yarn",
              "gemma-4-26b-a4b-it")
WEIGHT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
# Published checkpoints with an lm_head of their own whose config.json transformers 5's class reads as tied: Mistral
# Small 3.1's, written by transformers 4 (which tied by the text model's tie_word_embeddings, false), sets no top-level
# key, whose Mistral3Config default is true; from_pretrained keeps the two untied ("both are present in the
# checkpoints with different values"), and weightport, where the versions read a config otherwise, reads the tie from
# the files (untied: they hold an lm_head).
OWN_LM_HEAD = ("mistral-small-3.1-24b-instruct-2503",)
LM_HEAD = ("language_model.lm_head.weight",)  # the tensor an OWN_LM_HEAD checkpoint holds
# Configs whose checkpoint is the transformers model itself (as for wrappers), not `synth`'s: the Pixtral-12B config
# that leaves the vision sizes to PixtralVisionConfig's defaults, where weightport once read head_dim for the heads.
REAL_MODELS = ("pixtral-12b-class-defaults",)


def published(name: str) -> dict:
    return json.loads((PUBLISHED / f"{name}.json").read_text())


def carries(config: dict) -> bool:
    """Whether the config's format is a wrapper that carries parts (towers, projectors) `synth` has no rules for."""
    return families.load(families.detect(config)).text is not None


def write_wrapper(folder: Path, config: dict, own_lm_head: bool = False) -> Path:
    """The model of the class `config` names (with `own_lm_head`, untied), seeded N(0, 0.05) weights (norms too) in
    the config's dtype, saved by transformers; the config.json beside them is `config` as it is."""
    cls = getattr(transformers, config["architectures"][0])
    made = cls.config_class.from_dict(copy.deepcopy(config))
    if own_lm_head:
        made.tie_word_embeddings = False
    torch.manual_seed(0)
    model = cls(made)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05)
    model.to(getattr(torch, config.get("torch_dtype", config.get("dtype", "float32")))).eval().save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def image_prompt(config: dict) -> dict:
    """A prompt with one image in front of six text tokens, as the wrapper's vision tower reads it."""
    generator = torch.Generator().manual_seed(1)
    text = torch.randint(3, 200, (1, 6), generator=generator)
    vision = config["vision_config"]
    if config["model_type"] == "gemma4":  # k x k patches, pooled (kernel k) to one soft token
        kernel, patch = vision["pooling_kernel_size"], vision["patch_size"]
        return {"input_ids": torch.cat([torch.tensor([[config["image_token_id"]]]), text], 1),
                "pixel_values": torch.rand(1, kernel * kernel, 3 * patch * patch, generator=generator),
                "image_position_ids": torch.tensor([[[x, y] for y in range(kernel) for x in range(kernel)]])}
    if config["model_type"] == "mistral3":  # 4x4 patches, merged 2x2 into four tokens
        side = vision["patch_size"] * config["spatial_merge_size"] * 2
        return {"input_ids": torch.cat([torch.full((1, 4), config["image_token_index"]), text], 1),
                "pixel_values": torch.randn(1, 3, side, side, generator=generator),
                "image_sizes": torch.tensor([[side, side]])}
    # CLIP (llava_clip): an image of the tower's size, one token a patch (the class token dropped)
    side, tokens = vision["image_size"], (vision["image_size"] // vision["patch_size"]) ** 2
    return {"input_ids": torch.cat([torch.full((1, tokens), config["image_token_index"]), text], 1),
            "pixel_values": torch.randn(1, 3, side, side, generator=generator)}


def loaded_logits(folder: Path) -> torch.Tensor:
    """The float32 logits of the checkpoint in `folder`, loaded with the class its config.json names; every tensor
    of the checkpoint is one the class expects, and every parameter is loaded."""
    config = hf_config(folder)
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, f"{cls.__name__} does not load {folder} as it is"
    with torch.no_grad():
        return model.eval()(**(image_prompt(config) if carries(config) else model_inputs(config))).logits


def test_the_corpus_is_whole():
    assert len(NAMES) >= 30 and set(BY_COMMAND) <= set(NAMES)
    sources = (PUBLISHED / "SOURCES.md").read_text()
    assert [name for name in NAMES if f"`{name}`" not in sources] == [], "a fixture without its source"


@pytest.mark.parametrize("name", NAMES)
def test_published_config_round_trips_with_equal_logits(name, tmp_path):
    config = published(name)
    dtype = WEIGHT_DTYPES[config.get("torch_dtype", config.get("dtype", "float32"))]
    if carries(config) or name in REAL_MODELS:
        source = write_wrapper(tmp_path / "hf", config, own_lm_head=name in OWN_LM_HEAD)
    else:
        source = synth.write_hf(tmp_path / "hf", config, dtype=dtype)
    native, back = tmp_path / "native", tmp_path / "back"
    if name in BY_COMMAND:
        cli("convert", source, native)
        cli("convert", native, back)
    else:
        weightport.convert(source, native)
        weightport.convert(native, back)
    assert_same_tensors(tensors(back), tensors(source))
    assert_same_config(hf_config(back), config)
    assert torch.equal(loaded_logits(back), loaded_logits(source))


@pytest.mark.parametrize("name", NAMES)
def test_published_config_reads_as_transformers_reads_it(name):
    """What transformers' config class makes of the file (every default filled, old spellings updated) is the same
    model to weightport as the file itself."""
    config = published(name)
    spec = families.load(families.detect(config))
    made = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(copy.deepcopy(config)).to_dict()
    if name in OWN_LM_HEAD:  # the class says tied; from_pretrained loads the published checkpoint untied
        made["tie_word_embeddings"] = False
    files = LM_HEAD if name in OWN_LM_HEAD else None
    assert canonical(api.import_config(spec, config, files)[1]) == canonical(api.import_config(spec, made)[1])


def test_a_mistral3_config_json_without_a_tie_is_tied_as_its_files_are(tmp_path):
    """Issue 23 input 16: Mistral Small 3.1's config.json (transformers 4 layout, no tie_word_embeddings anywhere)
    beside the weights transformers 5 saves from it, which reads it as tied and writes no lm_head. transformers 4 would
    read it as untied; where the two read a config otherwise, the files decide. The checkpoint converts by the command
    (plan, check, convert; inspect counts its carried parts), comes back bit for bit with its config.json as it was,
    gives transformers' logits, and the export converts to the same native model again."""
    config = published("mistral-small-3.1-24b-instruct-2503")
    source = write_wrapper(tmp_path / "hf", config)
    assert "tie_word_embeddings" not in json.dumps(config) and not any("lm_head" in n for n in tensors(source))
    planned = json.loads(cli("plan", source, "--json").stdout)
    assert not any("lm_head" in ref["name"] for step in planned["steps"] for ref in step["src"])
    cli("check", source)
    assert all(count for count, _ in weightport.inspect(source)["carried_tensors"].values())
    native, back, again = tmp_path / "native", tmp_path / "back", tmp_path / "again"
    cli("convert", source, native)
    assert native_meta(native)["config"]["base_model"]["tied_embedding_weight"] is True
    assert native_meta(native)["metadata"]["weightport"]["hf_config"] == config
    cli("convert", native, back)
    assert_same_tensors(tensors(back), tensors(source))
    assert hf_config(back) == config
    assert torch.equal(loaded_logits(back), loaded_logits(source))
    weightport.convert(back, again)
    assert_same_tensors(tensors(again), tensors(native))
    assert native_meta(again)["config"] == native_meta(native)["config"]
    trained = saved_by_fast_llm(native, tmp_path / "trained")  # no record: the origin's files decide
    cli("convert", trained, tmp_path / "from_origin", "--origin", source)
    assert_same_tensors(tensors(tmp_path / "from_origin"), tensors(source))
    assert hf_config(tmp_path / "from_origin") == config
    with pytest.raises(ConfigError, match="no tensor names are given here: set tie_word_embeddings in config.json"):
        list(weightport.import_hf(config, tensors(source).items()))  # in memory, a stream decides nothing up front

