"""`ModelSpec`: one family's declaration (HF names, config rules, weight rules), and `extend` for variants."""

from __future__ import annotations

from dataclasses import dataclass, field

from weightport.core.config_rules import Constant, override


@dataclass(frozen=True)
class ModelSpec:
    """A family: its format name, HF `model_type` and `architectures`, native model type, and rule tables."""

    name: str
    model_type: str
    architecture: str
    config: tuple
    weights: tuple
    native_model: str = "gpt"
    hf_rules: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        identity = (
            Constant(self.model_type, hf="model_type", reason="identifies the format"),
            Constant([self.architecture], hf="architectures", reason="the transformers class of the format"),
        )
        object.__setattr__(self, "hf_rules", identity + self.config)

    def extend(self, *, name: str, model_type: str | None = None, architecture: str | None = None,
               config: tuple = (), weights: tuple | None = None) -> ModelSpec:
        """A variant: config rules replace the family's rules with the same key (or are added)."""
        return ModelSpec(
            name=name,
            model_type=model_type or name,
            architecture=architecture or self.architecture,
            config=override(self.config, config),
            weights=self.weights if weights is None else weights,
            native_model=self.native_model,
        )
