"""Loading a SAM 2 checkpoint from any source: ``load`` (model and params) and ``load_params`` (config, params).

In: a source and optionally a config (a ``Sam2Config`` or a size / checkpoint name). Out: ``(config, nested
NumPy params)`` (``load_params``: everything the source holds, the video model's tree for a video checkpoint)
or ``(Sam2Model, jax image params)`` / ``(Sam2VideoModel, jax params)`` (``load``, ``video=``). Sources:

* a converted directory (``config.json`` + ``flax_params.safetensors``, written by ``save_converted``) or its
  params file;
* a transformers model directory (``config.json`` + ``model.safetensors``, image or video layout) or a bare
  transformers ``.safetensors`` file (the size is then inferred from the tensors);
* a Hub repo id such as ``facebook/sam2.1-hiera-tiny`` (``hub``: downloaded once into the huggingface_hub cache);
* an original facebookresearch ``.pt`` checkpoint (needs torch; loaded with ``weights_only=True``), or a
  directory holding exactly one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ..config import Sam2Config, get_config
from .converted import PARAMS_FILE, is_flat_params, read_converted
from .errors import CheckpointError
from .hub import download, is_repo_id, known_config
from .key_mapping import convert_state_dict, infer_config
from .readers import CONFIG_FILE, TRANSFORMERS_WEIGHTS, read_config, read_pt, read_safetensors

__all__ = ["load", "load_params", "read_checkpoint"]


def _transformers(path: Path, config: Sam2Config | None, state: dict | None = None) -> tuple[Sam2Config, dict]:
    """A transformers ``model.safetensors`` (``state``: its tensors, if read), sized by a sibling config.json."""
    sibling = path.with_name(CONFIG_FILE)
    config = config or (read_config(sibling) if sibling.exists() else None)
    state = read_safetensors(path) if state is None else state
    config = config or infer_config(state)
    return config, convert_state_dict(state, config, "transformers")


def read_checkpoint(src: str | os.PathLike, config: Sam2Config | str | None = None) -> tuple[Sam2Config, dict]:
    """Read any supported local source into (config, nested NumPy params), converting when needed."""
    path = Path(src)
    config = get_config(config) if isinstance(config, str) else config
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir():
        if (path / PARAMS_FILE).exists():
            return read_converted(path, config)
        if (path / TRANSFORMERS_WEIGHTS).exists():
            return _transformers(path / TRANSFORMERS_WEIGHTS, config)
        pts = sorted(path.glob("*.pt"))
        if len(pts) == 1:
            return read_checkpoint(pts[0], config)
        raise CheckpointError(f"{path} holds no SAM 2 checkpoint ({PARAMS_FILE}, {TRANSFORMERS_WEIGHTS} or one .pt)")
    if path.suffix in (".pt", ".pth"):
        state = read_pt(path)
        config = config or infer_config(state, "official")
        return config, convert_state_dict(state, config, "official")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
        if is_flat_params(state):  # our own flattened layout
            return read_converted(path, config, state)
        return _transformers(path, config, state)
    raise CheckpointError(f"unsupported checkpoint file {path} (expected a directory, .safetensors or .pt)")


def load_params(
    src: str | os.PathLike, config: Sam2Config | str | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[Sam2Config, dict]:
    """(config, NumPy params) from a local path or a Hub repo id."""
    if is_repo_id(src):
        return read_checkpoint(download(src, cache_dir), config or known_config(src))
    return read_checkpoint(src, config)


def load(
    src: str | os.PathLike,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    config: Sam2Config | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    implementation: Any = "auto",
    precision: str | None = "highest",
    video: bool = False,
):
    """Load a SAM 2 checkpoint: returns ``(model, params)`` with
    ``model = Sam2Model(config, dtype, implementation, precision)`` and the image model's params, or with
    ``video=True`` ``Sam2VideoModel`` and the full video tree (the source must hold the video tensors).

    ``dtype`` is the computation dtype (float32 or bfloat16); ``param_dtype`` is what the params are stored as;
    ``implementation`` and ``precision`` are the model's (see ``sam2_jax.modeling.implementation`` and
    ``Sam2Model``).
    """
    from ..modeling.sam2_model import Sam2Model
    from ..modeling.sam2_video_model import Sam2VideoModel, has_video_params, image_params

    cfg, params = load_params(src, config, cache_dir)
    if video and not has_video_params(params):
        raise CheckpointError(f"{src} holds the image model only: no video tensors for Sam2VideoModel")
    params = params if video else image_params(params)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)
    cls = Sam2VideoModel if video else Sam2Model
    return cls(cfg, dtype, implementation, precision), params
