"""Record Fast-LLM's exports of the cases of tests/remote_code_cases.py (their config.json) into
tests/fixtures/fast_llm_exports/, which tests/test_remote_code_keys.py compares weightport's exports with.

usage (weightport's Python, with the Fast-LLM oracle set up, see ../shared/fastllm/README.md):
    python tests/fastllm/record_fast_llm_exports.py

tests/fastllm/test_fastllm_remote_code_keys.py checks that the recording is what the real Fast-LLM writes now.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from oracle import python
from remote_code_cases import CASES, RECORDED, native


def fast_llm_exports(root: Path) -> dict[str, dict]:
    """Every case made as a native checkpoint under `root/<case>` and exported by Fast-LLM (fast_llm_export_config.py,
    under transformers 4 where the case says so): {case: config.json}. Raises with Fast-LLM's traceback on failure."""
    jobs: dict[bool, dict[str, list[str]]] = {False: {}, True: {}}
    for name, (format, _, tf4) in CASES.items():
        jobs[tf4][name] = [str(native(name, root / name)), format, str(root / name / "fast_llm_export")]
    failed = {}
    for tf4, batch in jobs.items():
        spec = root / f"jobs_tf4_{tf4}.json"
        spec.write_text(json.dumps({"jobs": batch, "results": str(spec.with_suffix(".results.json"))}))
        python(HERE / "fast_llm_export_config.py", spec, tf4=tf4)
        failed.update({k: v for k, v in json.loads(spec.with_suffix(".results.json").read_text()).items() if v})
    if failed:
        raise AssertionError(f"Fast-LLM could not export {', '.join(failed)}:\n" + "\n".join(failed.values()))
    return {name: json.loads((root / name / "fast_llm_export" / "config.json").read_text()) for name in CASES}


def main() -> None:
    RECORDED.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        for name, config in fast_llm_exports(Path(root)).items():
            (RECORDED / f"{name}.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
