"""Small building blocks shared by the SAM 2 modules: exact GELU, LayerNorm at parity precision, the MLP
used by Hiera and the mask decoder heads, max pooling, and torch-compatible bicubic resizing (attention lives in
``attention.py``).

Everything is channels-last. ``dtype`` is the computation dtype; parameters stay in ``param_dtype``.
LayerNorm statistics are always accumulated in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import mixed_precision as mp

Dtype = Any

# ``nn.Dense`` whose bf16 products accumulate in float32 where the platform does that natively (mixed_precision).
Dense = functools.partial(nn.Dense, dot_general=mp.dot_general)


def gelu(x: jax.Array) -> jax.Array:
    """The exact (erf) GELU of ``torch.nn.GELU()``; ``flax.linen.gelu`` defaults to the tanh approximation."""
    return nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"gelu": gelu, "relu": nn.relu}


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with ``scale``/``bias`` params, statistics in float32, output in ``dtype``."""

    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class FeedForward(nn.Module):
    """``proj_in`` -> act -> (``layers_i`` -> act)* -> ``proj_out`` [-> sigmoid] (transformers ``Sam2FeedForward``)."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    activation: str = "relu"
    sigmoid_output: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = act(Dense(self.hidden_dim, dtype=self.dtype, name="proj_in")(x))
        for i in range(self.num_layers - 2):
            x = act(Dense(self.hidden_dim, dtype=self.dtype, name=f"layers_{i}")(x))
        x = Dense(self.output_dim, dtype=self.dtype, name="proj_out")(x)
        if self.sigmoid_output:
            x = jax.nn.sigmoid(x.astype(jnp.float32)).astype(self.dtype)
        return x


def max_pool(x: jax.Array, stride: tuple[int, int]) -> jax.Array:
    """Non-overlapping max pooling of (B, H, W, C) with kernel == stride, floor mode like torch.

    A reshape and a max over the window axes: the same result as ``reduce_window``, about twice as fast on CPU.
    """
    (sh, sw), (b, h, w, c) = stride, x.shape
    x = x[:, : h // sh * sh, : w // sw * sw]
    return x.reshape(b, h // sh, sh, w // sw, sw, c).max(axis=(2, 4))


@functools.lru_cache(maxsize=32)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of torch's ``interpolate(mode="bicubic", align_corners=False)`` on one axis.

    torch uses the cubic convolution kernel with a = -0.75, the half-pixel source index without clamping,
    and clamps the four taps at the border. ``jax.image.resize`` uses a = -0.5 and differs by several percent.
    """
    a = -0.75

    def cubic1(t):  # |t| <= 1
        return ((a + 2) * t - (a + 3)) * t * t + 1

    def cubic2(t):  # 1 < |t| < 2
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    m = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = scale * (i + 0.5) - 0.5
        i0 = int(np.floor(src))
        t = src - i0
        taps = (cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t))
        for j, w in enumerate(taps):
            m[i, min(max(i0 - 1 + j, 0), in_size - 1)] += w
    return m.astype(np.float32)


def resize_bicubic(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Resize (B, H, W, C) to ``size`` exactly as torch's bicubic ``F.interpolate`` (differentiable)."""
    mh = jnp.asarray(bicubic_matrix(x.shape[1], size[0]), x.dtype)
    mw = jnp.asarray(bicubic_matrix(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)
