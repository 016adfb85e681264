"""weightport: convert LLM checkpoints between the Hugging Face format and Fast-LLM's native format.

Files: `convert`, `plan`, `check`, `open_checkpoint`, `inspect`, `verify`. In memory (torch tensors on any device):
`import_hf`, `export_hf`, `hf_config`, and `buckets` / `flat_buckets` to group tensors by bytes.
"""

from weightport.api import Checkpoint, check, convert, open_checkpoint, plan
from weightport.errors import WeightportError
from weightport.stream import FlatBucket, buckets, export_hf, flat_buckets, hf_config, import_hf
from weightport.tools import inspect, verify

__version__ = "0.1.0"
__all__ = ["Checkpoint", "FlatBucket", "WeightportError", "buckets", "check", "convert", "export_hf", "flat_buckets",
           "hf_config", "import_hf", "inspect", "open_checkpoint", "plan", "verify", "__version__"]
