"""What a family file imports: the config and weight primitives, and `ModelSpec` (with `FilesDecide`: a config value
that the checkpoint's files decide where config.json leaves it open).

Config rules: `Rename`, `AnyOf`, `Constant`, `Derived`, `Computed`, `Ignore`, `Choice`, `Nested`, `Entries`, `Layout`,
`NoBiases` (per-layer bias switches left to the block's) and `TextModel` (a wrapper's text model); config.json
layouts of other transformers versions (`Relayout`, `ROTARY_V4`, `per_layer`, `within`).
HF config classes as data: `HFClass` (keys and defaults), with `From`, `Merged` and `Sub` defaults.
Weight rules: `Tensor` (with `tied=` for a tied copy), `Fuse`, `Linear` (leaves), `Section`, `Blocks`, `Items`,
`Each`, `Repeat`, `Switch`, `Alternatives` (HF layouts of the same tensors), `Renamed` (other HF name prefixes)
(structure), `Carry` (an HF part the native model lacks, carried unchanged); `override` replaces rules of a table by
key, with the layout ops `T` (transpose) and `Flatten`; `within` applies a config.json layout to a sub-config.
"""

from __future__ import annotations

from weightport.core import config_rules
from weightport.core.config_rules import AnyOf, Choice, Computed, Constant, Derived, Entries, Ignore, Nested, Rename
from weightport.core.hf_classes import From, HFClass, Merged, Sub
from weightport.core.ops import Flatten, T
from weightport.core.layouts import ROTARY_V4, Relayout, per_layer, within
from weightport.core.spec import FilesDecide, ModelSpec, override, section
from weightport.core.weights import Alternatives, Carry, Each, Fuse, Linear, Renamed, Repeat, Section, Switch, Tensor
from weightport.native.schema import block_names as _block_names, blocks as _blocks


def Blocks(native: str, hf: str, rules: tuple, config: str | None = None) -> Each:
    """The rules of one block at each position of a block sequence: `decoder.{i}` <-> `model.layers.{i}`."""
    return Each(f"{native}.{{i}}", f"{hf}.{{i}}", rules, config or native,
                lambda sequence: [({"i": i}, block) for i, block in enumerate(_blocks(sequence))])


def Layout(native: str, hf: str, blocks: dict[str, tuple], single_is_fixed: bool = False) -> config_rules.Layout:
    """A per-layer list of HF block names (`hybrid_block_layout`) <-> the native block sequence at `native`."""
    return config_rules.Layout(native, hf, blocks,
                               lambda sequence: list(zip(_block_names(sequence), _blocks(sequence))), single_is_fixed)


def NoBiases(*layers: str, reason: str = "") -> tuple[Constant, ...]:
    """Per-layer bias switches left unset (`{layer}.bias.enabled`), so the block's own switch decides; not written
    natively, as Fast-LLM's importers leave them unset."""
    return tuple(Constant(None, native=f"{layer}.bias.enabled", reason=reason, write=False) for layer in layers)


def TextModel(hf: str, rules: tuple, model_type: str) -> tuple:
    """The config rules of a wrapper's text model (`Gemma4ForConditionalGeneration`'s `text_config`): the text family's
    `rules` under `hf`, its `model_type` checked, and the embeddings tied by the wrapper's own `tie_word_embeddings`,
    the key transformers reads for a wrapper (the text config's is kept as it is)."""
    return (
        Nested("", hf, override(rules, drop=("tied_embedding_weight",))),
        Constant(model_type, hf=f"{hf}.model_type", reason="the format of the text model"),
        Ignore(hf=f"{hf}.tie_word_embeddings", reason="a wrapper ties its embeddings by its own tie_word_embeddings"),
        Rename("tied_embedding_weight", "tie_word_embeddings"),
    )


def Items(native: str, hf: str, rules: tuple, config: str | None = None) -> Each:
    """The rules once per entry of a dict of sub-configs: `mixers.{name}` <-> `mixers.{name}` (stochastic mixers)."""
    return Each(f"{native}.{{name}}", f"{hf}.{{name}}", rules, config or native,
                lambda entries: [({"name": name}, sub) for name, sub in entries.items()])


__all__ = [
    "ROTARY_V4", "Alternatives", "AnyOf", "Blocks", "Carry", "Choice", "Computed", "Constant", "Derived", "Each",
    "Entries", "FilesDecide", "Flatten", "From", "Fuse", "HFClass", "Ignore", "Items", "Layout", "Linear", "Merged",
    "ModelSpec", "Nested", "NoBiases", "Relayout", "Rename", "Renamed", "Repeat", "Section", "Sub", "Switch", "T",
    "Tensor", "TextModel", "override", "per_layer", "section", "within",
]
