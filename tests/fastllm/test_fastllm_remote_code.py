"""Exports of remote-code formats load in transformers with Fast-LLM's own modeling files.

The modeling files come from the Fast-LLM archive beside this project (`../shared/fastllm/Fast-LLM-*.tar.gz`,
`fast_llm_external_models/<folder>`), named with `modeling_code=`. Loading them needs transformers as Fast-LLM pins
it (5.14: transformers 5.24 no longer has `transformers.modeling_attn_mask_utils`, which `modeling_mtp_llama.py`
imports, and changed the rotary API `modeling_apriel2.py` calls), so the models load under the Fast-LLM oracle's
Python, without Fast-LLM on the path. Tests skip, saying why, where the archive or the oracle is missing.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

import weightport
from helpers import native_meta
from oracle import WRAPPER, missing, plain_python
from weightport import families, synth
from weightport.errors import FormatError
from weightport.io import remote_code

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hf_configs"
ARCHIVES = sorted(WRAPPER.parent.glob("Fast-LLM-*.tar.gz"))
LOGITS = Path(__file__).parent / "remote_code_logits.py"

# Each remote-code format's folder in fast_llm_external_models/, and why it cannot run here where it cannot.
FOLDERS = {"mtp_llama": "mtp_llama", "apriel_hybrid_ssm": "apriel_hybrid_ssm", "apriel2_text": "apriel2",
           "apriel2": "apriel2", "llava_hybrid_ssm": "llava_hybrid"}
NOT_ON_CPU = {
    "apriel_hybrid_ssm": "modeling_apriel_hybrid_ssm.py imports causal_conv1d and mamba_ssm (CUDA kernels) and "
                         "fla unconditionally, and the fast_llm_external_models package by absolute import",
    "llava_hybrid_ssm": "modeling_llava_hybrid.py imports modeling_apriel_hybrid_ssm.py (causal_conv1d, mamba_ssm), "
                        "which Fast-LLM's llava_hybrid folder does not hold",
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def on_cpu(name: str) -> dict:
    """The format's fixture config.json with only what Fast-LLM's modeling files run on CPU: no Mamba (causal_conv1d),
    GDN or KDA (fla) mixers, rotary types the HF class knows (not yarn), a stochastic mixer sampled uniformly (the
    HF class needs `sampling_weights` for `weighted`, which native configs do not keep)."""
    config = fixture(name)
    if name in ("apriel2_text", "apriel2"):
        blocks = config["decoder"]["blocks"]
        for kind in ("mamba", "gdn", "kda"):
            blocks.pop(kind, None)
        if "stochastic" in blocks:
            mixer = blocks["stochastic"]["mixer"]
            mixer["mixers"] = {k: v for k, v in mixer["mixers"].items() if k in blocks}
            mixer.pop("sampling_strategy")
        blocks["attn"]["mixer"]["rotary"] = {"theta": 10000.0, "type": "mistral_1d"}
        config["decoder"]["pattern"] = list(blocks)
        config["decoder"]["num_blocks"] = len(blocks)
    return config


def remote_formats() -> list[str]:
    return [name for name in families.FAMILIES if "auto_map" in fixture(name)]


def test_every_remote_code_format_has_its_folder():
    assert sorted(remote_formats()) == sorted(FOLDERS)


@pytest.fixture(scope="module")
def external_models(tmp_path_factory) -> Path:
    """`fast_llm_external_models/` extracted from the Fast-LLM archive."""
    if not ARCHIVES:
        pytest.skip(f"the Fast-LLM archive is not here ({WRAPPER.parent}/Fast-LLM-*.tar.gz)")
    root = tmp_path_factory.mktemp("fast_llm_source")
    with tarfile.open(ARCHIVES[-1]) as archive:
        members = [m for m in archive.getmembers() if "/fast_llm_external_models/" in m.name]
        archive.extractall(root, members=members, filter="data")
    return next(root.glob("*/fast_llm_external_models"))


def native(name: str, folder: Path, config: dict | None = None) -> Path:
    """A tiny native checkpoint of format `name` (imported from a random HF one in `folder/hf`)."""
    hf = synth.write_hf(folder / "hf", config or fixture(name), format=name, seed=1)
    weightport.convert(hf, folder / "native")
    return folder / "native"


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_the_archive_holds_the_modeling_files_each_format_names(name, external_models, tmp_path):
    source = native(name, tmp_path)
    code = external_models / FOLDERS[name]
    if name == "llava_hybrid_ssm":  # its modeling file imports modeling_apriel_hybrid_ssm.py, kept in another folder
        with pytest.raises(FormatError, match=rf"{code} lacks modeling_apriel_hybrid_ssm.py"):
            weightport.convert(source, tmp_path / "out", modeling_code=code)
        return
    plan = weightport.convert(source, tmp_path / "out", modeling_code=code)
    wanted = remote_code.modules(plan.config)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.py")) == sorted(wanted)
    assert not [n for n in plan.notes if "lacks" in n]


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skip(reason=NOT_ON_CPU[n])) if n in NOT_ON_CPU
                                  else n for n in sorted(FOLDERS)])
def test_exports_load_with_fast_llms_modeling_files_and_give_the_original_logits(name, external_models, tmp_path):
    """The export of a native checkpoint weightport wrote, and of one as Fast-LLM saves it (no weightport metadata,
    so every config.json key comes from the rules), load with `trust_remote_code=True` and give the logits of the
    original HF checkpoint (which has the same modeling files beside it)."""
    code = external_models / FOLDERS[name]
    source = native(name, tmp_path, on_cpu(name))
    weightport.convert(source, tmp_path / "recorded", modeling_code=code)
    saved = tmp_path / "saved_by_fast_llm"
    shutil.copytree(source, saved)
    meta = native_meta(saved)
    del meta["metadata"]["weightport"]
    (saved / "metadata.yaml").write_text(yaml.safe_dump(meta))
    shutil.rmtree(saved / "hf_files", ignore_errors=True)
    weightport.convert(saved, tmp_path / "trained", format=name, modeling_code=code)
    reference = tmp_path / "reference"
    shutil.copytree(tmp_path / "hf", reference)
    for file in remote_code.needed(remote_code.python_files(code), remote_code.modules(fixture(name)))[0]:
        shutil.copy(file, reference)

    auto = "AutoModelForCausalLM"
    result = plain_python(LOGITS, auto, reference, tmp_path / "recorded", tmp_path / "trained",
                          modules_cache=tmp_path / "modules")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(report["classes"].values())) == 1, report["classes"]
    assert report["max_abs_diff"] == {str(tmp_path / "recorded"): 0.0, str(tmp_path / "trained"): 0.0}, report
