"""Checkpoints written by real Fast-LLM training runs (2 steps of a tiny Llama on CPU, `train_tiny.py`):

- the main loop of a Fast-LLM user: import an HF model with weightport, train from it in Fast-LLM, export the trained
  checkpoint with weightport naming the HF model it started from: the same config.json and tokenizer files, a model
  transformers loads, and the tensors Fast-LLM's own export writes;
- every training variant (non-architecture settings, data/pipeline/tensor parallel, tied embeddings across
  pipeline ranks, frozen weights), with optimizer state: converted to HF bit for bit as Fast-LLM's own export of the
  same checkpoint, and the `distributed` checkpoint after Fast-LLM's own conversion to `fast_llm` too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import weightport
from helpers import FAST_LLM_NO_DTYPE, assert_same_config, assert_same_tensors, hf_config, native_meta, tensors
from oracle import convert_all, export_args, needs_fastllm, train

transformers = pytest.importorskip("transformers")
pytestmark = needs_fastllm

VARIANTS = ("rich", "pp2", "pp2tied", "dp2", "frozen", "tp2")
VOCAB = 128


def write_hf_llama(folder: Path) -> None:
    """A tiny transformers Llama (the shape train_tiny.py trains) with a tokenizer and a generation config."""
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="w1", eos_token="w2",
                                         unk_token="w0").save_pretrained(folder)


@pytest.fixture(scope="module")
def main_loop(tmp_path_factory) -> Path:
    """HF -> native (weightport) -> 2 training steps from it (Fast-LLM) -> Fast-LLM's own export of the result."""
    root = tmp_path_factory.mktemp("main_loop")
    write_hf_llama(root / "hf")
    weightport.convert(root / "hf", root / "native")
    trained = train(f"pretrained:{root / 'native'}", root / "run")
    (root / "trained").symlink_to(trained)
    results = convert_all({"export": export_args(trained, root / "fast_llm_export", "llama")}, root)
    assert results["export"] is None, results["export"]
    return root


def test_trained_checkpoint_records_no_hf_model(main_loop):
    """Why `origin` exists: Fast-LLM drops weightport's metadata when it saves."""
    assert "weightport" not in native_meta(main_loop / "trained")["metadata"]


@pytest.mark.parametrize("origin", ["hf", "native"])
def test_export_naming_the_origin_gives_back_the_hf_model(main_loop, origin, tmp_path):
    plan = weightport.convert(main_loop / "trained", tmp_path / "out", origin=main_loop / origin)
    assert not [note for note in plan.notes if "not restored" in note]
    assert hf_config(tmp_path / "out") == hf_config(main_loop / "hf")  # training changed no key of it
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (main_loop / "hf" / name).read_bytes(), name
    ours = tensors(tmp_path / "out")
    assert_same_tensors(ours, tensors(main_loop / "fast_llm_export"))  # what Fast-LLM's own export holds
    before = tensors(main_loop / "hf")
    assert any(not torch.equal(ours[name], before[name]) for name in before), "training changed no weight"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        logits = model(**tokenizer("w5 w6 w7", return_tensors="pt")).logits
    assert logits.shape == (1, 3, VOCAB) and torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    """Each variant trained, exported to HF by Fast-LLM, and (rich) its distributed checkpoint converted by
    Fast-LLM to fast_llm."""
    root = tmp_path_factory.mktemp("variants")
    jobs = {}
    for variant in VARIANTS:
        trained = train(variant, root / variant)
        (root / variant / "trained").symlink_to(trained)
        jobs[variant] = export_args(trained, root / variant / "fast_llm_export", "llama")
    jobs["distributed"] = ["gpt", f"input.path={root / 'rich' / 'exp' / 'checkpoint' / '2'}",
                           "input.format=distributed", f"output.path={root / 'rich' / 'from_distributed'}",
                           "output.format=fast_llm", "use_cpu=True"]
    return root, convert_all(jobs, root)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_checkpoint_converts_like_fast_llms_own_export(variants, variant, tmp_path):
    root, results = variants
    assert results[variant] is None, results[variant]
    trained = root / variant / "trained"
    assert weightport.inspect(trained)["other_shards"] == ([] if variant == "frozen" else ["exp_avgs", "exp_avgs_sq"])
    plan = weightport.convert(trained, tmp_path / "hf", format="llama")
    assert any("not converted: exp_avgs, exp_avgs_sq" in note for note in plan.notes) or variant == "frozen"
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(root / variant / "fast_llm_export"))
    # config.json key for key: the checkpoint records no HF model, so both exports write LlamaConfig's keys
    assert_same_config(hf_config(tmp_path / "hf"), hf_config(root / variant / "fast_llm_export"), FAST_LLM_NO_DTYPE)


def test_distributed_checkpoint_after_fast_llms_conversion(variants, tmp_path):
    root, results = variants
    assert results["distributed"] is None, results["distributed"]
    with pytest.raises(weightport.WeightportError, match="input.format=distributed"):
        weightport.plan(root / "rich" / "exp" / "checkpoint" / "2", format="llama")
    weightport.convert(root / "rich" / "from_distributed", tmp_path / "hf", format="llama")
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(root / "rich" / "fast_llm_export"))


def test_a_verbose_config_dump_describes_the_same_model(variants, tmp_path):
    """Fast-LLM's verbose dump (`config_verbose.yaml`: every field, `type: null` on classes without types) as the
    config of the trained checkpoint: weightport reads it as the same model and converts it the same way."""
    root, _ = variants
    verbose = yaml.safe_load((root / "rich" / "exp" / "config_verbose.yaml").read_text())["model"]["base_model"]
    shutil.copytree(root / "rich" / "trained", tmp_path / "native")
    meta = native_meta(tmp_path / "native")
    assert verbose != meta["config"]["base_model"]
    meta["config"]["base_model"] = verbose
    (tmp_path / "native" / "metadata.yaml").write_text(yaml.safe_dump(meta))
    weightport.convert(tmp_path / "native", tmp_path / "hf", format="llama")
    weightport.convert(root / "rich" / "trained", tmp_path / "reference", format="llama")
    assert hf_config(tmp_path / "hf") == hf_config(tmp_path / "reference")
    assert_same_tensors(tensors(tmp_path / "hf"), tensors(tmp_path / "reference"))
