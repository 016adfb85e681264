"""Run several `fast-llm convert` commands in one process (run under Fast-LLM's own Python, not weightport's).

usage: FASTLLM_PYTHON=1 ../shared/fastllm/fastllm tests/fastllm/fast_llm_convert.py JOBS.json

JOBS.json holds {"jobs": {name: [arguments after `convert`]}, "results": path}; the results file gets, by name,
null for success or the traceback of the failure. Each job goes through Fast-LLM's own command-line entry point
(`RunnableConfig.parse_and_run`, as `fast_llm.cli` calls it) with the wrapper's CPU patches applied; only the
import of torch and Fast-LLM is shared.
"""

import json
import sys
import traceback

import fast_llm.cli  # noqa: F401  (registers every runnable and model class, as the command line does)
from fast_llm.engine.config_utils.logging import configure_logging
from fast_llm.engine.config_utils.runnable import RunnableConfig
from fast_llm.utils import set_global_variables

import patches  # the wrapper's folder is on PYTHONPATH

spec = json.load(open(sys.argv[1]))
patches.apply(["model_files", "config_eq"])
configure_logging()
set_global_variables()
results = {}
for name, args in spec["jobs"].items():
    try:
        RunnableConfig.parse_and_run(["convert", *args])
        results[name] = None
    except BaseException:  # a failed assertion or validation in Fast-LLM is a result, not a crash of the batch
        results[name] = traceback.format_exc()
with open(spec["results"], "w") as out:
    json.dump(results, out, indent=1)
