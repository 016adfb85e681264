"""Write the config.json that Fast-LLM's HF export writes for native checkpoints, without converting their weights
(run under Fast-LLM's own Python, not weightport's).

usage: FASTLLM_PYTHON=1 ../shared/fastllm/fastllm tests/fastllm/fast_llm_export_config.py JOBS.json

JOBS.json holds {"jobs": {name: [native folder, HF format, output folder]}, "results": path}; the results file gets,
by name, null for success or the traceback of the failure. Each job runs the two steps of Fast-LLM's own export
that make config.json (`HuggingfaceStateDictCheckpointHandler._serialize_metadata`): the format handler's
`_export_config` on the checkpoint's config, then `_save_config`, which writes it through the format's
transformers config class. `fast-llm convert` writes the same file, but also needs every weight to map: Fast-LLM
0.4.0 maps no Mamba or GDN weights of llava_hybrid_ssm, and no Apriel2 Mamba bias that follows
`add_linear_biases`, so there its config.json is only reachable this way.
"""

import json
import pathlib
import sys
import traceback

import yaml

import fast_llm.cli  # noqa: F401  (registers every model class and checkpoint format, as the command line does)
from fast_llm.engine.multi_stage.config import CheckpointMetadata

import patches  # the wrapper's folder is on PYTHONPATH

spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
patches.apply(["config_eq"])
results = {}
for name, (native, format, out) in spec["jobs"].items():
    try:
        metadata = CheckpointMetadata.from_dict(yaml.safe_load((pathlib.Path(native) / "metadata.yaml").read_text()))
        handler = type(metadata.config).get_checkpoint_handler_class(format)
        handler._save_config(out, handler._export_config(metadata.config))
        results[name] = None
    except BaseException:  # noqa: BLE001  (a failed validation in Fast-LLM is a result, not a crash of the batch)
        results[name] = traceback.format_exc()
pathlib.Path(spec["results"]).write_text(json.dumps(results, indent=1))
