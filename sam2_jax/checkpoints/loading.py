"""Reading SAM 2 checkpoints from disk or the Hub, and writing converted ones.

Sources ``load`` understands:

* a converted directory (``config.json`` + ``flax_params.safetensors``, written by ``save_converted``);
* a transformers model directory (``config.json`` + ``model.safetensors``, image or video layout) or a bare
  transformers ``.safetensors`` file (the size is then inferred from the tensors);
* a Hub repo id such as ``facebook/sam2.1-hiera-tiny`` (downloaded once into the huggingface_hub cache;
  ``HF_HUB_OFFLINE=1`` uses the cache only);
* an original facebookresearch ``.pt`` checkpoint (needs torch; loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..config import Sam2Config, get_config
from .key_mapping import (
    CheckpointError,
    check_params,
    convert_state_dict,
    flatten_params,
    infer_config,
    unflatten_params,
)

PARAMS_FILE = "flax_params.safetensors"
CONFIG_FILE = "config.json"
TRANSFORMERS_WEIGHTS = "model.safetensors"
HUB_FILES = [CONFIG_FILE, TRANSFORMERS_WEIGHTS]

__all__ = ["load", "load_params", "read_checkpoint", "save_converted", "PARAMS_FILE", "CONFIG_FILE"]


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({e})") from e


def _read_pt(path: Path) -> dict[str, np.ndarray]:
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


def _config_from_file(path: Path) -> Sam2Config:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    return Sam2Config.from_dict(data)


def _resolve_config(config: Sam2Config | str | None) -> Sam2Config | None:
    return get_config(config) if isinstance(config, str) else config


def read_checkpoint(src: str | os.PathLike, config: Sam2Config | str | None = None) -> tuple[Sam2Config, dict]:
    """Read any supported local source into (config, nested NumPy params), converting when needed."""
    path = Path(src)
    config = _resolve_config(config)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir():
        if (path / PARAMS_FILE).exists():
            cfg = config or _config_from_file(path / CONFIG_FILE)
            flat = _read_safetensors(path / PARAMS_FILE)
            params = unflatten_params(flat)
            convert_check(params, cfg, path)
            return cfg, params
        if (path / TRANSFORMERS_WEIGHTS).exists():
            cfg = config or (_config_from_file(path / CONFIG_FILE) if (path / CONFIG_FILE).exists() else None)
            state = _read_safetensors(path / TRANSFORMERS_WEIGHTS)
            cfg = cfg or infer_config(state)
            return cfg, convert_state_dict(state, cfg, "transformers")
        pts = sorted(path.glob("*.pt"))
        if len(pts) == 1:
            return read_checkpoint(pts[0], config)
        raise CheckpointError(f"{path} holds no SAM 2 checkpoint ({PARAMS_FILE}, {TRANSFORMERS_WEIGHTS} or one .pt)")
    if path.suffix in (".pt", ".pth"):
        state = _read_pt(path)
        cfg = config or infer_config(state, "official")
        return cfg, convert_state_dict(state, cfg, "official")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
        if state and all("/" in k for k in state):  # our own flattened layout
            cfg = config or _config_from_file(path.with_name(CONFIG_FILE))
            params = unflatten_params(state)
            convert_check(params, cfg, path)
            return cfg, params
        sibling = path.with_name(CONFIG_FILE)
        cfg = config or (_config_from_file(sibling) if sibling.exists() else infer_config(state))
        return cfg, convert_state_dict(state, cfg, "transformers")
    raise CheckpointError(f"unsupported checkpoint file {path} (expected a directory, .safetensors or .pt)")


def convert_check(params: dict, config: Sam2Config, where: Any) -> None:
    """Check an already converted tree against the model's shapes (same report as conversion)."""
    from flax.traverse_util import flatten_dict

    try:
        check_params(flatten_dict(params), config)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _is_repo_id(src: str) -> bool:
    parts = str(src).split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(src)


def download(repo_id: str, cache_dir: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """Fetch (or find in the cache) the transformers files of a Hub repo; returns the snapshot directory."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_FILES))


def load_params(
    src: str | os.PathLike, config: Sam2Config | str | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[Sam2Config, dict]:
    """(config, NumPy params) from a local path or a Hub repo id."""
    if isinstance(src, str) and _is_repo_id(src):
        return read_checkpoint(download(src, cache_dir), config or _known_config(src))
    return read_checkpoint(src, config)


def _known_config(repo_id: str) -> Sam2Config | None:
    try:
        return get_config(repo_id)
    except KeyError:
        return None


def load(
    src: str | os.PathLike,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    config: Sam2Config | str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """Load a SAM 2 checkpoint: returns ``(model, params)`` with ``model = Sam2Model(config, dtype)``.

    ``dtype`` is the computation dtype (float32 or bfloat16); ``param_dtype`` is what the params are stored as.
    """
    from ..modeling.sam2_model import Sam2Model

    cfg, params = load_params(src, config, cache_dir)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)
    return Sam2Model(cfg, dtype), params


def save_converted(out: str | os.PathLike, config: Sam2Config, params: dict, force: bool = False) -> Path:
    """Write ``out/config.json`` and ``out/flax_params.safetensors`` atomically.

    Everything is written into a temporary sibling directory first and renamed into place at the end, so an
    interrupted run leaves no half-written output. An existing ``out`` is only replaced with ``force``.
    """
    from safetensors.numpy import save_file

    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force (force=True) to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        flat = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flatten_params(params).items()}
        save_file(flat, str(tmp / PARAMS_FILE), metadata={"format": "sam2-jax", "layout": "flax"})
        (tmp / CONFIG_FILE).write_text(config.to_json_string() + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
