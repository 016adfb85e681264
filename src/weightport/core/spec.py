"""`ModelSpec`: one family's declaration (HF names, config rules, weight rules), and `extend` for variants;
`FilesDecide`: a config value that the checkpoint's files decide where config.json leaves it open."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from weightport.core.config_rules import Constant
from weightport.core.hf_classes import HFClass
from weightport.core.layouts import CANONICAL, ROTARY_V4, Relayout
from weightport.errors import SpecError


def rule_key(rule: object) -> str:
    """The path a rule is known by (its native path, else its HF path); a variant replaces a rule by giving one
    with the same key."""
    if getattr(rule, "native", None) is not None:
        return rule.native
    if getattr(rule, "hf", None) is not None:
        return "hf:" + rule.hf
    raise SpecError(f"{rule!r} names neither a native nor an HF path")


def override(rules: tuple, replacements: tuple = (), drop: tuple[str, ...] = ()) -> tuple:
    """`rules` with each replacement put in place of the rule with the same key, the rules keyed in `drop`
    removed, and the other replacements appended. A key that reaches into a nested section (`Nested`, `Section`)
    replaces the rule inside it; the replacement is then written relative to that section."""
    keys = [rule_key(r) for r in replacements]
    if len(keys) != len(set(keys)):
        raise SpecError(f"two replacement rules claim the same path: {sorted(k for k in keys if keys.count(k) > 1)}")
    out = [r for r in rules if rule_key(r) not in drop]
    for new in replacements:
        if not _place(out, new, rule_key(new)):
            out.append(new)
    return tuple(out)


def _place(rules: list, new: object, key: str) -> bool:
    for i, rule in enumerate(rules):
        own = rule_key(rule)
        if own == key:
            rules[i] = new
            return True
        inner = getattr(rule, "rules", None)
        if isinstance(inner, tuple) and own and key.startswith(own + ".") and not key.startswith("hf:"):
            rest = key[len(own) + 1 :]
            nested = list(inner)
            if not _place(nested, replace(new, native=rest), rest):
                nested.append(replace(new, native=rest))
            rules[i] = replace(rule, rules=tuple(nested))
            return True
    return False


def section(rules: tuple, key: str) -> tuple:
    """The rules of the nested section known by `key` (through nested sections), for reuse in another family."""
    for rule in rules:
        own, inner = rule_key(rule), getattr(rule, "rules", None)
        if own == key and isinstance(inner, tuple):
            return inner
        if isinstance(inner, tuple) and key.startswith(own + "."):
            return section(inner, key[len(own) + 1 :])
    raise SpecError(f"no nested section {key!r}")


@dataclass(frozen=True)
class FilesDecide:
    """An HF config key (`hf`, dotted, in the rules' layout) that a config.json in one of `layouts` may leave to a
    default that transformers versions read differently: where the layout's conversion leaves it out, the checkpoint's
    files decide. It is `present` where they hold the HF tensor of native tensor `tensor` (in any HF naming the
    weight rules give it), else `absent`. Mistral 3's `tie_word_embeddings` in transformers 4's layout: transformers
    4 tied by the text config's key (default false), transformers 5 by the top-level one (default true), and
    transformers 5's save_pretrained writes no `lm_head` of a model it reads as tied; an `lm_head` in the files means
    untied."""

    hf: str
    tensor: str
    present: Any
    absent: Any
    layouts: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ModelSpec:
    """A family: its format name, HF `model_type` and `architectures`, native model type, and rule tables."""

    name: str
    model_type: str
    architecture: str
    config: tuple
    weights: tuple
    native_model: str = "gpt"
    hf_layout: str = CANONICAL  # the config.json layout written when none was recorded at import
    layouts: tuple[Relayout, ...] = (ROTARY_V4,)  # other config.json layouts read, and written on request
    canonical: tuple[str, ...] = (CANONICAL, "transformers5.15")  # layout names that mean the rules' own layout
    aliases: tuple[str, ...] = ()  # other HF model types read as this format
    hf_class: HFClass | None = None  # the HF config class: its keys and defaults (None: only the rules' keys)
    # A wrapper around a text model (`Gemma4ForConditionalGeneration`): the HF key of the text model's config and the
    # format of the text model where that config names none; the text model exports alone in that format.
    text: tuple[str, str] | None = None
    # Where formats share a `model_type` (`llava` with Pixtral or CLIP vision): HF config keys (dotted) and the values
    # that tell this format apart, None standing for an absent key; `families.detect` picks the format whose values
    # the config has.
    detect_by: Mapping[str, tuple] = field(default_factory=dict)
    # HF keys that a config.json may leave for the checkpoint's files to decide (see `FilesDecide`)
    decided_by_files: tuple[FilesDecide, ...] = ()
    hf_rules: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        identity = (
            Constant(self.model_type, hf="model_type", reason="identifies the format", also=self.aliases),
            Constant([self.architecture], hf="architectures", also=(None,),
                     reason="the transformers class of the format; null, as a config made from the class itself "
                            "has it (model.config.to_dict()), names none"),
            Constant(None, hf="quantization_config", write=False,
                     reason="quantized checkpoints are not converted: their tensors are packed or are to be quantized "
                            "on load; convert the unquantized checkpoint"),
        )
        object.__setattr__(self, "hf_rules", identity + self.config)

    def extend(self, *, name: str, model_type: str | None = None, architecture: str | None = None,
               config: tuple = (), weights: tuple = (), drop: tuple[str, ...] = (),
               hf_layout: str | None = None, hf_class: HFClass | None = None) -> ModelSpec:
        """A variant: config and weight rules replace the family's rules with the same key (or are added);
        `drop` removes config rules by key."""
        return ModelSpec(
            name=name,
            model_type=model_type or name,
            architecture=architecture or self.architecture,
            config=override(self.config, config, drop),
            weights=override(self.weights, weights),
            native_model=self.native_model,
            hf_layout=hf_layout or self.hf_layout,
            layouts=self.layouts,
            canonical=self.canonical,
            hf_class=hf_class or self.hf_class,
            text=self.text,
            decided_by_files=self.decided_by_files,
        )
