"""Loading a SAM 2 checkpoint from any source: ``load`` (model and params) and ``load_params`` (config, params).

In: a source, optionally a config and an input size (below). Out: ``(config, nested
NumPy params)`` (``load_params``: everything the source holds, the video model's tree for a video checkpoint)
or ``(Sam2Model, jax image params)`` / ``(Sam2VideoModel, jax params)`` (``load``, ``video=``). Sources:

* a converted directory (``config.json`` + ``flax_params.safetensors``, written by ``save_converted``) or its
  params file;
* a transformers model directory (``config.json`` + ``model.safetensors``, image or video layout) or a bare
  transformers ``.safetensors`` file (the size is then inferred from the tensors);
* a Hub repo id such as ``facebook/sam2.1-hiera-tiny`` (``hub``: downloaded once into the huggingface_hub cache);
* an original facebookresearch ``.pt`` checkpoint (needs torch; loaded with ``weights_only=True``), or a
  directory holding exactly one.

``config``: a ``Sam2Config``, a size or checkpoint name, or the path of an official model yaml
(``official_yaml``: its trunk, ``image_size`` and video options), checked against the tensors' trunk.
``image_size``: the input size the checkpoint was trained at (a multiple of 16; ``Sam2Config.at_image_size``).
No tensor depends on it, so a ``.pt`` or bare ``.safetensors`` cannot tell it: one trained at 512 px read without
it is a 1024-px model that runs and is wrong. A source that records its size (a ``config.json``, a Hub id, a
yaml) must agree with it; ``CheckpointError`` otherwise, and for a size that is not a multiple of 16.
"""

from __future__ import annotations

import numbers
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
from .official_yaml import config_from_yaml, is_yaml
from .readers import CONFIG_FILE, TRANSFORMERS_WEIGHTS, read_config, read_pt, read_safetensors

__all__ = ["load", "load_params", "read_checkpoint", "resolve_config"]


def _image_size(cfg: Sam2Config) -> int:
    return cfg.prompt_encoder_config.image_size


def _checked_size(size) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 16 or size % 16:
        raise CheckpointError(f"image size must be a positive multiple of 16 (the backbone's stride), got {size!r}")
    return int(size)


def resolve_config(config: Sam2Config | str | os.PathLike | None, image_size: int | None = None) -> Sam2Config | None:
    """A given config (a ``Sam2Config``, a size or checkpoint name, an official yaml's path) at ``image_size``; a
    yaml whose ``model.image_size`` is another size is refused."""
    image_size = _checked_size(image_size)
    if config is None:
        return None
    if is_yaml(config):
        cfg = config_from_yaml(config)
        if image_size is not None and image_size != _image_size(cfg):
            raise CheckpointError(f"image size {image_size} contradicts {config}, which sets {_image_size(cfg)}")
        return cfg
    cfg = config if isinstance(config, Sam2Config) else get_config(config)
    return cfg if image_size is None else cfg.at_image_size(image_size)


def _check_trunk(config: Sam2Config, state: dict, layout: str, where: Any) -> None:
    """One line if a given config's Hiera trunk is not the one the tensors hold (when they hold a known size)."""
    try:
        found = infer_config(state, layout).vision_config.backbone_config
    except CheckpointError:
        return  # not a preset's trunk: the shape check decides
    want = config.vision_config.backbone_config
    if (want.hidden_size, sum(want.blocks_per_stage)) != (found.hidden_size, sum(found.blocks_per_stage)):
        raise CheckpointError(
            f"{where} describes a {want.hidden_size}-wide Hiera trunk of {sum(want.blocks_per_stage)} blocks, but "
            f"the checkpoint's is {found.hidden_size}-wide with {sum(found.blocks_per_stage)} blocks"
        )


def _transformers(path: Path, config: Sam2Config | None, where: Any, state: dict | None = None):
    """(config, params) of a transformers ``model.safetensors`` (``state``: its tensors, if read), sized by a sibling
    config.json unless a config is given (``where``: what gave it, for the error)."""
    sibling = path.with_name(CONFIG_FILE)
    state = read_safetensors(path) if state is None else state
    if config is not None:
        _check_trunk(config, state, "transformers", where)
    config = config or (read_config(sibling) if sibling.exists() else None)
    config = config or infer_config(state)
    return config, convert_state_dict(state, config, "transformers")


def _recorded_config(path: Path) -> Path | None:
    """The ``config.json`` a source is read with when no config is given (None for a ``.pt``)."""
    if path.is_dir():
        holds = (path / PARAMS_FILE).exists() or (path / TRANSFORMERS_WEIGHTS).exists()
        found = path / CONFIG_FILE if holds else None
    else:
        found = path.with_name(CONFIG_FILE) if path.suffix == ".safetensors" else None
    return found if found is not None and found.exists() else None


def _read(path: Path, config: Sam2Config | None, where: Any) -> tuple[Sam2Config, dict]:
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir():
        if (path / PARAMS_FILE).exists():
            return read_converted(path, config)
        if (path / TRANSFORMERS_WEIGHTS).exists():
            return _transformers(path / TRANSFORMERS_WEIGHTS, config, where)
        pts = sorted(path.glob("*.pt"))
        if len(pts) == 1:
            return _read(pts[0], config, where)
        raise CheckpointError(f"{path} holds no SAM 2 checkpoint ({PARAMS_FILE}, {TRANSFORMERS_WEIGHTS} or one .pt)")
    if path.suffix in (".pt", ".pth"):
        state = read_pt(path)
        if config is not None:
            _check_trunk(config, state, "official", where)
        config = config or infer_config(state, "official")
        return config, convert_state_dict(state, config, "official")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
        if is_flat_params(state):  # our own flattened layout
            return read_converted(path, config, state)
        return _transformers(path, config, where, state)
    raise CheckpointError(f"unsupported checkpoint file {path} (expected a directory, .safetensors or .pt)")


def read_checkpoint(
    src: str | os.PathLike, config: Sam2Config | str | None = None, image_size: int | None = None
) -> tuple[Sam2Config, dict]:
    """Read any supported local source into (config, nested NumPy params), converting when needed."""
    path, image_size = Path(src), _checked_size(image_size)
    given = resolve_config(config, image_size)
    cfg, params = _read(path, given, config if isinstance(config, (str, os.PathLike)) else "the given config")
    if given is None and image_size is not None and image_size != _image_size(cfg):
        recorded = _recorded_config(path)
        if recorded is not None:
            raise CheckpointError(
                f"{recorded} records image size {_image_size(cfg)}, not {image_size}; to run it at another size, "
                "pass config=Sam2Config.at_image_size(...)"
            )
        cfg = cfg.at_image_size(image_size)
    return cfg, params


def load_params(
    src: str | os.PathLike,
    config: Sam2Config | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> tuple[Sam2Config, dict]:
    """(config, NumPy params) from a local path or a Hub repo id; ``image_size`` as in the module docstring."""
    if is_repo_id(src):
        known = None if config is not None else known_config(src)
        if known is not None and image_size not in (None, _image_size(known)):
            raise CheckpointError(f"{src} is a {_image_size(known)} px checkpoint, not {image_size} px")
        return read_checkpoint(download(src, cache_dir), config or known, image_size)
    return read_checkpoint(src, config, image_size)


def load(
    src: str | os.PathLike,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    config: Sam2Config | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    implementation: Any = "auto",
    precision: str | None = "highest",
    video: bool = False,
    image_size: int | None = None,
):
    """Load a SAM 2 checkpoint: returns ``(model, params)`` with
    ``model = Sam2Model(config, dtype, implementation, precision)`` and the image model's params, or with
    ``video=True`` ``Sam2VideoModel`` and the full video tree (the source must hold the video tensors).

    ``dtype`` is the computation dtype (float32 or bfloat16); ``param_dtype`` is what the params are stored as;
    ``implementation`` and ``precision`` are the model's (see ``sam2_jax.modeling.implementation`` and
    ``Sam2Model``); ``config`` and ``image_size`` as in the module docstring.
    """
    from ..modeling.sam2_model import Sam2Model
    from ..modeling.sam2_video_model import Sam2VideoModel, has_video_params, image_params

    cfg, params = load_params(src, config, cache_dir, image_size)
    if video and not has_video_params(params):
        raise CheckpointError(f"{src} holds the image model only: no video tensors for Sam2VideoModel")
    params = params if video else image_params(params)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, param_dtype), params)
    cls = Sam2VideoModel if video else Sam2Model
    return cls(cfg, dtype, implementation, precision), params
