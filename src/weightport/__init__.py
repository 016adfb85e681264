"""weightport: convert LLM checkpoints between the Hugging Face format and Fast-LLM's native format."""

from weightport.api import Checkpoint, convert, open_checkpoint, plan
from weightport.errors import WeightportError

__version__ = "0.1.0"
__all__ = ["Checkpoint", "WeightportError", "convert", "open_checkpoint", "plan", "__version__"]
