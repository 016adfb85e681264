"""Shared test helpers: read whole checkpoints, compare tensors and configs, run the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from weightport.core.paths import MISSING, dotted, leaves
from weightport.native.schema import canonical, resolve

ROOT = Path(__file__).resolve().parent
GOLDENS = ROOT / "goldens"
REPO_SHARED = ROOT.parents[1] / "shared"  # the project's shared folder beside the repository (Fast-LLM, goldens)

# Where Fast-LLM's own output is wrong (case.json notes), weightport differs on purpose.
# A key that follows a defect (the class's `layer_types` from the unexpanded layout, a Llama default where the text
# model is not Llama) is listed with it.
FAST_LLM_DEFECTS = {
    # Fast-LLM writes the unexpanded pattern: 2 names, 4 layers (and the class copies it to layer_types)
    "tf4_apriel_hybrid_ssm": ("hybrid_block_layout", "layer_types"),
    # Fast-LLM writes a Llama text config for the Mistral text model, with Llama's defaults
    "llava": ("text_config.model_type", "text_config.max_position_embeddings", "text_config.attention_bias",
              "text_config.mlp_bias", "text_config.pretraining_tp"),
    # Fast-LLM writes a Llama text config (the HF class asserts apriel_ssm_thinker_hybrid) with the unexpanded layout,
    # so without the ssm_cfg that AprielSSMHybridConfig writes
    "llava_hybrid_ssm_attn_only": ("text_config.model_type", "text_config.hybrid_block_layout",
                                   "text_config.max_position_embeddings", "text_config.attention_bias",
                                   "text_config.mlp_bias", "text_config.pretraining_tp", "text_config.ssm_cfg"),
}
# Keys of Fast-LLM's exports that are Fast-LLM's own defects, not part of the model: a stray `type` in Llava configs,
# and a `sliding_window` in Llama text configs, which LlamaConfig does not define.
FAST_LLM_STRAY_KEYS = {"llava": ("type", "text_config.sliding_window"), "llava_hybrid_ssm_attn_only": ("type",)}
# Fast-LLM's exporter writes no `dtype` (save_pretrained does, and so does weightport): every case.
FAST_LLM_NO_DTYPE = ("dtype",)
# Where weightport's export of a golden's native checkpoint, which records no HF model, writes a key otherwise than
# Fast-LLM's export though both read as the same model: not Fast-LLM's defects but weightport's choices, each pinned
# to its values, {case: {key: (weightport's, Fast-LLM's)}}.
EXPORT_CHOICES = {
    # transformers 4's save_pretrained leaves out a value equal to PretrainedConfig's default (a null pad_token_id),
    # and transformers 4's MistralConfig (which AprielHybridSSMConfig extends) has no rope_scaling; weightport writes
    # every key of the transformers 5 class, in the layout of transformers 4
    "tf4_llama_basic": {"pad_token_id": (None, MISSING)},
    "tf4_apriel_hybrid_ssm": {"pad_token_id": (None, MISSING), "rope_scaling": (None, MISSING)},
    # weightport writes Llava's top-level tie_word_embeddings (the text model's value) for LlavaHybridConfig too, which
    # does not define it; Fast-LLM's converter ignores that key
    "llava_hybrid_ssm_attn_only": {"tie_word_embeddings": (False, MISSING)},
}


def case(name: str) -> dict:
    """The `case.json` of golden `name` (format, source side, knobs, Fast-LLM's own defects)."""
    return json.loads((GOLDENS / name / "case.json").read_text())


CASES = sorted(p.name for p in GOLDENS.iterdir() if (p / "case.json").is_file())


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF or native folder, read with the reference safetensors library
    (native: `/weights` only)."""
    out = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():
                name, _, shard = key.partition("/")
                if shard in ("", "weights"):
                    assert name not in out, f"{name} stored twice"
                    out[name] = handle.get_tensor(key)
    return out


def assert_same_tensors(ours: dict, reference: dict, *, upcast: bool = False) -> None:
    """Same names, shapes and bits; with `upcast`, ours may be a narrower dtype that upcasts exactly."""
    assert sorted(ours) == sorted(reference)
    for name, ref in reference.items():
        mine = ours[name]
        assert mine.shape == ref.shape, name
        if upcast and mine.dtype != ref.dtype:
            mine = mine.to(ref.dtype)
        assert mine.dtype == ref.dtype, f"{name}: {mine.dtype} != {ref.dtype}"
        assert torch.equal(mine.reshape(-1).view(torch.uint8) if mine.dtype != torch.bool else mine,
                           ref.reshape(-1).view(torch.uint8) if ref.dtype != torch.bool else ref), f"{name} differs"


def hf_config(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def native_meta(folder: Path) -> dict:
    return yaml.safe_load((Path(folder) / "metadata.yaml").read_text())


def assert_written_like(ours: dict, reference: dict) -> None:
    """Our native `base_model` sets exactly the fields the reference (Fast-LLM's importer) sets, to the same
    values: Fast-LLM compares explicitly set fields, so a field set on one side only is a difference."""
    mine, theirs = leaves(ours), leaves(reference)
    assert sorted(".".join(p) for p in set(mine) - set(theirs)) == [], "fields set by weightport only"
    assert sorted(".".join(p) for p in set(theirs) - set(mine)) == [], "fields set by the reference only"
    assert {".".join(p): v for p, v in mine.items() if theirs[p] != v} == {}, "fields set to other values"


def assert_same_native_model(ours: dict, reference: dict, model: str = "gpt") -> None:
    """Two native `base_model` configs describe the same model (defaults and equivalent forms resolved)."""
    assert canonical(resolve(model, ours)) == canonical(resolve(model, reference))


def config_differences(ours: dict, reference: dict) -> dict[str, tuple]:
    """Every key of two config.json dicts, nested keys by dotted path, that one lacks or that holds another value
    (compared as JSON, so that 1, 1.0 and true differ): {path: (ours, reference)}, <missing> for an absent key."""
    mine, theirs = leaves(ours), leaves(reference)
    return {dotted(p): (mine.get(p, MISSING), theirs.get(p, MISSING)) for p in sorted(set(mine) | set(theirs))
            if _json(mine.get(p, MISSING)) != _json(theirs.get(p, MISSING))}


def _json(value: object) -> str:
    return "<missing>" if value is MISSING else json.dumps(value, sort_keys=True)


def assert_same_config(ours: dict, reference: dict, allowed: tuple[str, ...] = (),
                       expected: dict[str, tuple] | None = None) -> None:
    """The same config.json key for key, both ways (no key missing, none extra, the same values), but for the keys in
    `allowed` (each a path or the path of a section: Fast-LLM's defects, named) and the differences in `expected`
    ({path: (ours, reference)}), which must be exactly as given."""
    differ = config_differences(ours, reference)
    expected = dict(expected or {})
    wrong = {p: (differ.get(p, (MISSING, MISSING)), v) for p, v in expected.items()
             if tuple(map(_json, differ.get(p, (MISSING, MISSING)))) != tuple(map(_json, v))}
    assert wrong == {}, f"differences not as expected, {{path: (found, expected)}}: {wrong}"
    unexpected = {p: v for p, v in differ.items()
                  if p not in expected and not any(p == a or p.startswith(a + ".") for a in allowed)}
    assert unexpected == {}, f"config.json differs from the reference, {{path: (ours, reference)}}: {unexpected}"


def fast_llm_export_differences(name: str) -> tuple[tuple[str, ...], dict[str, tuple]]:
    """(allowed keys, expected differences) between weightport's export of golden `name`'s native checkpoint, which
    records no HF model, and Fast-LLM's own export of it: Fast-LLM's defects, each named, and nothing else."""
    allowed = FAST_LLM_NO_DTYPE + FAST_LLM_DEFECTS.get(name, ()) + FAST_LLM_STRAY_KEYS.get(name, ())
    return allowed, EXPORT_CHOICES.get(name, {})


def saved_by_fast_llm(native: Path, folder: Path) -> Path:
    """A copy of a native checkpoint as Fast-LLM saves it (training, or its own convert): no `metadata.weightport`
    (no record of the HF model) and no `hf_files/` (no carried parts)."""
    shutil.copytree(native, folder, ignore=shutil.ignore_patterns("hf_files"))
    meta = native_meta(folder)
    del meta["metadata"]["weightport"]
    (Path(folder) / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return Path(folder)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `weightport` command in a subprocess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "weightport", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"weightport {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def model_inputs(config: dict, seed: int = 0) -> dict:
    """Inputs for a forward pass: a token prompt, and for a Llava model an 8x8 image whose 4 patches come first."""
    generator = torch.Generator().manual_seed(seed)
    text = config.get("text_config", config)
    if "vision_config" not in config:
        return {"input_ids": torch.randint(0, text["vocab_size"], (2, 12), generator=generator)}
    patch = config["vision_config"]["patch_size"]
    tokens = torch.randint(0, min(text["vocab_size"], config["image_token_index"]), (1, 8), generator=generator)
    return {
        "input_ids": torch.cat([torch.full((1, (8 // patch) ** 2), config["image_token_index"]), tokens], 1),
        "pixel_values": torch.randn(1, 3, 8, 8, generator=generator),
        "image_sizes": torch.tensor([[8, 8]]),
    }


def logits(cls, folder: Path) -> torch.Tensor:
    """The logits of the checkpoint in `folder` loaded with transformers class `cls`, in float32."""
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(**model_inputs(hf_config(folder))).logits


def assert_converts_as_saved(root: Path, source: Path) -> None:
    """`source`, another HF naming of the model that `save_pretrained` wrote to `root/saved`, converts (by the CLI)
    to the native checkpoint of `root/saved` (`root/native_saved`) and back to `root/saved` itself."""
    cli("convert", source, root / "native")
    assert_same_tensors(tensors(root / "native"), tensors(root / "native_saved"))
    assert native_meta(root / "native") == native_meta(root / "native_saved")
    cli("convert", root / "native", root / "back")
    assert_same_tensors(tensors(root / "back"), tensors(root / "saved"))
    assert_same_config(hf_config(root / "back"), hf_config(root / "saved"))
