"""Synthetic checkpoints: random HF weights of exactly the names and shapes a family implies for a config.

Used by `weightport demo`, the tests and the benchmarks; the tensors come from the same rules as a conversion,
so a new family gets synthetic checkpoints for free.
"""

from __future__ import annotations

from pathlib import Path

from weightport import families
from weightport.api import import_config
from weightport.core import dtypes
from weightport.core.plan import Ref, build
from weightport.core.weights import walk
from weightport.io import hf_config, safetensors
from weightport.io.atomic import atomic_output
from weightport.native.model import parameters


def hf_tensors(config: dict, format: str | None = None) -> list[Ref]:
    """The HF tensors (name, shape) a checkpoint with this config.json holds, in checkpoint order."""
    spec = families.load(format or families.detect(config))
    native = import_config(spec, config)[1]
    inventory = parameters(native)
    sources = {name: Ref(name, shape, "F32") for name, shape in inventory.items()}
    plan = build(spec.name, "to_hf", walk(spec.weights, native), inventory, sources, None, {})
    return [ref for step in plan.steps for ref in step.dst]


def write_hf(folder: str | Path, config: dict, *, dtype: str = "F32", seed: int = 0, std: float = 0.05,
             max_shard_size: int | None = None, format: str | None = None, overwrite: bool = False) -> Path:
    """Write an HF checkpoint folder with `config` and seeded random N(0, std) weights; returns the folder."""
    import torch

    refs = hf_tensors(config, format)
    generator = torch.Generator().manual_seed(seed)
    outputs = [safetensors.OutputTensor(r.name, dtype, r.shape) for r in refs]
    with atomic_output(Path(folder), overwrite=overwrite) as tmp:
        with safetensors.ShardedWriter(tmp, outputs, max_shard_bytes=max_shard_size,
                                       shard_names=safetensors.hf_shard_names, metadata={"format": "pt"}) as writer:
            for ref in refs:
                tensor = (torch.randn(ref.shape, generator=generator) * std).to(getattr(torch, dtypes.TORCH[dtype]))
                writer.write(ref.name, tensor.view(torch.uint8).numpy())
            writer.close()
        safetensors.write_hf_index(tmp, writer)
        hf_config.write_config(tmp / "config.json", config)
    return Path(folder)


def tiny_llama(**overrides: object) -> dict:
    """A tiny Llama config.json (transformers 5 layout)."""
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "bos_token_id": 1, "eos_token_id": 2,
        "dtype": "float32",
    }
    config.update(overrides)
    return config
