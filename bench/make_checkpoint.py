"""Write a synthetic HF checkpoint of a given shape (random bf16 weights, sharded with an index) for benchmarks.

    python bench/make_checkpoint.py llama OUT --hidden 2048 --layers 16 --intermediate 5632
    python bench/make_checkpoint.py mixtral OUT --hidden 1024 --layers 8 --intermediate 3584 --experts 8
"""

from __future__ import annotations

import argparse
import math

from weightport import synth


def config(kind: str, args: argparse.Namespace) -> dict:
    heads = args.hidden // 128
    base = synth.tiny_llama(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 4), head_dim=128, vocab_size=args.vocab,
        dtype="bfloat16",
    )
    if kind == "mixtral":
        for key in ("attention_bias", "mlp_bias", "pretraining_tp"):
            base.pop(key, None)
        base |= {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": args.experts,
                 "num_experts_per_tok": 2, "sliding_window": None}
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["llama", "mixtral"])
    parser.add_argument("out")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-size", type=int, default=2 * 10**9, help="bytes per shard (default 2 GB)")
    args = parser.parse_args()
    cfg = config(args.kind, args)
    folder = synth.write_hf(args.out, cfg, dtype="BF16", max_shard_size=args.shard_size)
    size = sum(math.prod(r.shape) for r in synth.hf_tensors(cfg)) * 2
    print(f"wrote {args.kind} checkpoint of {size / 1e9:.2f} GB to {folder}")


if __name__ == "__main__":
    main()
