"""Reading checkpoint files: safetensors and original ``.pt`` into NumPy state dicts, ``config.json`` into a config.

In: a file path. Out: ``{key: np.ndarray}`` (``read_safetensors``, ``read_pt``) or a ``Sam2Config``
(``read_config``). A file that is missing its header, truncated, not a torch checkpoint, or a torch checkpoint
without ``{"model": state_dict}`` raises a ``CheckpointError`` whose first line names the file and the problem.
Nothing here knows key names (that is ``key_mapping``); the file names shared by transformers and converted
directories are defined here once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import Sam2Config
from .errors import CheckpointError

CONFIG_FILE = "config.json"  # transformers and converted directories alike
TRANSFORMERS_WEIGHTS = "model.safetensors"

__all__ = ["CONFIG_FILE", "TRANSFORMERS_WEIGHTS", "read_safetensors", "read_pt", "read_config"]


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as NumPy arrays."""
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({e})") from e


def read_pt(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The float32 state dict stored under ``"model"`` in an original SAM 2 ``.pt`` (``weights_only=True``)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise CheckpointError(f"reading {path} needs torch: pip install 'sam2-jax[convert]'") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: not a loadable torch checkpoint ({type(e).__name__}: {e})") from e
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        keys = sorted(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a SAM 2 checkpoint: expected {{'model': state_dict}}, found {keys}")
    return {k: v.detach().to(torch.float32).numpy() for k, v in state.items()}


def read_config(path: str | os.PathLike) -> Sam2Config:
    """A ``Sam2Config`` from a transformers or converted ``config.json``."""
    try:
        with open(Path(path)) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    return Sam2Config.from_dict(data)
