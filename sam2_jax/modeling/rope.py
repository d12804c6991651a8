"""2-D axial rotary position embedding (RoPE) of the memory attention (transformers
``Sam2VideoVisionRotaryEmbedding`` + ``apply_rotary_pos_emb_2d``; official ``compute_axial_cis`` +
``apply_rotary_enc``).

``axial_rope(height, width, head_dim, theta)``
  Out: (cos, sin), each (height * width, head_dim) float32 NumPy, tokens in row-major order (x fastest). Channel
  pairs (2i, 2i + 1) rotate by one angle: the first head_dim / 2 channels by x * f_j, the last head_dim / 2 by
  y * f_j, with f_j = theta ** (-4 j / head_dim), j < head_dim / 4. Angles are formed in float32 as the references do.

``apply_rope(x, cos, sin, repeat=1, num_exclude=0)``
  In:  x (..., T, head_dim); cos / sin (N, head_dim) for one grid of N tokens.
  Out: x rotated, same shape and dtype (computed in float32). The first ``T - num_exclude`` tokens are ``repeat``
       grids of N tokens (one per memory frame: the references' ``rope_k_repeat``) and are rotated; the last
       ``num_exclude`` tokens (the object-pointer tokens) pass unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=16)
def axial_rope(height: int, width: int, head_dim: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of the 2-D axial RoPE over a ``height`` x ``width`` grid; see the module docstring."""
    if head_dim % 4:
        raise ValueError(f"2-D axial RoPE needs a head width divisible by 4, got {head_dim}")
    freqs = np.float32(1.0) / (
        np.float32(theta) ** (np.arange(0, head_dim, 4, dtype=np.float32) / np.float32(head_dim))
    )
    t = np.arange(height * width)
    x = (t % width).astype(np.float32)
    y = (t // width).astype(np.float32)
    angles = np.concatenate([np.outer(x, freqs), np.outer(y, freqs)], axis=-1).astype(np.float32)  # (N, head_dim/2)
    angles = np.repeat(angles, 2, axis=-1)  # one angle per channel pair
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_pairs(x: jax.Array) -> jax.Array:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): multiplication by i of each channel pair."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def apply_rope(x: jax.Array, cos, sin, repeat: int = 1, num_exclude: int = 0) -> jax.Array:
    """Rotate the first ``repeat`` grids of tokens of ``x``; see the module docstring."""
    n_rot = x.shape[-2] - num_exclude
    if n_rot != repeat * cos.shape[0]:
        raise ValueError(
            f"RoPE: {n_rot} tokens to rotate are not {repeat} grid(s) of {cos.shape[0]} (excluding {num_exclude})"
        )
    if n_rot == 0:
        return x
    cos = jnp.tile(jnp.asarray(cos, jnp.float32), (repeat, 1))
    sin = jnp.tile(jnp.asarray(sin, jnp.float32), (repeat, 1))
    rot = x[..., :n_rot, :].astype(jnp.float32)
    rot = (rot * cos + rotate_pairs(rot) * sin).astype(x.dtype)
    if num_exclude == 0:
        return rot
    return jnp.concatenate([rot, x[..., n_rot:, :]], axis=-2)
