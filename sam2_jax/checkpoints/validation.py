"""Checking a param tree against the model it is meant for.

In: Flax params (flat ``{("a", "b", "c"): array}`` or nested) and a ``Sam2Config``. Out: nothing, or one
``CheckpointError`` listing every missing, unexpected and mis-shaped leaf. The expected tree is ``jax.eval_shape``
of the model's init: the video model's (``sam2_video_model.param_shapes``) when the params hold any video-only
tensor, the image model's (``sam2_model.param_shapes``) otherwise; nothing is computed, and each tree is built once
per config.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict

from ..config import Sam2Config
from .errors import CheckpointError

__all__ = ["check_params", "check_tree", "expected_shapes"]


@functools.lru_cache(maxsize=8)
def expected_shapes(config: Sam2Config, video: bool) -> dict[tuple[str, ...], Any]:
    """Flat ``{path: ShapeDtypeStruct}`` of the video (``video``) or image model built from ``config``."""
    if video:  # deferred imports: building the model abstractly needs the modeling package
        from ..modeling.sam2_video_model import param_shapes
    else:
        from ..modeling.sam2_model import param_shapes
    try:
        return flatten_dict(param_shapes(config))
    except ValueError as e:  # a config whose video options do not fit the image model (Sam2Config.check_video)
        raise CheckpointError(f"the config cannot build the {'video' if video else 'image'} model: {e}") from None


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
