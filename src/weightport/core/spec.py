"""`ModelSpec`: one family's declaration (HF names, config rules, weight rules), and `extend` for variants."""

from __future__ import annotations

from dataclasses import dataclass, field

from weightport.core.config_rules import Constant
from weightport.errors import SpecError


def rule_key(rule: object) -> str:
    """The path a rule is known by (its native path, else its HF path); a variant replaces a rule by giving one
    with the same key."""
    if getattr(rule, "native", None) is not None:
        return rule.native
    if getattr(rule, "hf", None) is not None:
        return "hf:" + rule.hf
    raise SpecError(f"{rule!r} names neither a native nor an HF path")


def override(rules: tuple, replacements: tuple) -> tuple:
    """`rules` with each rule of `replacements` put in place of the rule with the same key (or appended)."""
    by_key = {rule_key(r): r for r in replacements}
    if len(by_key) != len(replacements):
        raise SpecError("two replacement rules claim the same path")
    out = tuple(by_key.pop(rule_key(r), r) for r in rules)
    return out + tuple(by_key.values())


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
               config: tuple = (), weights: tuple = ()) -> ModelSpec:
        """A variant: config and weight rules replace the family's rules with the same key (or are added)."""
        return ModelSpec(
            name=name,
            model_type=model_type or name,
            architecture=architecture or self.architecture,
            config=override(self.config, config),
            weights=override(self.weights, weights),
            native_model=self.native_model,
        )
