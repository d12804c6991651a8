"""The converted directory: ``config.json`` + ``flax_params.safetensors``, loadable without torch.

In (``save_converted``): an output path, a ``Sam2Config`` and nested params. Out: the directory, written through
``sam2_jax.utils.atomic.atomic_directory`` (complete or absent; an existing one replaced only with ``force``).
In (``read_converted``): the directory or its params file. Out: ``(config, nested NumPy params)``, checked
against the model's shapes. On disk the Flax tree is flattened to ``"a/b/c"`` keys (``flatten_params``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ..config import Sam2Config
from ..utils.atomic import atomic_directory
from .readers import CONFIG_FILE, read_config, read_safetensors
from .validation import check_tree

PARAMS_FILE = "flax_params.safetensors"

__all__ = [
    "PARAMS_FILE",
    "flatten_params",
    "unflatten_params",
    "is_flat_params",
    "read_converted",
    "save_converted",
]


def flatten_params(params: Mapping) -> dict[str, np.ndarray]:
    """Nested param dict -> {"a/b/c": array}, the on-disk form."""
    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
    return unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def is_flat_params(state: Mapping[str, np.ndarray]) -> bool:
    """Whether the tensors of a safetensors file are our flattened Flax tree (not a torch state dict): torch keys
    never hold a "/", ours do (all but the top-level leaves such as ``no_memory_embedding``)."""
    return any("/" in k for k in state)


def read_converted(
    path: str | os.PathLike, config: Sam2Config | None = None, flat: Mapping[str, np.ndarray] | None = None
) -> tuple[Sam2Config, dict]:
    """``(config, params)`` of a converted directory or of its params file (``flat``: its tensors, if read).

    ``config`` defaults to the ``config.json`` beside the params file.
    """
    path = Path(path)
    params_file = path / PARAMS_FILE if path.is_dir() else path
    config = config or read_config(params_file.with_name(CONFIG_FILE))
    params = unflatten_params(read_safetensors(params_file) if flat is None else flat)
    check_tree(params, config, path)
    return config, params


def save_converted(out: str | os.PathLike, config: Sam2Config, params: dict, force: bool = False) -> Path:
    """Write ``out/config.json`` and ``out/flax_params.safetensors`` atomically.

    Everything is written into a temporary sibling directory first and renamed into place at the end, so an
    interrupted run leaves no half-written output. An existing ``out`` is only replaced with ``force``.
    """
    from safetensors.numpy import save_file

    with atomic_directory(out, force) as tmp:
        flat = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flatten_params(params).items()}
        save_file(flat, str(tmp / PARAMS_FILE), metadata={"format": "sam2-jax", "layout": "flax"})
        (tmp / CONFIG_FILE).write_text(config.to_json_string() + "\n")
    return Path(out)
