"""Formats whose HF classes are remote code (config.json `auto_map`): their modeling files travel with the
checkpoint, come from a folder the user names (`modeling_code=`, `--modeling-code`), or a note says how to add them.

Here the modeling files are stand-ins; tests/fastllm/test_fastllm_remote_code.py loads exports with Fast-LLM's real
ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import weightport
from helpers import cli, native_meta
from weightport import synth
from weightport.errors import ConfigError, FormatError, OutputError
from weightport.io import remote_code

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
MODULES = ["configuration_mtp_llama.py", "modeling_mtp_llama.py"]


def modeling_folder(folder: Path, version: str = "new") -> Path:
    """A folder like Fast-LLM's fast_llm_external_models/mtp_llama: the two modules auto_map names, a helper the
    model imports relatively (inside `try:`, which transformers follows too), and what loading does not need."""
    (folder / "tests").mkdir(parents=True)
    (folder / "configuration_mtp_llama.py").write_text(f"VERSION = {version!r}\n")
    (folder / "modeling_mtp_llama.py").write_text(
        f"from .configuration_mtp_llama import VERSION  # {version}\ntry:\n    from .rotary import Rotary\n"
        "except ImportError:\n    Rotary = None\n")
    (folder / "rotary.py").write_text("Rotary = object\n")
    (folder / "__init__.py").write_text("from fast_llm_external_models.mtp_llama import modeling_mtp_llama\n")
    (folder / "convert.py").write_text("import yaml\n")
    (folder / "tests" / "test_modeling.py").write_text("")
    return folder


@pytest.fixture
def hf(tmp_path) -> Path:
    """A tiny mtp_llama HF checkpoint with a tokenizer and no modeling files."""
    folder = synth.write_hf(tmp_path / "hf", json.loads((FIXTURES / "mtp_llama.json").read_text()), seed=2)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    return folder


def lacks_note(plan) -> str | None:
    return next((n for n in plan.notes if "remote code this export lacks" in n), None)


def test_auto_map_modules():
    config = {"auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel",
                           "AutoModelForCausalLM": "modeling_x.XForCausalLM",
                           "AutoTokenizer": ["tokenization_x.XTokenizer", None],
                           "AutoProcessor": "org/repo--processing_x.XProcessor"}}
    assert remote_code.modules(config) == ["configuration_x.py", "modeling_x.py", "tokenization_x.py"]
    assert remote_code.modules({"model_type": "llama"}) == []


@pytest.mark.parametrize("with_origin", [False, True])
def test_modeling_files_travel_through_import_and_export(hf, tmp_path, with_origin):
    modeling_folder(tmp_path / "code", version="original")
    for name in [*MODULES, "rotary.py"]:
        shutil.copy(tmp_path / "code" / name, hf)
    weightport.convert(hf, tmp_path / "native")
    assert sorted(p.name for p in (tmp_path / "native" / "hf_files").iterdir()) == [*MODULES, "rotary.py",
                                                                                     "tokenizer.json"]
    source = tmp_path / "native"
    if with_origin:  # as Fast-LLM saves it: no record of the HF model, the files come from the origin
        source = tmp_path / "trained"
        shutil.copytree(tmp_path / "native", source)
        meta = native_meta(source)
        del meta["metadata"]["weightport"]
        (source / "metadata.yaml").write_text(yaml.safe_dump(meta))
        shutil.rmtree(source / "hf_files")
    plan = weightport.convert(source, tmp_path / "out", origin=hf if with_origin else None)
    for name in [*MODULES, "rotary.py"]:
        assert (tmp_path / "out" / name).read_text() == (hf / name).read_text()
    assert lacks_note(plan) is None


def test_without_modeling_files_the_export_succeeds_and_says_how_to_add_them(hf, tmp_path):
    weightport.convert(hf, tmp_path / "native")
    plan = weightport.convert(tmp_path / "native", tmp_path / "out")
    note = lacks_note(plan)
    assert note is not None and "configuration_mtp_llama.py, modeling_mtp_llama.py" in note
    assert "--modeling-code DIR" in note and "copy them into the output folder" in note
    assert (tmp_path / "out" / "tokenizer.json").is_file() and not list((tmp_path / "out").glob("*.py"))
    # a modeling file carried without the file it imports is not enough either
    (tmp_path / "native" / "hf_files" / "modeling_mtp_llama.py").write_text("from .rotary import Rotary\n")
    (tmp_path / "native" / "hf_files" / "configuration_mtp_llama.py").write_text("")
    assert "lacks: rotary.py;" in lacks_note(weightport.plan(tmp_path / "native"))
    assert lacks_note(weightport.plan(hf)) is None  # imports carry what there is; loading is the export's business


def test_a_named_folder_gives_what_loading_needs_and_wins_over_carried_files(hf, tmp_path):
    code = modeling_folder(tmp_path / "code")
    (hf / "modeling_mtp_llama.py").write_text("OLD = True\n")  # recorded at import, replaced on export
    (hf / "tokenization_mtp_llama.py").write_text("")  # other carried code stays
    weightport.convert(hf, tmp_path / "native")
    plan = weightport.convert(tmp_path / "native", tmp_path / "out", modeling_code=code)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".py", ".json") or p.is_dir()) == [
        "config.json", "configuration_mtp_llama.py", "modeling_mtp_llama.py", "rotary.py", "tokenization_mtp_llama.py",
        "tokenizer.json"]
    assert (out / "modeling_mtp_llama.py").read_text() == (code / "modeling_mtp_llama.py").read_text()
    note = next(n for n in plan.notes if n.startswith("modeling code from"))
    assert note == (f"modeling code from {code}: configuration_mtp_llama.py, modeling_mtp_llama.py, rotary.py "
                    "(in place of the carried modeling_mtp_llama.py)")
    assert lacks_note(plan) is None


def test_a_folder_without_the_modules_is_refused_with_their_names(hf, tmp_path):
    weightport.convert(hf, tmp_path / "native")
    code = modeling_folder(tmp_path / "code")
    (code / "modeling_mtp_llama.py").unlink()
    with pytest.raises(FormatError, match=rf"--modeling-code {code} lacks modeling_mtp_llama.py: config.json's "
                                          r"auto_map names configuration_mtp_llama.py, modeling_mtp_llama.py"):
        weightport.convert(tmp_path / "native", tmp_path / "out", modeling_code=code)
    shutil.rmtree(code)
    modeling_folder(code)
    (code / "rotary.py").unlink()
    with pytest.raises(FormatError, match=rf"{code} lacks rotary.py: .* also loads the files these import"):
        weightport.plan(tmp_path / "native", modeling_code=code)
    with pytest.raises(FormatError, match=r"not a folder"):
        weightport.plan(tmp_path / "native", modeling_code=code / "modeling_mtp_llama.py")
    assert not (tmp_path / "out").exists()


def test_modeling_code_is_refused_where_it_means_nothing(hf, tmp_path):
    code = modeling_folder(tmp_path / "code")
    with pytest.raises(ConfigError, match=r"--modeling-code applies to exports to HF"):
        weightport.convert(hf, tmp_path / "native", modeling_code=code)
    llama = synth.write_hf(tmp_path / "llama", synth.tiny_llama())
    weightport.convert(llama, tmp_path / "llama_native")
    with pytest.raises(ConfigError, match=r"llama needs no remote code \(its config.json has no auto_map\)"):
        weightport.convert(tmp_path / "llama_native", tmp_path / "out", modeling_code=code)


def test_an_output_inside_the_modeling_code_folder_is_refused(hf, tmp_path):
    code = modeling_folder(tmp_path / "code")
    weightport.convert(hf, tmp_path / "native")
    with pytest.raises(OutputError, match=rf"lies inside the input {code}"):
        weightport.convert(tmp_path / "native", code / "out", modeling_code=code)
    with pytest.raises(OutputError, match=rf"is or holds the input {code}"):
        weightport.convert(tmp_path / "native", code, modeling_code=code, overwrite=True)
    assert (code / "modeling_mtp_llama.py").is_file()


def test_cli_modeling_code(hf, tmp_path):
    code = modeling_folder(tmp_path / "code")
    cli("convert", hf, tmp_path / "native")
    check = cli("check", tmp_path / "native")
    assert ("note: config.json's auto_map names remote code this export lacks: configuration_mtp_llama.py"
            in check.stdout)
    plan = cli("plan", tmp_path / "native", "--modeling-code", code)
    assert f"note: modeling code from {code}: configuration_mtp_llama.py" in plan.stdout
    out = cli("convert", tmp_path / "native", tmp_path / "out", "--modeling-code", code)
    assert f"note: modeling code from {code}" in out.stdout and "lacks" not in out.stdout
    assert (tmp_path / "out" / "rotary.py").is_file() and not (tmp_path / "out" / "convert.py").exists()
    (code / "configuration_mtp_llama.py").unlink()
    failed = cli("convert", tmp_path / "native", tmp_path / "out2", "--modeling-code", code, check=False)
    assert failed.returncode == 1 and f"{code} lacks configuration_mtp_llama.py" in failed.stderr
    assert not (tmp_path / "out2").exists()
    assert "--modeling-code DIR" in cli("convert", "--help").stdout
