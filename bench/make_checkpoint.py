"""Write a synthetic HF checkpoint of a given shape for benchmarks: random bf16 weights, sharded with an index.

    python bench/make_checkpoint.py llama-1b OUT
    python bench/make_checkpoint.py mixtral OUT
    python bench/make_checkpoint.py llama-405b OUT --sparse     # headers only, over sparse files

Random data comes from one random block reused at random offsets, so generating gigabytes is fast.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from weightport import synth
from weightport.core.dtypes import raw
from weightport.io import hf_config, safetensors
from weightport.io.atomic import atomic_output

SHAPES = {  # hidden, layers, intermediate, vocab, heads, kv heads, experts
    "llama-1b": (2048, 16, 8192, 128256, 32, 8, 0),
    "llama-8b": (4096, 32, 14336, 128256, 32, 8, 0),
    "llama-405b": (16384, 126, 53248, 128256, 128, 8, 0),
    "mixtral": (1024, 12, 3584, 32000, 8, 2, 8),
}


def config(shape: str) -> dict:
    hidden, layers, intermediate, vocab, heads, kv, experts = SHAPES[shape]
    cfg = synth.tiny_llama(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate,
                           vocab_size=vocab, num_attention_heads=heads, num_key_value_heads=kv,
                           head_dim=hidden // heads, dtype="bfloat16", tie_word_embeddings=shape == "llama-1b")
    if experts:
        for key in ("attention_bias", "mlp_bias"):
            cfg.pop(key)
        cfg |= {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": experts,
                "num_experts_per_tok": 2, "sliding_window": None}
    return cfg


def write(folder: str, cfg: dict, *, shard_size: int, sparse: bool, seed: int = 0) -> int:
    refs = synth.hf_tensors(cfg)
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal(2**25, np.float32) * 0.05).view(np.uint32) >> 16  # bf16 bits
    block = block.astype(raw("BF16"))
    outputs = [safetensors.OutputTensor(r.name, "BF16", r.shape) for r in refs]
    with atomic_output(__import__("pathlib").Path(folder)) as tmp:
        with safetensors.ShardedWriter(tmp, outputs, max_shard_bytes=shard_size,
                                       shard_names=safetensors.hf_shard_names, metadata={"format": "pt"}) as writer:
            for ref in refs if not sparse else ():
                count, at = math.prod(ref.shape), 0
                while at < count:
                    start = int(rng.integers(0, len(block)))
                    piece = block[start : start + min(count - at, len(block) - start)]
                    writer.write(ref.name, piece, at * 2)
                    at += len(piece)
            writer.close(complete=not sparse)
        safetensors.write_hf_index(tmp, writer)
        hf_config.write_config(tmp / "config.json", cfg)
    return sum(math.prod(r.shape) for r in refs) * 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=SHAPES)
    parser.add_argument("out")
    parser.add_argument("--shard-size", type=int, default=5 * 10**9, help="bytes per shard (default 5 GB)")
    parser.add_argument("--sparse", action="store_true", help="write valid headers over sparse files, no data")
    args = parser.parse_args()
    size = write(args.out, config(args.shape), shard_size=args.shard_size, sparse=args.sparse)
    print(f"wrote {args.shape} ({size / 1e9:.2f} GB{' sparse' if args.sparse else ''}) to {args.out}")


if __name__ == "__main__":
    main()
