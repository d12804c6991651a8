"""Mask logits: bilinear upsampling, stability scores and the non-overlap constraint, one implementation each.

  interpolation_matrix(n_in, n_out)            -> (n_out, n_in) float32 weights of 1-D bilinear resizing
  upsample_bilinear(x (..., h, w), (H, W))     -> (..., H, W) float32 jax.Array, ``align_corners=False``
  stability_score(logits (..., H, W), threshold, offset, empty_value) -> (...) float32
  apply_non_overlapping(masks (P, M, H, W))    -> (P, M, H, W) NumPy

``upsample_bilinear`` and ``stability_score`` are jax.numpy: they run under ``jit`` and take NumPy inputs too
(returning a ``jax.Array``; ``np.asarray`` it for the host). The processor's ``post_process_masks``, the image
predictor, the automatic mask generator, the streaming writer and the mask decoder all use them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# the official predictors clamp low-resolution logits to +-32 where they are handed back as a mask prompt
LOW_RES_CLAMP = 32.0


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of linear resizing with ``align_corners=False``: each row holds the two taps
    of torch's CPU ``upsample_bilinear2d`` with its float32 arithmetic: scale = float32(n_in) / n_out;
    src = scale * (i + 0.5) - 0.5 rounded once to float32 (a fused multiply-add), clamped at 0;
    i0 = trunc(src); w1 = src - i0. (Computing src in float64 instead is more exact, but moves the weights by
    up to ~1e-5 at 1000+ px and the logits by up to ~4e-4, enough to flip a few thresholded pixels.)"""
    scale = float(np.float32(n_in) / np.float32(n_out))
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)  # exact in f64, one rounding
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), np.float32(1.0) - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def upsample_bilinear(x, size: tuple[int, int]) -> jax.Array:
    """(..., h, w) -> (..., H, W) bilinear, ``align_corners=False``, like torch's ``F.interpolate``.

    Two small matrix products (columns, then rows, the order of torch's kernel) at full float32 precision: on
    CPU several times faster than gathering the taps, and the natural form for an accelerator. Within float32
    rounding (~1e-6 relative) of torch."""
    x = jnp.asarray(x, jnp.float32)
    h, w = x.shape[-2:]
    rows = jnp.asarray(interpolation_matrix(h, int(size[0])))
    cols = jnp.asarray(interpolation_matrix(w, int(size[1])))
    hi = jax.lax.Precision.HIGHEST
    t = jnp.matmul(x, cols.T, precision=hi)  # (..., h, W)
    return jnp.matmul(rows, t, precision=hi)  # (..., H, W)


def stability_score(mask_logits, threshold: float = 0.0, offset: float = 1.0, empty_value: float = float("nan")):
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``, over the last two axes.

    The high mask lies inside the low one, so the IoU is a ratio of pixel counts. (..., H, W) logits -> (...)
    float32; ``empty_value`` where the low mask is empty (the mask decoder uses 1.0, the automatic mask
    generator NaN, the official 0 / 0). jax.numpy: works under ``jit`` and on NumPy inputs."""
    x = jnp.asarray(mask_logits)
    inter = jnp.sum(x > threshold + offset, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(x > threshold - offset, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), jnp.float32(empty_value))


def apply_non_overlapping(masks: np.ndarray) -> np.ndarray:
    """transformers' ``_apply_non_overlapping_constraints`` on (P, M, H, W): keep, per pixel and mask slot, only
    the object with the highest logit; the others are clamped to at most -10."""
    if masks.shape[0] == 1:
        return masks
    keep = np.argmax(masks, axis=0)[None] == np.arange(masks.shape[0])[:, None, None, None]
    return np.where(keep, masks, np.minimum(masks, -10.0))
