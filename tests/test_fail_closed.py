"""Bad input fails closed: the real `weightport convert`, in a subprocess, on one broken checkpoint per test.

Every case must end with exit code 1 (2 for usage errors), a message on stderr that names the offending file,
tensor or key and says what to do, no traceback, and the destination exactly as it was before the run (absent,
or untouched when it already existed) with no `.<dst>.tmp-*` folder beside it.

To keep some 25 subprocesses quick, the broken checkpoints are all built first and the commands run concurrently,
once per module (`outcomes`); each test then checks its own outcome, and a broken promise fails with its own
exception type (`Crashed`, `WrongExit`, `LeftOutput`, `VagueMessage`).

Those cases all fail before any output is written. The last ones (24-26) fail after part of it is, at a point the
test controls rather than at a moment it waits for: a source tensor that can no longer be read once the other steps
are written (through the API's `progress`), a file size limit that only a file copied after every tensor exceeds,
and a SIGKILL sent by the converting process to itself from `progress` half way; then a rerun succeeds and removes
the killed run's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import weightport
from helpers import cli, tensors
from weightport import synth
from weightport.core import runtime
from weightport.errors import FormatError
from weightport.io.safetensors import read_checkpoint

# ---------------------------------------------------------------------------------------------------------------
# What "fails closed" means, one exception type per broken promise.


class Crashed(AssertionError):
    """The command died with a traceback instead of a clean message."""


class WrongExit(AssertionError):
    """The exit code is not 1 (bad input) or 2 (usage error)."""


class LeftOutput(AssertionError):
    """The destination changed, or a temporary folder was left beside it."""


class VagueMessage(AssertionError):
    """The message does not name the offending file, tensor or key, or does not say what to do."""


# Words of a message that tells the user what to do next (for usage errors, argparse's usage line).
REMEDY = re.compile(r"\b(re-?download|re-?export|regenerate|re-?save|convert|pass|check|fix|remove|delete|rename|"
                    r"choose|point|use|edit|replace|report|upgrade|usage)\b", re.IGNORECASE)


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder` with its bytes, or None when the folder does not exist (or cannot: a name longer
    than the file system allows)."""
    try:
        if not folder.exists():
            return None
    except OSError:
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(dst: Path) -> list[str]:
    """Temporary folders of an output `dst` left beside it (of any output, for a name the file system cannot hold)."""
    pattern = f".{dst.name}.tmp-*" if len(dst.name) < 120 else ".*.tmp-*"
    return sorted(p.name for p in dst.parent.glob(pattern))


def assert_fails_closed(result: subprocess.CompletedProcess, dst: Path, before: dict | None, *, code: int,
                        says: tuple[str, ...]) -> None:
    err = result.stderr.replace(str(dst.parent), "<dir>")  # a folder name must not pass for a word of the message
    if "Traceback" in err:
        raise Crashed(f"traceback on stderr:\n{err}")
    if result.returncode != code:
        raise WrongExit(f"exit code {result.returncode}, expected {code}; stderr:\n{err}")
    if snapshot(dst) != before:
        raise LeftOutput(f"{dst} changed: before {before and sorted(before)}, after {sorted(snapshot(dst) or [])}")
    if leftovers(dst):
        raise LeftOutput(f"temporary folders left beside {dst}: {leftovers(dst)}")
    missing = [s for s in says if s not in err]
    if missing:
        raise VagueMessage(f"stderr lacks {missing}:\n{err}")
    if not REMEDY.search(err):
        raise VagueMessage(f"stderr does not say what to do:\n{err}")


# ---------------------------------------------------------------------------------------------------------------
# Breaking safetensors files by hand: the header is a little-endian u64 length, then that many bytes of JSON.


def read_raw(file: Path) -> tuple[dict, bytes]:
    raw = file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_raw(file: Path, header: dict | bytes, data: bytes) -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    file.write_bytes(len(text).to_bytes(8, "little") + text + data)


def edit_header(file: Path, change: Callable[[dict], None]) -> None:
    header, data = read_raw(file)
    change(header)
    write_raw(file, header, data)


def edit_json(file: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads(file.read_text())
    change(doc)
    file.write_text(json.dumps(doc))


def edit_yaml(file: Path, change: Callable[[dict], None]) -> None:
    doc = yaml.safe_load(file.read_text())
    change(doc)
    file.write_text(yaml.safe_dump(doc))


SINGLE = "model.safetensors"
SHARDS = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]  # the "sharded" source, see `sources`
INDEX = "model.safetensors.index.json"
NORM = "model.norm.weight"  # F32 [64]
K, V = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"  # F32 [32, 64] each


# --- 1-7: one safetensors file ---

def truncate_file(src: Path) -> None:
    """The last 100 bytes of the file are cut off, as by an interrupted download."""
    file = src / SINGLE
    file.write_bytes(file.read_bytes()[:-100])


def header_length_past_end(src: Path) -> None:
    """The header length prefix claims more bytes than the file has."""
    file = src / SINGLE
    raw = file.read_bytes()
    file.write_bytes(len(raw).to_bytes(8, "little") + raw[8:])


def header_not_json(src: Path) -> None:
    _, data = read_raw(src / SINGLE)
    write_raw(src / SINGLE, b"this header is not JSON {", data)


def offsets_out_of_range(src: Path) -> None:
    edit_header(src / SINGLE, lambda h: h[NORM].update(data_offsets=[10**9, 10**9 + 256]))


def overlapping_offsets(src: Path) -> None:
    """v_proj is moved half way back into k_proj's bytes (same size, so only the overlap is wrong)."""
    def change(h: dict) -> None:
        begin, end = h[K]["data_offsets"]
        h[V]["data_offsets"] = [begin + 4096, end + 4096]
    edit_header(src / SINGLE, change)


def shape_disagrees_with_bytes(src: Path) -> None:
    """[65] F32 needs 260 bytes; the offsets span 256."""
    edit_header(src / SINGLE, lambda h: h[NORM].update(shape=[65]))


def unknown_dtype(src: Path) -> None:
    edit_header(src / SINGLE, lambda h: h[NORM].update(dtype="Q4_K"))


def dtype_not_a_string(src: Path) -> None:
    """Valid JSON, but the dtype is a list (found by tests/test_fuzz_readers.py)."""
    edit_header(src / SINGLE, lambda h: h[NORM].update(dtype=["F32"]))


# --- 8-11: sharded checkpoints and their index ---

def index_names_missing_shard(src: Path) -> None:
    (src / SHARDS[1]).unlink()


def index_names_outside_path(src: Path) -> None:
    """The last shard's tensors are mapped to ../x.safetensors, which exists (a valid copy) outside the folder."""
    shutil.copyfile(src / SHARDS[2], src.parent / "x.safetensors")

    def change(index: dict) -> None:
        index["weight_map"] = {k: "../x.safetensors" if v == SHARDS[2] else v for k, v in index["weight_map"].items()}
    edit_json(src / INDEX, change)


def same_tensor_in_two_shards(src: Path) -> None:
    """The embedding (in shard 1, where the index puts it) is also stored in shard 2."""
    first, second = load_file(src / SHARDS[0]), load_file(src / SHARDS[1])
    second["model.embed_tokens.weight"] = first["model.embed_tokens.weight"]
    save_file(second, src / SHARDS[1], metadata={"format": "pt"})


def index_maps_tensor_to_wrong_shard(src: Path) -> None:
    """model.norm.weight lives in shard 3; the index says shard 1."""
    edit_json(src / INDEX, lambda index: index["weight_map"].update({NORM: SHARDS[0]}))


# --- 15-17: config.json ---

def config_not_json(src: Path) -> None:
    (src / "config.json").write_text('{"model_type": "llama", "hidden_size": 64,')


def config_unknown_nested_key(src: Path) -> None:
    """(An unknown top-level key is covered by tests/test_cli.py; this one hides inside rope_parameters.)"""
    edit_json(src / "config.json", lambda c: c["rope_parameters"].update(warp_factor=9))


def config_contradicts_shapes(src: Path) -> None:
    edit_json(src / "config.json", lambda c: c.update(intermediate_size=96))  # the tensors have 128


# --- 18-20: metadata.yaml ---

def yaml_unsafe_tag(src: Path) -> None:
    """A tag that, loaded with an unsafe YAML loader, runs `touch PWNED` beside the checkpoint."""
    text = (src / "metadata.yaml").read_text()
    payload = f'exploit: !!python/object/apply:os.system ["touch {shlex.quote(str(src.parent / "PWNED"))}"]\n'
    (src / "metadata.yaml").write_text(text + payload)


def yaml_unknown_architecture_field(src: Path) -> None:
    edit_yaml(src / "metadata.yaml",
              lambda m: m["config"]["base_model"]["decoder"]["block"]["mixer"].update(flux_capacitor=3))


def yaml_config_not_a_mapping(src: Path) -> None:
    """config is a list instead of a mapping (found by tests/test_fuzz_readers.py)."""
    edit_yaml(src / "metadata.yaml", lambda m: m.update(config=[1]))


def state_index_names_missing_file(src: Path) -> None:
    edit_yaml(src / "metadata.yaml",
              lambda m: m["metadata"]["state_index"].update({"head.final_norm.weight/weights": "model_1.safetensors"}))


# --- 21: pickle ---

class Trap:
    """Pickles as a call to os.system: unpickling it creates the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_pickle_trap(file: Path, marker: Path) -> None:
    torch.save({NORM: torch.ones(64), "trap": Trap(marker)}, file)


def pytorch_bin_instead_of_safetensors(src: Path) -> None:
    """config.json with a pytorch_model.bin whose unpickling would create UNPICKLED; no safetensors."""
    (src / SINGLE).unlink()
    write_pickle_trap(src / "pytorch_model.bin", src.parent / "UNPICKLED")


def only_pytorch_bin(src: Path) -> None:
    """Nothing but a pytorch_model.bin (no config.json either)."""
    for file in src.iterdir():
        file.unlink()
    write_pickle_trap(src / "pytorch_model.bin", src.parent / "UNPICKLED")


# --- 22: the destination exists ---

def destination_exists(src: Path) -> None:
    out = src.parent / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results, not to be lost\n")
    (out / "metadata.yaml").write_text("not: touched\n")


# --- round two (issue 23): hostile and odd inputs that once gave a traceback, a hang or a wrong model ---

BAIT = "x.safetensors"  # a valid safetensors file outside the checkpoint folder, which no path may reach


def carried_tensors_named(names: Callable[[Path], list[str]]) -> Callable[[Path], None]:
    """metadata.weightport.carried_tensors lists files outside hf_files/, where a valid safetensors file lies."""
    def damage(src: Path) -> None:
        shutil.copyfile(src / "model_0.safetensors", src.parent / BAIT)
        edit_yaml(src / "metadata.yaml", lambda m: m["metadata"]["weightport"].update(carried_tensors=names(src)))
    return damage


def header_names_a_tensor_twice(src: Path) -> None:
    """The header lists model.norm.weight a second time, identically (JSON keeps the last silently)."""
    header, data = read_raw(src / SINGLE)
    text = json.dumps(header)
    entry = json.dumps(header[NORM])
    write_raw(src / SINGLE, text[:-1].encode() + f', "{NORM}": {entry}}}'.encode(), data)


def index_beside_a_stale_single_file(src: Path) -> None:
    """A model.safetensors (of another seed) beside the sharded weights and their index: transformers loads it."""
    synth.write_hf(src.parent / "stale", synth.tiny_llama(), seed=1)
    shutil.copyfile(src.parent / "stale" / SINGLE, src / SINGLE)


def set_config(**values: object) -> Callable[[Path], None]:
    return lambda src: edit_json(src / "config.json", lambda c: c.update(values))


def transformers4_rope_scaling(value: object) -> Callable[[Path], None]:
    def change(config: dict) -> None:
        del config["rope_parameters"]
        config.update(rope_theta=500000.0, rope_scaling=value)
    return lambda src: edit_json(src / "config.json", change)


def config_integer_of_digits(digits: int) -> Callable[[Path], None]:
    def damage(src: Path) -> None:
        text = (src / "config.json").read_text()
        (src / "config.json").write_text(text.replace('"vocab_size": 256', '"vocab_size": 1' + "0" * (digits - 1)))
    return damage


def set_num_blocks(value: object) -> Callable[[Path], None]:
    return lambda src: edit_yaml(src / "metadata.yaml",
                                 lambda m: m["config"]["base_model"]["decoder"].update(num_blocks=value))


def yaml_alias_bomb(src: Path) -> None:
    """metadata.weightport.hf_config holds 9 levels of 9 aliases: 387 million values once expanded, 1 kB on disk."""
    edit_yaml(src / "metadata.yaml", lambda m: m["metadata"]["weightport"].update(hf_config="BOMB"))
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = (src / "metadata.yaml").read_text()
    assert "hf_config: BOMB" in text
    (src / "metadata.yaml").write_text(text.replace("hf_config: BOMB", "hf_config: {" + ", ".join(levels) + "}"))


def unrecorded_with_blocks(count: int) -> Callable[[Path], None]:
    """A native checkpoint as Fast-LLM saves it (no metadata.weightport), with `count` blocks."""
    def change(meta: dict) -> None:
        meta["config"]["base_model"]["decoder"]["num_blocks"] = count
        del meta["metadata"]["weightport"]
    return lambda src: edit_yaml(src / "metadata.yaml", change)


def set_weightport(**values: object) -> Callable[[Path], None]:
    return lambda src: edit_yaml(src / "metadata.yaml", lambda m: m["metadata"]["weightport"].update(values))


def tied_with_another_lm_head(src: Path) -> None:
    """config.json ties the output to the embedding, but the files keep an lm_head.weight that differs from it."""
    edit_json(src / "config.json", lambda c: c.update(tie_word_embeddings=True))


def remove_folder(src: Path) -> None:
    shutil.rmtree(src)


def add_notes(src: Path) -> None:
    (src / "notes.txt").write_text("not a checkpoint\n")


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    source: str  # "hf" (one safetensors file), "sharded" (3 shards and an index) or "native"
    damage: Callable[[Path], None] | None
    says: tuple[str, ...]  # distinctive parts of the message
    options: tuple[str, ...] = ()
    code: int = 1
    never_created: str | None = None  # a file (beside the source folder) that must not appear
    command: str = "convert"  # or check, plan, inspect (which take no destination)
    src_suffix: str = ""  # appended to the source folder's path: a file inside it, a mistyped name
    dst_name: str = "out"


CASES: dict[str, Case] = {
    # 1-7
    "truncated_file": Case("hf", truncate_file, (SINGLE, "truncated", "re-download")),
    "header_length_past_end": Case("hf", header_length_past_end, (SINGLE, "header length")),
    "header_not_json": Case("hf", header_not_json, (SINGLE, "JSON")),
    "offsets_out_of_range": Case("hf", offsets_out_of_range, (SINGLE, f"'{NORM}'", "data_offsets", "out of range")),
    "overlapping_offsets": Case("hf", overlapping_offsets, (SINGLE, f"'{K}'", f"'{V}'", "overlap")),
    "shape_disagrees_with_bytes": Case("hf", shape_disagrees_with_bytes, (SINGLE, f"'{NORM}'", "[65]", "260")),
    "unknown_dtype": Case("hf", unknown_dtype, (SINGLE, f"'{NORM}'", "Q4_K")),
    "dtype_not_a_string": Case("hf", dtype_not_a_string, (SINGLE, f"'{NORM}'", "dtype")),
    # 8-11
    "index_names_missing_shard": Case("sharded", index_names_missing_shard, (INDEX, SHARDS[1], "missing")),
    "index_names_outside_path": Case("sharded", index_names_outside_path, (INDEX, "../x.safetensors", "outside")),
    "same_tensor_in_two_shards": Case("sharded", same_tensor_in_two_shards,
                                      ("'model.embed_tokens.weight'", SHARDS[0], SHARDS[1])),
    "index_maps_tensor_to_wrong_shard": Case("sharded", index_maps_tensor_to_wrong_shard,
                                             (INDEX, f"'{NORM}'", SHARDS[0], "not in that file")),
    # 12-14 (missing, extra, mis-shaped tensor) are in tests/test_cli.py
    # 15-17
    "config_not_json": Case("hf", config_not_json, ("config.json", "JSON")),
    "config_unknown_nested_key": Case("hf", config_unknown_nested_key, ("'rope_parameters.warp_factor'",)),
    "config_contradicts_shapes": Case("hf", config_contradicts_shapes,
                                      ("model.layers.0.mlp.up_proj.weight", "[128, 64]", "[96, 64]")),
    # 18-20
    "yaml_unsafe_tag": Case("native", yaml_unsafe_tag, ("metadata.yaml", "python/object/apply:os.system"),
                            never_created="PWNED"),
    "yaml_unknown_architecture_field": Case("native", yaml_unknown_architecture_field,
                                            ("decoder.block.mixer.flux_capacitor",)),
    "yaml_config_not_a_mapping": Case("native", yaml_config_not_a_mapping, ("metadata.yaml", "config")),
    "state_index_names_missing_file": Case("native", state_index_names_missing_file, ("model_1.safetensors",)),
    # 21
    "pytorch_bin_instead_of_safetensors": Case("hf", pytorch_bin_instead_of_safetensors,
                                               ("pytorch_model.bin", "pickle", "safetensors"),
                                               never_created="UNPICKLED"),
    "only_pytorch_bin": Case("hf", only_pytorch_bin, ("pytorch_model.bin", "pickle"), never_created="UNPICKLED"),
    # 22
    "destination_exists": Case("hf", destination_exists, ("already exists", "--overwrite")),
    # 23
    "unknown_option": Case("hf", None, ("--frobnicate",), options=("--frobnicate",), code=2),
    "bad_dtype": Case("hf", None, ("--dtype", "int8"), options=("--dtype", "int8"), code=2),
    "bad_max_shard_size": Case("hf", None, ("--max-shard-size", "lots"), options=("--max-shard-size", "lots"),
                               code=2),
    # --- round two (issue 23) ---
    # 1: paths that metadata names stay inside the checkpoint
    "carried_tensors_relative_escape": Case("native", carried_tensors_named(lambda src: [f"../../{BAIT}"]),
                                            ("metadata.weightport.carried_tensors", f"'../../{BAIT}'", "inside")),
    "carried_tensors_absolute_path": Case("native", carried_tensors_named(lambda src: [str(src.parent / BAIT)]),
                                          ("metadata.weightport.carried_tensors", BAIT, "inside")),
    # 2-3: safetensors files the reference reader refuses, folders transformers reads otherwise
    "header_names_a_tensor_twice": Case("hf", header_names_a_tensor_twice, (SINGLE, f"'{NORM}'", "twice")),
    "index_beside_a_stale_single_file": Case("sharded", index_beside_a_stale_single_file,
                                             (SINGLE, INDEX, "remove the stale")),
    # 4: rotary settings that are not a mapping (transformers refuses them; the default rotary is another model)
    "rope_parameters_a_list": Case("hf", set_config(rope_parameters=[1, 2]), ("rope_parameters = [1, 2]", "mapping")),
    "rope_parameters_a_string": Case("hf", set_config(rope_parameters="abc"), ("rope_parameters = 'abc'", "mapping")),
    "rope_parameters_a_number": Case("hf", set_config(rope_parameters=7), ("rope_parameters = 7", "mapping")),
    "rope_scaling_a_list": Case("hf", transformers4_rope_scaling([1, 2]), ("rope_scaling", "[1, 2]")),
    "rope_scaling_a_string": Case("hf", transformers4_rope_scaling("abc"), ("rope_scaling", "'abc'")),
    # 8-9: counts no file can hold, and numbers Python will not read
    "num_hidden_layers_negative": Case("hf", set_config(num_hidden_layers=-1), ("num_hidden_layers = -1",)),
    "num_hidden_layers_of_401_digits": Case("hf", set_config(num_hidden_layers=10**400),
                                            ("num_hidden_layers = a 401-digit number",)),
    "num_hidden_layers_a_billion": Case("hf", set_config(num_hidden_layers=10**9),
                                        ("num_hidden_layers = 1000000000", "at most")),
    "num_hidden_layers_a_million": Case("hf", set_config(num_hidden_layers=10**6),
                                        ("num_hidden_layers = 1000000", "at most")),
    "num_hidden_layers_beyond_the_files": Case("hf", set_config(num_hidden_layers=5000),
                                               ("5,000 blocks", "only 21 tensors")),
    "native_num_blocks_negative": Case("native", set_num_blocks(-1), ("decoder.num_blocks = -1",)),
    "native_num_blocks_a_million": Case("native", set_num_blocks(10**6), ("decoder.num_blocks = 1000000",)),
    "native_num_blocks_of_401_digits": Case("native", set_num_blocks(10**400),
                                            ("decoder.num_blocks = a 401-digit number",)),
    "native_blocks_beyond_the_files_inspect": Case("native", unrecorded_with_blocks(100_000),
                                                   ("100,000 blocks", "only 17 tensors"), command="inspect"),
    "native_blocks_beyond_the_files_convert": Case("native", unrecorded_with_blocks(100_000),
                                                   ("100,000 blocks", "only 17 tensors")),
    "config_integer_of_4400_digits": Case("hf", config_integer_of_digits(4400), ("config.json", "4300 digits")),
    "config_integer_of_4400_digits_check": Case("hf", config_integer_of_digits(4400), ("config.json", "4300 digits"),
                                                command="check"),
    "config_integer_of_4400_digits_inspect": Case("hf", config_integer_of_digits(4400),
                                                  ("config.json", "4300 digits"), command="inspect"),
    # 10-11: metadata.yaml as an attacker writes it
    "yaml_alias_bomb_in_the_recorded_config": Case("native", yaml_alias_bomb, ("metadata.yaml", "aliases")),
    "weightport_format_a_number": Case("native", set_weightport(format=7), ("metadata.weightport.format", "7")),
    "weightport_format_unknown": Case("native", set_weightport(format="gpt5"),
                                      ("metadata.weightport.format = 'gpt5'", "not a format")),
    "weightport_hf_config_a_list": Case("native", set_weightport(hf_config=[1, 2]),
                                        ("metadata.weightport.hf_config", "[1, 2]")),
    "weightport_hf_layout_a_number": Case("native", set_weightport(hf_layout=3), ("metadata.weightport.hf_layout",)),
    "weightport_hf_layout_unknown": Case("native", set_weightport(hf_layout="transformers9"),
                                         ("metadata.weightport.hf_layout = 'transformers9'",)),
    "weightport_carried_tensors_a_string": Case("native", set_weightport(carried_tensors="carried.safetensors"),
                                                ("metadata.weightport.carried_tensors",)),
    # 13: a destination name the file system cannot hold
    "destination_name_of_256_bytes": Case("hf", None, ("more than the file system allows", "shorter"),
                                          dst_name="d" * 256),
    # 17: check gives convert's verdict on a tied copy that differs
    "check_of_a_tied_copy_that_differs": Case("hf", tied_with_another_lm_head,
                                              ("lm_head.weight differs from model.embed_tokens.weight",),
                                              command="check"),
    # 18: a model type no format reads, with and without --format
    "unsupported_model_type": Case("hf", set_config(model_type="gpt2"), ("'gpt2'", "does not convert", "llama")),
    "unsupported_model_type_with_format": Case("hf", set_config(model_type="gpt2"),
                                               ("'gpt2'", "does not convert", "--format cannot help"),
                                               options=("--format", "llama")),
    # 19: a mistyped source, a file given for the folder
    "source_does_not_exist": Case("hf", remove_folder, ("does not exist", "check the path")),
    "source_does_not_exist_check": Case("hf", remove_folder, ("does not exist",), command="check"),
    "source_does_not_exist_inspect": Case("hf", remove_folder, ("does not exist",), command="inspect"),
    "source_is_a_file": Case("hf", None, ("config.json is a file of a checkpoint, not a folder",
                                          "point to the folder that holds it"), src_suffix="/config.json"),
    "source_is_a_file_plan": Case("hf", None, ("not a folder",), src_suffix="/model.safetensors", command="plan"),
    "source_is_another_file": Case("hf", add_notes, ("notes.txt is not a folder", "point to a checkpoint folder"),
                                   src_suffix="/notes.txt"),
    "origin_does_not_exist": Case("native", None, ("--origin", "does not exist"),
                                  options=("--origin", "/nonexistent/weightport-origin")),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Valid checkpoints to copy and break: an HF folder with one file, one with 3 shards, and a native folder."""
    root = tmp_path_factory.mktemp("sources")
    hf = synth.write_hf(root / "hf", synth.tiny_llama(), seed=0)
    sharded = synth.write_hf(root / "sharded", synth.tiny_llama(), seed=0, max_shard_size=150_000)
    assert sorted(p.name for p in sharded.glob("*.safetensors")) == SHARDS
    weightport.convert(hf, root / "native")
    return {"hf": hf, "sharded": sharded, "native": root / "native"}


@pytest.fixture(scope="module")
def outcomes(sources, tmp_path_factory) -> dict[str, tuple]:
    """Per case: (completed `weightport convert` process, its destination, the destination's state before)."""
    root = tmp_path_factory.mktemp("cases")
    jobs = {}
    for name, case in CASES.items():
        src = root / name / "src"
        shutil.copytree(sources[case.source], src)
        if case.damage is not None:
            case.damage(src)
        dst = src.parent / case.dst_name
        given = Path(f"{src}{case.src_suffix}")
        args = [case.command, given, *([dst] if case.command == "convert" else []), *case.options]
        jobs[name] = (args, dst, snapshot(dst) if len(case.dst_name) < 255 else None)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        runs = {name: pool.submit(cli, *args, check=False) for name, (args, _, _) in jobs.items()}
        return {name: (runs[name].result(), dst, before) for name, (_, dst, before) in jobs.items()}


def _param(name: str):
    return pytest.param(name, id=name)


@pytest.mark.parametrize("name", [_param(name) for name in CASES])
def test_bad_input_fails_closed(name, outcomes):
    case = CASES[name]
    result, dst, before = outcomes[name]
    assert_fails_closed(result, dst, before, code=case.code, says=case.says)
    if case.never_created:
        assert not (dst.parent / case.never_created).exists(), "the payload ran"


def test_the_traps_are_live(tmp_path):
    """The pickle and YAML payloads above really run when loaded unsafely, so their absence means something."""
    write_pickle_trap(tmp_path / "pytorch_model.bin", tmp_path / "UNPICKLED")
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert (tmp_path / "UNPICKLED").exists()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "metadata.yaml").write_text("config: {}\n")
    yaml_unsafe_tag(tmp_path / "src")
    yaml.unsafe_load((tmp_path / "src" / "metadata.yaml").read_text())
    assert (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------------------------
# 24-26: failures after part of the output is written, at points the test controls (no race): a source tensor that
# can no longer be read, a write the file system refuses, a SIGKILL. The destination never shows a partial checkpoint:
# it is absent or, with --overwrite, exactly as it was; the temporary folder is removed, or after a kill removed by
# the next run.

REFERENCE_OPTIONS = ("--max-shard-size", "200KB")  # several output files, each far below FILE_LIMIT
TOKENIZER_BYTES = 2_000_000  # a carried file, copied once every tensor is written
FILE_LIMIT = 1_000_000  # RLIMIT_FSIZE: larger than every output file but the tokenizer


def existing_destination(dst: Path, existing: bool) -> dict[str, bytes] | None:
    """With `existing`, an earlier output at `dst` (which --overwrite would replace); its snapshot."""
    if existing:
        destination_exists(dst.parent / "src")
    return snapshot(dst)


def assert_unchanged(dst: Path, before: dict | None) -> None:
    if snapshot(dst) != before:
        raise LeftOutput(f"{dst} changed: before {before and sorted(before)}, after {sorted(snapshot(dst) or [])}")


def tensors_written(dst: Path, reference: dict[str, torch.Tensor]) -> set[str]:
    """The output tensors already in the files being written, in `dst` or its temporary folders: those equal to the
    finished conversion's (`reference`)."""
    written = {}
    for folder in [dst, *dst.parent.glob(f".{dst.name}.tmp-*")]:
        written |= tensors(folder) if folder.is_dir() else {}
    return {name for name, tensor in written.items() if name in reference and torch.equal(tensor, reference[name])}


@pytest.fixture(scope="module")
def reference(sources) -> dict[str, torch.Tensor]:
    """The native tensors of `sources["sharded"]` (the same model as `sources["hf"]`)."""
    return tensors(sources["native"])


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_a_tensor_unreadable_after_others_were_written_leaves_nothing(sources, reference, tmp_path, existing):
    """Once every step but the last is written, the source file loses the bytes of the last step's tensor (a byte
    move, read through the file, not a map): its read fails and the written steps are discarded."""
    src, dst = tmp_path / "src", tmp_path / "out"
    shutil.copytree(sources["sharded"], src)
    before = existing_destination(dst, existing)
    plan = weightport.plan(src)
    last = plan.steps[-1]
    assert runtime.moves(last, plan.direction) is not None
    info = read_checkpoint(src)[last.src[0].name]
    done, written = [], set()

    def progress(step) -> None:
        done.append(step)
        if len(done) == len(plan.steps) - 1:
            written.update(tensors_written(dst, reference))
            os.truncate(info.file, info.start)

    ends = rf"{info.file.name}: tensor '{last.src[0].name}' ends past the end of the file; re-download it"
    with pytest.raises(FormatError, match=ends):
        weightport.convert(src, dst, workers=1, overwrite=existing, progress=progress)
    assert written == {ref.name for step in done for ref in step.dst}  # all but the last step were in the files
    assert_unchanged(dst, before)
    if leftovers(dst):
        raise LeftOutput(f"temporary folders left beside {dst}: {leftovers(dst)}")


@pytest.fixture(scope="module")
def with_tokenizer(sources, tmp_path_factory) -> dict[str, tuple[Path, dict[str, int]]]:
    """The sharded HF source with a large tokenizer.json, and its native conversion (which carries it); each with
    the size of every file its conversion writes (without a limit)."""
    root = tmp_path_factory.mktemp("with_tokenizer")
    hf = root / "hf"
    shutil.copytree(sources["sharded"], hf)
    (hf / "tokenizer.json").write_text(json.dumps({"vocab": "x" * TOKENIZER_BYTES}))
    weightport.convert(hf, root / "native")
    out = {}
    for side in ("hf", "native"):
        cli("convert", root / side, root / f"{side}_converted", *REFERENCE_OPTIONS)
        out[side] = root / side, {p.name: p.stat().st_size for p in (root / f"{side}_converted").rglob("*")
                                  if p.is_file()}
    return out


def limit_file_size() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("side", ["hf", "native"], ids=["hf_to_native", "native_to_hf"])
def test_a_write_refused_after_every_tensor_was_written_leaves_nothing(with_tokenizer, tmp_path, side, existing):
    """The command runs under a file size limit that every output file but the carried tokenizer.json fits in, so
    the shards are all written before the file system refuses (EFBIG, as a full disk refuses with ENOSPC) to copy
    the tokenizer; the command reports it as an error on the output and leaves nothing."""
    (src, sizes), dst = with_tokenizer[side], tmp_path / "out"
    assert max(size for name, size in sizes.items() if name != "tokenizer.json") < FILE_LIMIT
    assert sizes["tokenizer.json"] > FILE_LIMIT and sum(name.endswith(".safetensors") for name in sizes) > 2
    before = existing_destination(dst, existing)
    command = [sys.executable, "-m", "weightport", "convert", src, dst, *REFERENCE_OPTIONS]
    result = subprocess.run(list(map(str, command + ["--overwrite"] * existing)), capture_output=True, text=True,
                            timeout=600, preexec_fn=limit_file_size)
    assert_fails_closed(result, dst, before, code=1, says=("tokenizer.json", "File too large"))


# Kill the process (SIGKILL: no handler runs) once `at` steps are written, one step at a time.
KILL_AT = """
import os, signal, sys, weightport
src, dst, at, overwrite = sys.argv[1:]
done = []
def progress(step):
    done.append(step)
    if len(done) == int(at):
        os.kill(os.getpid(), signal.SIGKILL)
weightport.convert(src, dst, workers=1, overwrite=overwrite == "overwrite", progress=progress)
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_a_conversion_killed_half_way_leaves_nothing_and_a_rerun_cleans_up(sources, reference, tmp_path,
                                                                          existing):
    src, dst = sources["sharded"], tmp_path / "out"
    before = existing_destination(dst, existing)
    steps = weightport.plan(src).steps
    at = len(steps) // 2
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(src), str(dst), str(at), "overwrite" * existing],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_unchanged(dst, before)
    assert len(leftovers(dst)) == 1  # the killed run could not remove its temporary folder
    assert tensors_written(dst, reference) == {ref.name for step in steps[:at] for ref in step.dst}
    rerun = cli("convert", src, dst, *["--overwrite"] * existing)
    assert "wrote" in rerun.stdout
    assert tensors_written(dst, reference) == set(reference) and (dst / "metadata.yaml").is_file()
    if leftovers(dst):
        raise LeftOutput(f"temporary folders left beside {dst}: {leftovers(dst)}")
