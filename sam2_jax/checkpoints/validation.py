"""Checking a param tree against the model it is meant for.

In: Flax params (flat ``{("a", "b", "c"): array}`` or nested) and a ``Sam2Config``. Out: nothing, or one
``CheckpointError`` listing every missing, unexpected and mis-shaped leaf. The expected tree is ``jax.eval_shape``
of the model's init: the video model's (``sam2_video_model.param_shapes``) when the params hold any video-only
tensor, the image model's (``sam2_model.param_shapes``) otherwise; nothing is computed, and each tree is built once
per config. Tracing the model's init for it takes ~2 s, paid by every run of the command line: where JAX's
persistent compilation cache is on (``utils.compile_cache``, the command line and ``from_pretrained``), the tree
is also kept beside it, in ``<cache>/../sam2_jax_param_shapes/<key>.json``, the key a hash of the config and of the
modeling and config sources, so that a changed model never reads an old tree.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict

from ..config import Sam2Config
from .errors import CheckpointError

__all__ = ["check_params", "check_tree", "expected_shapes"]


@functools.lru_cache(maxsize=8)
def expected_shapes(config: Sam2Config, video: bool) -> dict[tuple[str, ...], Any]:
    """Flat ``{path: ShapeDtypeStruct}`` of the video (``video``) or image model built from ``config``."""
    stored = stored_shapes_file(config, video)
    if stored is not None and stored.is_file():
        try:
            return read_shapes(stored)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or damaged: build it again (and rewrite it)
    if video:  # deferred imports: building the model abstractly needs the modeling package
        from ..modeling.sam2_video_model import param_shapes
    else:
        from ..modeling.sam2_model import param_shapes
    try:
        shapes = flatten_dict(param_shapes(config))
    except ValueError as e:  # a config whose video options do not fit the image model (Sam2Config.check_video)
        raise CheckpointError(f"the config cannot build the {'video' if video else 'image'} model: {e}") from None
    if stored is not None:
        _write_shapes(stored, shapes)
    return shapes


@functools.lru_cache(maxsize=1)
def _sources_digest() -> str:
    """A hash of the sources that decide the param tree (the modeling and config packages)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for path in sorted([*root.glob("modeling/*.py"), *root.glob("config/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def stored_shapes_file(config: Sam2Config, video: bool) -> Path | None:
    """Where the tree for ``(config, video)`` is kept, or None while the persistent compilation cache is off."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    if not cache:
        return None
    key = hashlib.sha256(f"{_sources_digest()}|{video}|{config!r}".encode()).hexdigest()[:32]
    return Path(cache).expanduser().parent / "sam2_jax_param_shapes" / f"{key}.json"


def read_shapes(path: Path) -> dict[tuple[str, ...], Any]:
    """A stored param-shape tree (JSON rows of key, shape, dtype) -> ``{path: ShapeDtypeStruct}``."""
    import jax

    rows = json.loads(path.read_text())
    return {tuple(k.split("/")): jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)) for k, shape, dtype in rows}


def _write_shapes(path: Path, shapes: Mapping[tuple[str, ...], Any]) -> None:
    from ..utils.atomic import atomic_write

    rows = [["/".join(k), list(v.shape), np.dtype(v.dtype).name] for k, v in shapes.items()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(rows).encode()))
    except OSError:  # a read-only cache: keep going without it
        pass


def check_params(
    params: Mapping[tuple[str, ...], np.ndarray], config: Sam2Config, unexpected: Iterable[str] = ()
) -> None:
    """Raise one ``CheckpointError`` listing missing, unexpected and mis-shaped leaves of a flat param dict.

    ``unexpected``: source keys already found not to fit (listed first, in the same message).
    """
    from ..modeling.sam2_video_model import has_video_params

    expected = expected_shapes(config, has_video_params(params))
    missing = sorted("/".join(k) for k in expected if k not in params)
    unexpected = list(unexpected) + sorted("/".join(k) for k in params if k not in expected)
    misshaped = sorted(
        f"{'/'.join(k)}: checkpoint {tuple(np.shape(params[k]))}, model {tuple(expected[k].shape)}"
        for k in params
        if k in expected and tuple(np.shape(params[k])) != tuple(expected[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                parts.append(f"{len(keys)} {title}:\n    " + "\n    ".join(keys))
        raise CheckpointError("checkpoint does not match the SAM 2 model:\n  " + "\n  ".join(parts))


def check_tree(params: Mapping, config: Sam2Config, where: Any) -> None:
    """``check_params`` for a nested (already converted) tree; the error names ``where`` it came from."""
    try:
        check_params(flatten_dict(params), config)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
