"""Shared machinery of the config dataclasses: building from a dict of known fields (unknown ones refused,
transformers' bookkeeping keys ignored), and back to a JSON-ready dict."""

from __future__ import annotations

import dataclasses
from typing import Any


def to_tuple(value):
    """Lists (nested) -> tuples, so that a config loaded from JSON is hashable; other values unchanged."""
    if isinstance(value, (list, tuple)):
        return tuple(to_tuple(v) for v in value)
    return value


def to_lists(value):
    """Tuples (nested, also inside dicts) -> lists, for a JSON-ready dict; other values unchanged."""
    if isinstance(value, dict):
        return {k: to_lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_lists(v) for v in value]
    return value


def as_pair(value) -> tuple[int, int]:
    """An int ``n`` -> ``(n, n)``; a pair (list or tuple) -> a tuple."""
    value = to_tuple(value)
    return value if isinstance(value, tuple) else (value, value)


class ConfigBase:
    """Shared helpers: build from a dict of known fields, refuse unknown ones."""

    # transformers' PreTrainedConfig bookkeeping that carries no architecture information.
    _IGNORED_KEYS = frozenset(
        {
            "model_type",
            "initializer_range",
            "_name_or_path",
            "architectures",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "return_dict",
            "output_hidden_states",
            "output_attentions",
            "torchscript",
            "use_bfloat16",
            "tie_word_embeddings",
            "chunk_size_feed_forward",
            "is_encoder_decoder",
            "is_decoder",
            "add_cross_attention",
            "tie_encoder_decoder",
            "pruned_heads",
            "id2label",
            "label2id",
            "problem_type",
            "tokenizer_class",
            "prefix",
            "bos_token_id",
            "pad_token_id",
            "eos_token_id",
            "sep_token_id",
            "decoder_start_token_id",
            "task_specific_params",
            "finetuning_task",
            "cross_attention_hidden_size",
            "_attn_implementation_autoset",
        }
    )

    @classmethod
    def _known(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in names and k not in cls._IGNORED_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown config keys {unknown}")
        return {k: to_tuple(v) for k, v in data.items() if k in names}

    def to_dict(self) -> dict[str, Any]:
        return to_lists(dataclasses.asdict(self))
