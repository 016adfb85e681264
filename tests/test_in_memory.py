"""In-memory conversion (`import_hf`, `export_hf`, `buckets`, `flat_buckets`) on torch tensors as trainers hold them:
on their own device and in their dtype, any strides; renames are the given tensors, splits are views of them, only
concatenations and transposes copy; bit for bit what the file path writes, on every golden. On CUDA (skipped
without it) the same, with every output on the GPU."""

from __future__ import annotations

import random

import pytest
import torch

import weightport
from helpers import GOLDENS, hf_config, native_meta, tensors
from weightport import synth
from weightport.errors import CoverageError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
GOLDEN_CASES = sorted(p.name for p in GOLDENS.iterdir() if (p / "case.json").is_file())


def shuffled(pairs):
    pairs = list(pairs)
    random.Random(0).shuffle(pairs)
    return pairs


def assert_bit_equal(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name].cpu().contiguous().view(torch.uint8), tensor.contiguous().view(torch.uint8)), name


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_in_memory_is_the_file_path_bit_for_bit_on_every_golden(name, tmp_path):
    """import_hf of the golden's HF tensors is what `convert` writes natively, and export_hf of those native tensors
    is what `convert` writes back, both from shuffled inputs."""
    golden = GOLDENS / name
    weightport.convert(golden / "hf", tmp_path / "native")
    weightport.convert(tmp_path / "native", tmp_path / "back")
    fmt = native_meta(tmp_path / "native")["metadata"]["weightport"]["format"]
    native, back = tensors(tmp_path / "native"), tensors(tmp_path / "back")
    given = shuffled(tensors(golden / "hf").items())
    assert_bit_equal(dict(weightport.import_hf(hf_config(golden / "hf"), given, format=fmt)), native)
    config = native_meta(tmp_path / "native")["config"]
    assert_bit_equal(dict(weightport.export_hf(config, shuffled(native.items()), format=fmt)), back)


# Storage, dtype, device


MIXTRAL = dict(model_type="mixtral", architectures=["MixtralForCausalLM"], num_local_experts=4, num_experts_per_tok=2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(HF config, HF tensors, native config, native tensors) of a tiny random Llama (GQA, untied) and Mixtral
    (4 experts), the native side written by the file path."""
    out = {}
    for family, config in (("llama", synth.tiny_llama()), ("mixtral", synth.tiny_llama(**MIXTRAL))):
        root = tmp_path_factory.mktemp(family)
        synth.write_hf(root / "hf", config)
        weightport.convert(root / "hf", root / "native")
        out[family] = (hf_config(root / "hf"), tensors(root / "hf"), native_meta(root / "native")["config"],
                       tensors(root / "native"))
    return out


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_export_renames_are_the_inputs_splits_are_views_and_only_transposes_copy(checkpoints, family, dtype, device):
    _, hf, config, native = checkpoints[family]
    given = {name: tensor.to(device, dtype) for name, tensor in native.items()}
    owner = {storage(t): name for name, t in given.items()}
    out = dict(weightport.export_hf(config, given.items(), format=family))
    assert_bit_equal({k: v.cpu() for k, v in out.items()}, {k: v.to(dtype) for k, v in hf.items()})
    kinds = {}
    for name, tensor in out.items():
        assert (tensor.dtype, tensor.device.type) == (dtype, device)
        source = owner.get(storage(tensor))
        if any(tensor is t for t in given.values()):
            kinds[name] = "same"
        elif source is not None:
            kinds[name] = "view"
            assert tensor.is_contiguous(), name  # a split along the first dimension
        else:
            kinds[name] = "copy"
            assert tensor.is_contiguous(), name
    copies = sorted(name for name, kind in kinds.items() if kind == "copy")
    assert copies and all(name.endswith(("down_proj.weight", ".w2.weight")) for name in copies)  # the transposes
    assert kinds["model.layers.0.self_attn.k_proj.weight"] == kinds["model.layers.0.self_attn.v_proj.weight"] == "view"
    assert kinds["model.embed_tokens.weight"] == kinds["model.layers.0.self_attn.q_proj.weight"] == "same"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_import_renames_are_the_inputs_and_only_concatenations_and_transposes_copy(checkpoints, family, device):
    hf_config, hf, _, native = checkpoints[family]
    given = {name: tensor.to(device) for name, tensor in hf.items()}
    inputs = {storage(t) for t in given.values()}
    out = dict(weightport.import_hf(hf_config, shuffled(given.items())))
    assert_bit_equal({k: v.cpu() for k, v in out.items()}, native)
    for name, tensor in out.items():
        assert tensor.device.type == device and tensor.is_contiguous()
        fused = name.endswith(("key_value.weight", "layer_1.weight", "layer_2.weight"))
        assert (storage(tensor) in inputs) is not fused, name
    assert out["embeddings.word_embeddings_weight"] is given["model.embed_tokens.weight"]


def test_inputs_of_any_strides_convert_alike(checkpoints):
    """A trainer's tensors may be transposed views or slices of a bigger buffer: the values decide, not the strides;
    a transposed input that is already in the output's layout is not copied again."""
    hf_config, hf, config, native = checkpoints["llama"]
    strided = {name: t.T.contiguous().T if t.dim() == 2 else torch.stack([t, t], 1)[:, 0] for name, t in
               native.items()}
    assert not strided["decoder.0.mlp.layer_2.weight"].is_contiguous()
    out = dict(weightport.export_hf(config, strided.items(), format="llama"))
    assert_bit_equal(out, hf)
    down = out["model.layers.0.mlp.down_proj.weight"]
    assert storage(down) == storage(strided["decoder.0.mlp.layer_2.weight"])  # its transpose is contiguous already
    back = dict(weightport.import_hf(hf_config, {n: t.T.contiguous().T if t.dim() == 2 else t
                                                 for n, t in out.items()}.items()))
    assert_bit_equal(back, native)


def test_parts_of_one_tensor_on_other_dtypes_are_refused(checkpoints):
    hf_config, hf, _, _ = checkpoints["llama"]
    given = dict(hf)
    given["model.layers.0.self_attn.v_proj.weight"] = given["model.layers.0.self_attn.v_proj.weight"].double()
    with pytest.raises(CoverageError, match=r"HF tensors of native 'decoder.0.mixer.key_value.weight' are "
                                            r"concatenated.*must have one dtype and one device; given model.layers.0"
                                            r".self_attn.k_proj.weight torch.float32 on cpu, model.layers.0.self_attn"
                                            r".v_proj.weight torch.float64 on cpu"):
        list(weightport.import_hf(hf_config, given.items()))


# Streaming: each output as soon as its inputs have arrived


class Given:
    """`(name, tensor)` pairs given one at a time, recording the names taken so far."""

    def __init__(self, pairs):
        self.pairs, self.taken = list(pairs), []

    def __iter__(self):
        for name, tensor in self.pairs:
            self.taken.append(name)
            yield name, tensor


@pytest.fixture(scope="module")
def inputs_of(checkpoints, tmp_path_factory):
    """Per (family, "import" or "export"), the input names each output is made of, from the file path's plan."""
    out = {}
    for family, (config, _, _, _) in checkpoints.items():
        root = tmp_path_factory.mktemp(f"plan_{family}")
        synth.write_hf(root / "hf", config)
        weightport.convert(root / "hf", root / "native")
        for direction, folder in (("import", root / "hf"), ("export", root / "native")):
            steps = weightport.plan(folder).steps
            out[family, direction] = {dst.name: {src.name for src in step.src} for step in steps for dst in step.dst}
    return out


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_export_yields_the_outputs_of_each_input_before_it_takes_the_next(checkpoints, inputs_of, family):
    """Nothing is collected: every output (a rename, a split, a transpose) comes while its input is the last one
    taken, so a trainer's tensors go to the engine one by one."""
    _, _, config, native = checkpoints[family]
    given, made_of, seen = Given(shuffled(native.items())), inputs_of[family, "export"], []
    for name, _ in weightport.export_hf(config, given, format=family):
        assert made_of[name] == {given.taken[-1]}, (f"{name} (of {made_of[name]}) came after "
                                                     f"{len(given.taken)} inputs, the last {given.taken[-1]}")
        seen.append(name)
    assert sorted(seen) == sorted(made_of)


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_import_yields_each_output_as_soon_as_its_group_is_complete(checkpoints, inputs_of, family):
    """A rename comes with its input; a concatenation (K and V, gate and up, experts) comes with the last of its
    parts, before the next input is taken, never earlier."""
    hf_config, hf, _, _ = checkpoints[family]
    given, made_of, seen = Given(shuffled(hf.items())), inputs_of[family, "import"], []
    for name, _ in weightport.import_hf(hf_config, given):
        parts = made_of[name]
        assert given.taken[-1] in parts and parts <= set(given.taken), (
            f"{name} (of {sorted(parts)}) came after {len(given.taken)} inputs, the last {given.taken[-1]}")
        seen.append(name)
    assert sorted(seen) == sorted(made_of)
    if family == "mixtral":  # the experts of a layer are one group
        assert max(len(parts) for parts in made_of.values()) == 2 * 4


# Buckets


def test_buckets_group_in_order_by_bytes_without_copying(checkpoints):
    _, _, config, native = checkpoints["mixtral"]
    pairs = list(weightport.export_hf(config, native.items(), format="mixtral"))
    size = 4096
    groups = list(weightport.buckets(iter(pairs), size))
    assert [pair for group in groups for pair in group] == pairs  # the same tensors, in order
    for group in groups:
        total = sum(t.numel() * t.element_size() for _, t in group)
        assert total <= size or len(group) == 1
    sizes = [sum(t.numel() * t.element_size() for _, t in g) for g in groups]
    assert all(a + groups[i + 1][0][1].numel() * groups[i + 1][0][1].element_size() > size
               for i, a in enumerate(sizes[:-1]))  # each bucket is full: the next tensor would not fit
    with pytest.raises(ValueError, match="at least 1 byte"):
        next(weightport.buckets(iter(pairs), 0))


@pytest.mark.parametrize("device", DEVICES)
def test_flat_buckets_hold_each_tensor_once_and_give_it_back(checkpoints, device):
    _, _, config, native = checkpoints["llama"]
    pairs = [(n, t.to(device)) for n, t in weightport.export_hf(config, native.items(), format="llama")]
    pairs.append(("odd", torch.arange(3, dtype=torch.int8, device=device)))  # 3 bytes: the next entry is realigned
    pairs.append(("strided", torch.arange(12.0, device=device).reshape(3, 4).T))
    flats = list(weightport.flat_buckets(iter(pairs), 10_000))
    assert len(flats) > 1
    for flat in flats:
        assert flat.buffer.dtype == torch.uint8 and flat.buffer.device.type == device
        assert all(offset % weightport.FlatBucket.ALIGNMENT == 0 for *_, offset in flat.entries)
        payload = sum(-(-t.numel() * t.element_size() // 16) * 16 for _, t in flat.tensors())
        assert flat.buffer.numel() == payload  # the bucket's bytes, nothing more
    back = [pair for flat in flats for pair in weightport.FlatBucket(flat.buffer.clone(), flat.entries).tensors()]
    assert [n for n, _ in back] == [n for n, _ in pairs]
    for (_, got), (_, expected) in zip(back, pairs):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


# transformers 5 models as trainers hold them


def models():
    transformers = pytest.importorskip("transformers")
    from test_transformers_models import BASE, CASES, build, build_llava

    return transformers, BASE, CASES, build, build_llava


def built(name: str, folder) -> torch.nn.Module:
    """A tiny transformers model of every family transformers has (test_transformers_models.CASES), or a Llava."""
    _, _, _, build, build_llava = models()
    if name.startswith("llava"):
        return build_llava(folder, tied=name.endswith("tied"), text="MistralConfig")
    return build(name, folder)


def model_cases() -> list[str]:
    try:
        return [*models()[2], "llava", "llava_tied"]
    except pytest.skip.Exception:
        return []


@pytest.mark.parametrize("name", model_cases())
def test_state_dict_and_named_parameters_import_and_export_loads_with_load_state_dict(name, tmp_path):
    """`state_dict().items()` (tied copies listed twice, Mixtral's stacked experts, Llava's module names) and
    `named_parameters()` (each parameter once) import into the native checkpoint of the model's save_pretrained
    folder; `export_hf(state_dict=True)` of it is what `load_state_dict(strict=True)` of a fresh model takes, which
    then holds the same tensors, and `export_hf()` is what save_pretrained wrote."""
    model = built(name, tmp_path / "saved")
    weightport.convert(tmp_path / "saved", tmp_path / "native")
    config, native = hf_config(tmp_path / "saved"), tensors(tmp_path / "native")
    assert_bit_equal(dict(weightport.import_hf(config, model.state_dict().items())), native)
    in_memory = model.config.to_dict()  # as a trainer holds it: architectures null, transformers_version its own
    assert_bit_equal(dict(weightport.import_hf(in_memory, model.state_dict().items())), native)
    buffers = {n for n, _ in model.named_buffers()} & set(model.state_dict())  # persistent: Gemma 4's layer_scalar
    given = ((n, t.detach()) for n, t in model.named_parameters())
    if buffers:
        with pytest.raises(CoverageError, match=r"never arrived; a model's named_parameters\(\) leaves out its "
                                                r"buffers \(state_dict\(\) has them\)") as err:
            list(weightport.import_hf(config, given))
        assert all(name in str(err.value) for name in buffers)
    else:
        assert_bit_equal(dict(weightport.import_hf(config, given)), native)
    meta = native_meta(tmp_path / "native")
    fmt = meta["metadata"]["weightport"]["format"]
    exported = dict(weightport.export_hf(meta["config"], shuffled(native.items()), format=fmt, state_dict=True))
    torch.manual_seed(1)
    fresh = type(model)(model.config).eval()
    for param in fresh.parameters():  # in the dtype of the model's, buffers as they are (as `build` makes them)
        param.data = param.data.to(next(model.parameters()).dtype)
    fresh.load_state_dict(exported, strict=True)
    assert_bit_equal(dict(fresh.state_dict()), dict(model.state_dict()))
    assert_bit_equal(dict(weightport.export_hf(meta["config"], native.items(), format=fmt)),
                     tensors(tmp_path / "saved"))
