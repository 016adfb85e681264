"""Build the modules of an exported Apriel2 checkpoint from its config.json with its own remote modeling code, on CPU,
each as far as it goes without a CUDA kernel, and print what each holds.

    python remote_code_modules.py FOLDER

FOLDER holds config.json and the modeling files (`configuration_apriel2.py`, `modeling_apriel2.py`), loaded as a
user loads them: `AutoConfig.from_pretrained(FOLDER, trust_remote_code=True)`, and the modeling module through
transformers' dynamic module loader. From the config's nested dicts it builds, one by one:
- `blocks.<i>`: each decoder block (`Apriel2Block`, after its mixer class's `setup`, which builds the rotary);
- `blocks.<i>.mixer.mixers.<name>`: each sub-mixer of a stochastic mixer (`create_mixer`), built alone, since the
  block stops at the first one that needs a CUDA kernel;
- `cache`: the generation cache (`Apriel2Cache`), which reads every block's mixer type and window;
- `vision_encoder`: the vision encoder (`Apriel2VisionEncoder`), where there is one.
Prints one JSON object: {module: {"parameters": {name: shape}} or {"error": [exception type, message]}}; the cache
gives its per-layer mixer types as parameters.

modeling_apriel2.py imports its `fla` kernels inside `try:`; KimiDeltaAttention refuses to start without them before
it reads its config. Stand-ins for the `fla.ops.kda` functions it imports are put in `sys.modules` (they fail if
called; building calls none), so KDA, like the other mixers, builds until `CausalConv1d`, which needs CUDA kernels.
Runs under Fast-LLM's Python environment (transformers as Fast-LLM pins it) without Fast-LLM on the path.
"""

import json
import sys
import types

import transformers
from transformers.dynamic_module_utils import get_class_from_dynamic_module


def _kernel(*args, **kwargs):
    raise RuntimeError("a stand-in for an fla kernel, which needs CUDA")


def stub_fla_kda() -> None:
    for name in ("fla", "fla.ops", "fla.ops.kda", "fla.ops.kda.gate"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["fla.ops.kda"].chunk_kda = sys.modules["fla.ops.kda"].fused_recurrent_kda = _kernel
    sys.modules["fla.ops.kda.gate"].fused_kda_gate = _kernel


def built(make, *args) -> dict:
    """`make(*args)`'s parameters, or the exception that stopped it."""
    try:
        module = make(*args)
    except Exception as err:  # noqa: BLE001  (what stops the build is the result)
        return {"error": [type(err).__name__, str(err)]}
    return {"parameters": {name: list(p.shape) for name, p in module.named_parameters()}}


def main(folder: str) -> None:
    stub_fla_kda()
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    modeling = sys.modules[get_class_from_dynamic_module("modeling_apriel2.Apriel2Block", folder).__module__]
    hidden, positions = config.hidden_size, config.embeddings["max_position_embeddings"]
    eps = config.head["normalization"]["epsilon"]
    out = {}
    for i in range(config.decoder["num_blocks"]):
        block = config.get_block_config(i)
        mixer = block["mixer"]
        modeling.get_mixer_class(mixer["type"]).setup(mixer, hidden, positions)
        out[f"blocks.{i}"] = built(modeling.Apriel2Block, block, hidden, i, eps, config)
        for name, sub in mixer.get("mixers", {}).items() if mixer["type"] == "stochastic" else ():
            out[f"blocks.{i}.mixer.mixers.{name}"] = built(modeling.create_mixer, sub, hidden, i, config, False)
    try:
        out["cache"] = {"parameters": {"mixer_types": modeling.Apriel2Cache(config).mixer_types}}
    except Exception as err:  # noqa: BLE001
        out["cache"] = {"error": [type(err).__name__, str(err)]}
    if getattr(config, "vision_encoder", None) is not None:
        out["vision_encoder"] = built(modeling.Apriel2VisionEncoder, config.vision_encoder, config)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
