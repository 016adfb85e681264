"""HF config classes as data (`weightport.core.hf_classes`): each family's table is the class transformers uses, and
configs are read as that class reads them (absent keys take its defaults; keys it does not define change nothing)."""

from __future__ import annotations

import copy
import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import transformers

import weightport
from helpers import GOLDENS, REPO_SHARED, assert_same_config, cli, hf_config, native_meta
from weightport import api, families, synth
from weightport.core import layouts
from weightport.core.hf_classes import Sub
from weightport.errors import ConfigError
from weightport.native.schema import canonical

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
PINNED = "transformers5.15"  # the config.json layout the pinned transformers (5.24) writes
BASE = set(transformers.PreTrainedConfig().to_dict()) | {"model_type"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def class_defaults(cls) -> dict:
    """What a default instance of an HF config class writes, less the base class's keys."""
    return {k: v for k, v in cls().to_dict().items() if k not in BASE}


def table_defaults(hf_class, spec=None, layout: str = PINNED) -> dict:
    """A table's defaults for an empty config, in `layout`, with the pinned transformers' spellings."""
    filled = hf_class.fill({})
    if spec is not None:
        filled = layouts.write_layout(filled, layout, spec.layouts, spec.canonical)
    return {**filled, **copy.deepcopy(dict(hf_class.pinned))}


def assert_table_is_class(hf_class, cls, spec=None, subs: tuple[str, ...] = ()) -> None:
    theirs = {k: v for k, v in class_defaults(cls).items() if k not in subs}
    ours = {k: v for k, v in table_defaults(hf_class, spec).items() if k not in subs}
    assert sorted(ours) == sorted(theirs), f"{hf_class.name}: keys differ from {cls.__name__}"
    assert ours == theirs, f"{hf_class.name}: defaults differ from {cls.__name__}"


BUILT_IN = [("llama", "LlamaConfig"), ("mistral", "MistralConfig"), ("qwen2", "Qwen2Config"),
            ("mixtral", "MixtralConfig"), ("gemma4", "Gemma4TextConfig")]


@pytest.mark.parametrize("family, cls", BUILT_IN)
def test_table_is_the_pinned_transformers_class(family, cls):
    spec = families.load(family)
    assert spec.hf_class.name == cls
    assert_table_is_class(spec.hf_class, getattr(transformers, cls), spec)


def test_llava_tables_are_the_pinned_transformers_classes():
    llava = families.load("llava").hf_class
    assert_table_is_class(llava, transformers.LlavaConfig, subs=("vision_config", "text_config"))
    assert llava.keys["text_config"].classes == {"llama": families.load("llama").hf_class,
                                                 "mistral": families.load("mistral").hf_class}
    assert_table_is_class(llava.keys["vision_config"].classes["pixtral"], transformers.PixtralVisionConfig)


def test_a_changed_default_is_caught():
    """The comparison above can fail: a table with one default changed does not pass it."""
    llama = families.load("llama").hf_class
    changed = llama.extend("LlamaConfig", llama.source, {"max_position_embeddings": 4096})
    with pytest.raises(AssertionError, match="defaults differ"):
        assert_table_is_class(changed, transformers.LlamaConfig)
    with pytest.raises(AssertionError, match="keys differ"):
        assert_table_is_class(llama.extend("LlamaConfig", llama.source, drop=("mlp_bias",)), transformers.LlamaConfig)


# --- remote-code classes, from the Fast-LLM archive that publishes them -----------------------------------------

ARCHIVE = next(iter(sorted((REPO_SHARED / "fastllm").glob("Fast-LLM-*.tar.gz"))), None)
needs_archive = pytest.mark.skipif(ARCHIVE is None, reason=f"no Fast-LLM archive in {REPO_SHARED / 'fastllm'}: the "
                                                           "remote-code config classes are published there")


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The remote config modules of the Fast-LLM archive, imported: `remote("apriel2", "Apriel2Config")`."""
    root = tmp_path_factory.mktemp("remote")
    with tarfile.open(ARCHIVE) as archive:
        members = [m for m in archive.getmembers()
                   if "/fast_llm_external_models/" in m.name and Path(m.name).name.startswith("configuration_")]
        archive.extractall(root, members=members, filter="data")

    def load(folder: str, name: str):
        path = next(root.glob(f"*/fast_llm_external_models/{folder}/configuration_{folder}.py"))
        spec = importlib.util.spec_from_file_location(f"remote_{folder}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)

    return load


@needs_archive
@pytest.mark.parametrize("family, folder, cls", [
    ("mtp_llama", "mtp_llama", "MTPLlamaConfig"),
    ("apriel_hybrid_ssm", "apriel_hybrid_ssm", "AprielHybridSSMConfig"),
    ("apriel2_text", "apriel2", "Apriel2TextConfig"),
    ("apriel2", "apriel2", "Apriel2Config"),
])
def test_remote_table_is_the_published_class(remote, family, folder, cls):
    spec = families.load(family)
    assert spec.hf_class.name == cls and folder in spec.hf_class.source
    assert_table_is_class(spec.hf_class, remote(folder, cls), spec)


@needs_archive
def test_llava_hybrid_tables_are_the_published_classes(remote):
    ours = families.load("llava_hybrid_ssm").hf_class
    assert_table_is_class(ours, remote("llava_hybrid", "LlavaHybridConfig"), subs=("vision_config", "text_config"))
    text = ours.keys["text_config"].classes["apriel_ssm_thinker_hybrid"]
    assert_table_is_class(text, remote("llava_hybrid", "AprielSSMHybridConfig"))


# --- configs read as transformers reads them ----------------------------------------------------------------------

def native_of(family: str, config: dict) -> dict:
    return canonical(api.import_config(families.load(family), config)[1])


@pytest.mark.parametrize("family, cls", BUILT_IN)
def test_absent_keys_mean_what_transformers_makes_of_them(family, cls):
    """Every key with a class default dropped from a real config: weightport reads the thin config as the same model
    that transformers' class makes of it (and writes back)."""
    spec = families.load(family)
    full = fixture(family)
    keep = {"model_type", "architectures", "num_hidden_layers", "layer_types", "hidden_size", "num_attention_heads",
            "num_key_value_heads",
            "vocab_size", "intermediate_size", "head_dim", "global_head_dim", "moe_intermediate_size", "num_experts",
            "top_k_experts", "enable_moe_block", "sliding_window", "hidden_size_per_layer_input",
            "num_local_experts"}
    thin = {k: v for k, v in full.items() if k in keep or k not in spec.hf_class.keys}
    made = getattr(transformers, cls).from_dict(copy.deepcopy(thin)).to_dict()
    assert native_of(family, thin) == native_of(family, made)


def test_llava_with_a_thin_pixtral_config_reads_like_transformers():
    """Issue input 3: a Pixtral vision_config of six keys (plus `is_composition` and a vision `tie_word_embeddings`)
    is filled from PixtralVisionConfig's defaults, as transformers fills it."""
    config = fixture("llava")
    config["is_composition"] = True
    config["vision_config"] = {"model_type": "pixtral", "head_dim": 64, "hidden_act": "silu", "image_size": 1024,
                               "patch_size": 16, "rope_theta": 1000000.0, "tie_word_embeddings": False}
    made = transformers.LlavaConfig.from_dict(copy.deepcopy(config)).to_dict()
    native = native_of("llava", config)
    assert native == native_of("llava", made)
    encoder = native["vision_encoder"]
    assert (encoder["hidden_size"], len(encoder["encoder"]["blocks"])) == (1024, 24)
    assert encoder["encoder"]["blocks"][0]["mixer"]["rotary"]["theta"] == 1000000.0
    spec = families.load("llava")
    _, _, _, kept = api._import_config(spec, config)
    assert sorted(kept) == ["is_composition", "vision_config.tie_word_embeddings"]


def smollm2() -> dict:
    """Issue input 1: the keys SmolLM2's config.json carries that LlamaConfig does not define."""
    return fixture("llama") | {"rope_interleaved": False, "is_llama_config": True,
                               "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16"}}}


def test_keys_the_class_does_not_define_are_kept_and_reported(tmp_path):
    config = smollm2()
    assert native_of("llama", config) == native_of("llama", fixture("llama"))
    assert api._import_config(families.load("llama"), config)[3] == ["is_llama_config", '"transformers.js_config"']
    with pytest.raises(ConfigError, match=r"rope_interleaved = True, but llama requires False \(interleaved"):
        api.import_config(families.load("llama"), config | {"rope_interleaved": True})


def test_a_smollm2_checkpoint_converts_and_its_keys_come_back(tmp_path):
    source = synth.write_hf(tmp_path / "hf", smollm2())
    out = cli("convert", source, tmp_path / "native")
    assert "2 key(s) that the LlamaConfig class does not define" in out.stdout
    assert 'is_llama_config, "transformers.js_config"' in out.stdout
    assert native_meta(tmp_path / "native")["metadata"]["weightport"]["hf_config"] == hf_config(source)
    cli("convert", tmp_path / "native", tmp_path / "back")
    assert_same_config(hf_config(tmp_path / "back"), hf_config(source))


def test_dense_gemma4_with_a_null_expert_size_converts():
    """Issue input 2: `expert_intermediate_size: null` (Gemma 4 31B) is not a Gemma4TextConfig key."""
    config = fixture("gemma4") | {"enable_moe_block": False, "expert_intermediate_size": None, "num_experts": None,
                                  "top_k_experts": None, "moe_intermediate_size": None}
    native = native_of("gemma4", config)
    assert [block["mlp"]["type"] for block in native["decoder"]["blocks"]] == ["mlp", "mlp"]
    assert api._import_config(families.load("gemma4"), config)[3] == ["expert_intermediate_size"]


@pytest.mark.parametrize("top, text, tied", [
    (True, False, True),  # issue input 4: as transformers 5.23 saved a tied Llava
    (None, True, True),  # top absent: LlavaConfig takes the text model's
    (False, True, True),
    (False, False, False),
    (None, None, False),
])
def test_llava_ties_as_transformers_does(top, text, tied):
    config = fixture("llava")
    for where, value in ((config, top), (config["text_config"], text)):
        where.pop("tie_word_embeddings", None)
        if value is not None:
            where["tie_word_embeddings"] = value
    assert transformers.LlavaConfig.from_dict(copy.deepcopy(config)).tie_word_embeddings is tied
    assert native_of("llava", config)["tied_embedding_weight"] is tied


def test_a_missing_key_says_to_add_it():
    """Issue input 8: a key with no class default is missing, not unknown, and the hint says so."""
    config = fixture("apriel2")
    del config["vision_encoder"]["hidden_size"]
    with pytest.raises(ConfigError) as err:
        api.import_config(families.load("apriel2"), config)
    assert "missing key 'vision_encoder.hidden_size'" in str(err.value)
    assert "add the missing keys" in str(err.value) and "may change the model" not in str(err.value)


YARN = {"factor": 4.0, "original_max_position_embeddings": 32}


@pytest.mark.parametrize("layout, names", [
    ("transformers4", {"type": "yarn"}),  # as Qwen2.5's model cards say to add it
    ("transformers4", {"type": "yarn", "rope_type": "yarn"}),  # that config saved by transformers 4.4x
    ("transformers5", {"type": "yarn", "rope_type": "yarn"}),  # ... and by transformers 5
    ("transformers5", {"type": "yarn"}),
])
def test_rope_type_by_its_older_name(tmp_path, layout, names):
    """`type` is read as `rope_type` where that is absent, and ignored otherwise, as transformers reads it; the
    config.json comes back as it was."""
    config = {k: v for k, v in fixture("qwen2").items() if k != "rope_parameters"}
    plain = config | {"rope_parameters": {**YARN, "rope_type": "yarn", "rope_theta": 1e6}}
    if layout == "transformers4":
        config |= {"rope_theta": 1e6, "rope_scaling": {**YARN, **names}}
    else:
        config |= {"rope_parameters": {**YARN, **names, "rope_theta": 1e6}}
    native = native_of("qwen2", config)
    assert native == native_of("qwen2", plain) and native["decoder"]["blocks"][0]["mixer"]["rotary"]["type"] == "yarn"
    assert native_of("qwen2", transformers.Qwen2Config.from_dict(copy.deepcopy(config)).to_dict()) == native
    source = synth.write_hf(tmp_path / "hf", config)
    weightport.convert(source, tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_config(hf_config(tmp_path / "back"), config)

def test_golden_exports_are_complete_without_a_record(tmp_path):
    """An export with no record of the HF model writes every key of the class: here the remote Apriel hybrid class's
    merged `ssm_cfg`, with Mamba's conv_bias and dt_proj_bias."""
    weightport.convert(GOLDENS / "tf4_apriel_hybrid_ssm" / "fast_llm", tmp_path / "hf", format="apriel_hybrid_ssm")
    config = hf_config(tmp_path / "hf")
    assert config["ssm_cfg"] == hf_config(GOLDENS / "tf4_apriel_hybrid_ssm" / "hf")["ssm_cfg"]
    assert {"conv_bias", "dt_proj_bias", "dt_init", "chunk_size"} <= set(config["ssm_cfg"])
    assert config["transformers_version"] == "4.57.6" and config["max_position_embeddings"] == 131072


def test_a_llava_tied_at_the_top_level_only_round_trips_with_equal_logits(tmp_path):
    """Issue input 4 with real models: a LlavaForConditionalGeneration saved with `tie_word_embeddings=True` at the
    top and false in its text config (no lm_head in the files) is tied, as transformers loads it; without any record
    of that config.json the export says tied at both levels, and transformers loads it with the same logits."""
    import torch

    from helpers import assert_same_tensors, model_inputs, tensors
    from test_transformers_models import BASE

    text = transformers.MistralConfig(**{**BASE, "tie_word_embeddings": False})
    vision = transformers.PixtralVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                              num_attention_heads=4, patch_size=4, image_size=16, head_dim=8,
                                              hidden_act="silu")
    # activations the native side holds exactly (HF's exact `gelu` is stored as Fast-LLM's tanh one)
    config = transformers.LlavaConfig(text_config=text, vision_config=vision, image_token_index=95,
                                      vision_feature_layer=-1, vision_feature_select_strategy="full",
                                      projector_hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True)
    torch.manual_seed(0)
    source = transformers.LlavaForConditionalGeneration(config).eval()
    source.save_pretrained(tmp_path / "hf")
    saved = hf_config(tmp_path / "hf")
    assert saved["tie_word_embeddings"] is True and saved["text_config"]["tie_word_embeddings"] is False
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    assert native_meta(tmp_path / "native")["config"]["base_model"]["tied_embedding_weight"] is True
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_config(hf_config(tmp_path / "back"), saved)
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    meta = native_meta(tmp_path / "native")  # as Fast-LLM saves it: no record of the HF model
    del meta["metadata"]["weightport"]
    (tmp_path / "native" / "metadata.yaml").write_text(__import__("yaml").safe_dump(meta))
    weightport.convert(tmp_path / "native", tmp_path / "bare", format="llava")
    bare = hf_config(tmp_path / "bare")
    assert bare["tie_word_embeddings"] is True and bare["text_config"]["tie_word_embeddings"] is True
    inputs = model_inputs(saved)
    for folder in ("back", "bare"):
        converted = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / folder).eval()
        with torch.no_grad():
            assert torch.equal(source(**inputs).logits, converted(**inputs).logits)


def test_pixtral_heads_are_hidden_size_over_heads_whatever_head_dim_says(tmp_path):
    """PixtralVisionConfig keeps a head_dim from config.json (transformers 4 overwrote it with hidden_size /
    num_attention_heads), but PixtralAttention builds its projections and heads from hidden_size /
    num_attention_heads alone; head_dim sizes only the rotary, so a model whose head_dim is another width builds and
    cannot run. weightport reads the heads the model has, and the config.json comes back as it was."""
    import torch

    from helpers import assert_same_tensors, tensors

    config = fixture("llava")
    config["vision_config"] |= {"head_dim": 16}  # hidden_size 32 / 4 heads = 8
    made = transformers.LlavaConfig.from_dict(copy.deepcopy(config))
    assert made.vision_config.head_dim == 16
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(made).eval()
    attention = model.model.vision_tower.transformer.layers[0].attention
    assert attention.q_proj.weight.shape == (32, 32) and attention.head_dim == 8
    with pytest.raises(RuntimeError, match="must match the size"):  # 8-wide heads, a 16-wide rotary
        model.model.vision_tower(torch.randn(1, 3, 8, 8), image_sizes=torch.tensor([[8, 8]]))
    native = native_of("llava", config)
    assert native["vision_encoder"]["encoder"]["blocks"][0]["mixer"]["head_size"] == 8
    assert native == native_of("llava", made.to_dict())
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    weightport.convert(tmp_path / "hf", tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    assert_same_tensors(tensors(tmp_path / "back"), tensors(tmp_path / "hf"))
    assert_same_config(hf_config(tmp_path / "back"), config)


# --- keys left to the class defaults, against the models transformers builds ----------------------------------

# Each family's fixture with one key left out at a time (in a wrapper's sub-configs too, and each sub-config left out
# whole): where transformers builds a model of it, weightport reads the same model, with the tensor shapes that
# model has. The inputs weightport refuses instead, and why (the variant named as `key` or `sub_config.key`):
REFUSED = {
    # MistralConfig's 8 KV heads (Qwen2Config's 32) outnumber the fixture's 4 query heads: transformers builds no
    # working attention of them either (num_key_value_groups is 0)
    **{(family, key): "heads a multiple of head_groups" for family, key in [
        ("mistral", "num_key_value_heads"), ("qwen2", "num_key_value_heads"), ("mixtral", "num_key_value_heads"),
        ("llava", "text_config.num_key_value_heads"),
        ("mistral3", "text_config.num_key_value_heads")]},
    # the defaults select CLIP's way of reading a tower (its second-to-last layer, the class token dropped), which
    # Fast-LLM's adapter of a Pixtral encoder does not
    ("llava", "vision_feature_select_strategy"): "requires 'full'",
    ("llava", "vision_feature_layer"): "requires -1",
    # Gemma4TextConfig's default has per-layer input embeddings, which Fast-LLM has no layer for
    ("gemma4", "hidden_size_per_layer_input"): "per-layer input embeddings are not supported",
    ("gemma4_vlm", "text_config.hidden_size_per_layer_input"): "per-layer input embeddings are not supported",
    ("gemma4_vlm", "text_config"): "per-layer input embeddings are not supported",
    # an MoE model with no experts per token: transformers' router cannot pick any
    ("gemma4", "top_k_experts"): "top_k_experts = None should be an integer",
}
TRANSFORMERS_FAMILIES = ("llama", "mistral", "qwen2", "mixtral", "gemma4", "llava", "llava_clip", "mistral3",
                         "gemma4_vlm")


def left_out(family: str) -> list[tuple[str, dict]]:
    """The fixture of `family` with one key of its class table left out, for each key it has; in a sub-config of a
    class table (`Sub`) too, and each sub-config left out whole."""
    full = fixture(family)
    table = families.load(family).hf_class
    out = []
    for key, default in table.keys.items():
        if key not in full:
            continue
        out.append((key, {k: v for k, v in full.items() if k != key}))
        sub = full[key]
        if isinstance(default, Sub) and isinstance(sub, dict):
            inner = default.classes.get(sub.get("model_type", default.default))
            out += [(f"{key}.{k}", {**full, key: {kk: vv for kk, vv in sub.items() if kk != k}})
                    for k in (inner.keys if inner else ()) if k in sub]
    return out


def built_shapes(config: dict) -> dict[str, tuple[int, ...]] | None:
    """The tensors of the model transformers builds from `config` (on the meta device), by state_dict name; None
    where transformers refuses the config."""
    import torch
    from huggingface_hub.errors import StrictDataclassClassValidationError

    cls = getattr(transformers, config["architectures"][0])
    try:
        made = cls.config_class.from_dict(copy.deepcopy(config))
        with torch.device("meta"):
            model = cls(made)
    except (StrictDataclassClassValidationError, TypeError):  # layer_types of another length, no expert sizes
        return None
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("family", TRANSFORMERS_FAMILIES)
def test_keys_left_to_class_defaults_read_as_the_model_transformers_builds(family):
    from weightport.core.plan import Ref, build
    from weightport.core.weights import walk
    from weightport.errors import WeightportError
    from weightport.native.model import parameters

    problems, refused = [], set()
    for variant, config in left_out(family):
        shapes = built_shapes(config)
        if shapes is None:
            continue
        try:
            spec = families.load(families.detect(config))  # a Llava without vision_config is a CLIP one
            native = api.import_config(spec, config)[1]
            sources = {name: Ref(name, shape, "F32") for name, shape in shapes.items()}
            build(spec.name, "from_hf", walk(spec.weights, native), parameters(native), sources, None, {})
            made = transformers.AutoConfig.for_model(**copy.deepcopy(config)).to_dict()
            if canonical(native) != native_of(spec.name, made):
                problems.append(f"{variant}: read otherwise than transformers' filled-in config")
        except WeightportError as err:
            expected = REFUSED.get((family, variant))
            if expected is None or expected not in str(err):
                problems.append(f"{variant}: {str(err).splitlines()[:3]}")
            refused.add(variant)
    assert problems == []
    assert refused == {variant for f, variant in REFUSED if f == family}, "REFUSED lists a variant that converts"


def test_a_quantization_config_is_refused_not_noted():
    """`quantization_config` is a base-class key that changes what transformers loads (packed weights, or weights to
    quantize on load): refused, naming the key, for every family."""
    for family in ("llama", "qwen2", "llava"):
        config = fixture(family) | {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
        with pytest.raises(ConfigError, match="quantization_config = .*quantized checkpoints are not converted"):
            api.import_config(families.load(family), config)
    assert native_of("llama", fixture("llama") | {"quantization_config": None}) == native_of("llama", fixture("llama"))


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b-instruct-yarn"])
def test_a_scaled_rotary_without_its_original_length_takes_max_position_embeddings(name):
    """transformers 5 gives llama3 / yarn rotary a missing `original_max_position_embeddings` from the model's
    `max_position_embeddings`: weightport reads it so, as the same model as transformers' filled-in config."""
    config = json.loads((FIXTURES.parent / "published" / f"{name}.json").read_text())
    family = families.detect(config)
    scaling = config.get("rope_scaling") or config["rope_parameters"]
    del scaling["original_max_position_embeddings"]
    made = transformers.AutoConfig.for_model(**copy.deepcopy(config)).to_dict()
    assert made["rope_parameters"]["original_max_position_embeddings"] == config["max_position_embeddings"]
    assert native_of(family, config) == native_of(family, made)
