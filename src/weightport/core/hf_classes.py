"""HF config classes as data: the keys each class defines, and the default transformers gives a key that is absent.

A family names the config class of its format (`ModelSpec.hf_class`). On import, an absent key takes the class
default before the rules run, as the class's constructor does; on export, every key the rules do not write is filled
with its default, so the written `config.json` has every key of the class, as `save_pretrained` writes it. A key no
class defines (nor the base class) cannot change the model: it is accepted, reported, and kept.

Tables are written in the rules' config layout (`weightport.core.layouts.CANONICAL`). Defaults are plain values,
`From` (computed from the other keys, as a class's `__post_init__` does), `Merged` (a dict whose missing entries are
filled one by one) or `Sub` (a sub-config, whose class its `model_type` selects).
"""

from __future__ import annotations

import copy
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from weightport.core.paths import Path, dotted
from weightport.errors import ConfigError

# Keys of transformers' base config class (`PreTrainedConfig` in 5.x, `PretrainedConfig` in 4.x, whose generation
# and task keys 4.x wrote into every config.json) and of the file itself: defined by every class, never converted.
# Source: transformers 5.24 configuration_utils.py and 4.57 configuration_utils.py (the attributes their
# `PretrainedConfig.__init__` set).
BASE_KEYS = frozenset({
    "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version", "dtype", "torch_dtype",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "mask_token_id",
    "decoder_start_token_id", "initializer_range", "id2label", "label2id", "return_dict", "output_attentions",
    "output_hidden_states", "torchscript", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder", "prefix",
    "pruned_heads", "task_specific_params", "finetuning_task", "tokenizer_class", "tf_legacy_loss",
    "use_bfloat16", "max_length", "min_length", "do_sample", "temperature", "top_k", "top_p", "typical_p",
    "num_beams", "num_beam_groups", "diversity_penalty", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "early_stopping", "output_router_logits_deprecated", "num_labels",
})


@dataclass(frozen=True, slots=True)
class From:
    """A default computed from the class's other keys (already filled), applied when the key is absent or null, as
    a class's `__post_init__` computes it: `From(lambda c: c["hidden_size"] // c["num_attention_heads"])`."""

    compute: Callable[[dict], Any]
    why: str = ""


@dataclass(frozen=True, slots=True)
class Merged:
    """A dict-valued key whose absent entries each take their default (a class that merges a given dict into its
    defaults, like Apriel's `ssm_cfg`); a null or absent key takes the whole dict. An entry's default may be a `From`,
    which sees the dict's entries first, then the class's other keys (as transformers' `standardize_rope_params`
    reads both); an entry it computes as None stays absent."""

    defaults: Mapping[str, Any]

    def merge(self, given: dict, config: Mapping[str, Any]) -> dict:
        out = {**{k: copy.deepcopy(v) for k, v in self.defaults.items() if not isinstance(v, From)},
               **copy.deepcopy(given)}
        for key, default in self.defaults.items():
            if isinstance(default, From) and out.get(key) is None:
                value = default.compute(ChainMap(out, config))
                if value is not None:
                    out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Sub:
    """A sub-config (`text_config`, `vision_config`), whose class is chosen by its `model_type` (`default` when the
    sub-config names none). A type without a class here is left as it is (its rules refuse it). An absent (or null)
    sub-config is made of the `default` class with the keys in `absent` (in the canonical layout), as transformers'
    `SubConfigSpec.init_kwargs` make it; a sub-config that config.json gives takes only its class's defaults."""

    classes: Mapping[str, HFClass]
    default: str
    absent: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HFClass:
    """One HF config class: its keys with their defaults, in the canonical config layout, and where that comes from.

    `pinned` holds defaults that the pinned transformers writes differently but that mean the same to the rules
    (a newer spelling); tests use them to compare a table with the pinned class."""

    name: str
    source: str
    keys: Mapping[str, Any]
    pinned: Mapping[str, Any] = field(default_factory=dict)

    def extend(self, name: str, source: str, keys: Mapping[str, Any] = {}, drop: tuple[str, ...] = (),
               pinned: Mapping[str, Any] = {}) -> HFClass:
        """A subclass: more keys (or other defaults), `drop`ped keys removed."""
        kept = {k: v for k, v in self.keys.items() if k not in drop}
        return HFClass(name, source, {**kept, **keys}, {**self.pinned, **pinned})

    def defines(self, key: str) -> bool:
        return key in self.keys or key in BASE_KEYS

    def fill(self, config: dict, prefix: Path = ()) -> dict:
        """`config` with every absent key set to its default (sub-configs by their own class); a new dict.

        Raises ConfigError for a dict-valued key (`Merged`, `Sub`: `rope_parameters`, `text_config`) whose value is
        neither a mapping nor null: the class's constructor refuses it, and a default in its place would describe
        another model."""
        out = copy.deepcopy(config)
        later = []
        for key, default in self.keys.items():
            if isinstance(default, (Merged, Sub)) and not isinstance(out.get(key), (dict, type(None))):
                raise ConfigError(f"config.json {dotted(prefix + (key,))} = {out[key]!r} should be a mapping (or "
                                  f"null), as {self.name} reads it; transformers refuses this config: fix the value")
            if isinstance(default, (From, Merged)):
                later.append((key, default))
            elif isinstance(default, Sub):
                sub = out.get(key)
                if sub is None:
                    sub = {"model_type": default.default, **copy.deepcopy(dict(default.absent))}
                kind = sub.get("model_type", default.default)
                out[key] = default.classes[kind].fill({"model_type": kind, **sub}, prefix + (key,)) \
                    if kind in default.classes else sub
            elif key not in out:
                out[key] = copy.deepcopy(default)
        for key, default in later:  # after the plain defaults they may read
            if isinstance(default, Merged):
                out[key] = default.merge(out.get(key) or {}, out)
            elif out.get(key) is None:
                try:
                    out[key] = default.compute(out)
                except (KeyError, TypeError, ValueError, ZeroDivisionError):
                    pass  # the rules that read the keys it needs say what is wrong
        return out

    def undefined(self, config: dict, prefix: Path = ()) -> list[Path]:
        """The keys of `config` this class does not define (through its sub-configs), as paths."""
        out: list[Path] = []
        for key, value in config.items():
            default = self.keys.get(key)
            if not self.defines(key):
                out.append(prefix + (key,))
            elif isinstance(default, Sub) and isinstance(value, dict):
                kind = value.get("model_type", default.default)
                if kind in default.classes:
                    out += default.classes[kind].undefined(value, prefix + (key,))
        return out


__all__ = ["BASE_KEYS", "From", "HFClass", "Merged", "Sub"]
