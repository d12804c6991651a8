"""The FPN neck of SAM 2 and the vision encoder (Hiera backbone + neck).

``VisionNeck``
  In:  the Hiera stage outputs, highest resolution first: (B, 256, 256, C0) ... (B, 32, 32, C3).
  Out: ``fpn_hidden_states`` and ``fpn_position_encoding``, each a tuple of (B, h, w, 256), lowest
       resolution first (the order transformers' neck builds them in).
  1x1 lateral convolutions to ``fpn_hidden_size``; nearest-neighbour 2x top-down features are added only into
  the levels in ``fpn_top_down_levels``; a normalised sine position encoding per level.

``VisionEncoder``
  In:  pixel values (B, 1024, 1024, 3).
  Out: ``VisionEncoderOutput`` whose ``fpn_hidden_states`` / ``fpn_position_encoding`` keep the last
       ``num_feature_levels`` levels, highest resolution first: (B, 256, 256, 256), (B, 128, 128, 256),
       (B, 64, 64, 256) for a 1024 input (the 32x32 level is dropped after feeding the top-down path).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..config import VisionConfig
from .hiera import Hiera
from .implementation import Implementation
from .layers import Dtype


@functools.lru_cache(maxsize=16)
def sine_position_encoding(height: int, width: int, num_features: int, temperature: float = 10000.0) -> np.ndarray:
    """Normalised 2-D sine position encoding (scale 2*pi), (height, width, 2 * num_features): y block, then x."""
    eps, scale = 1e-6, 2 * np.pi
    y = np.arange(1, height + 1, dtype=np.float32)
    x = np.arange(1, width + 1, dtype=np.float32)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = np.arange(num_features, dtype=np.float32)
    dim_t = np.float32(temperature) ** (2 * (dim_t // 2) / num_features)

    def encode(v):  # (n,) -> (n, num_features), sin on even and cos on odd features
        p = v[:, None] / dim_t
        return np.stack([np.sin(p[:, 0::2]), np.cos(p[:, 1::2])], axis=-1).reshape(len(v), num_features)

    pos_y = np.broadcast_to(encode(y)[:, None, :], (height, width, num_features))
    pos_x = np.broadcast_to(encode(x)[None, :, :], (height, width, num_features))
    return np.concatenate([pos_y, pos_x], axis=-1).astype(np.float32)


class VisionNeck(nn.Module):
    """The FPN neck (transformers ``Sam2VisionNeck``); see the module docstring."""

    config: VisionConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states: tuple[jax.Array, ...]) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        c = self.config
        n = len(hidden_states) - 1
        fpn, pos = [], []
        prev = None
        for i in range(n, -1, -1):
            lateral = nn.Conv(c.fpn_hidden_size, (1, 1), dtype=self.dtype, name=f"convs_{n - i}")(hidden_states[i])
            if i in c.fpn_top_down_levels and i != n:
                top_down = jnp.repeat(jnp.repeat(prev, 2, axis=1), 2, axis=2)
                prev = lateral + top_down
            else:
                prev = lateral
            b, h, w, _ = prev.shape
            enc = sine_position_encoding(h, w, c.fpn_hidden_size // 2)
            fpn.append(prev)
            pos.append(jnp.broadcast_to(jnp.asarray(enc, self.dtype), (b, h, w, c.fpn_hidden_size)))
        return tuple(fpn), tuple(pos)


@flax.struct.dataclass
class VisionEncoderOutput:
    """Channels-last counterpart of transformers' ``Sam2VisionEncoderOutput``."""

    last_hidden_state: jax.Array  # (B, H/32, W/32, C3), the last Hiera stage
    fpn_hidden_states: tuple[jax.Array, ...]  # highest resolution first
    fpn_position_encoding: tuple[jax.Array, ...]  # same shapes as fpn_hidden_states
    intermediate_hidden_states: tuple[jax.Array, ...]  # every Hiera stage output
    hidden_states: tuple[jax.Array, ...]  # embedded patches, then every Hiera block (transformers' hidden_states)


class VisionEncoder(nn.Module):
    """Hiera backbone + FPN neck (transformers ``Sam2VisionModel``)."""

    config: VisionConfig
    dtype: Dtype = jnp.float32
    implementation: Implementation = Implementation()

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> VisionEncoderOutput:
        backbone = Hiera(self.config.backbone_config, self.dtype, self.implementation, name="backbone")
        stages, hidden_states = backbone(pixel_values)
        fpn, pos = VisionNeck(self.config, self.dtype, name="neck")(stages)
        k = self.config.num_feature_levels
        return VisionEncoderOutput(
            last_hidden_state=stages[-1],
            fpn_hidden_states=tuple(fpn[-k:][::-1]),
            fpn_position_encoding=tuple(pos[-k:][::-1]),
            intermediate_hidden_states=stages,
            hidden_states=hidden_states,
        )
