"""Mask logits: bilinear upsampling, stability scores and the non-overlap constraint, one implementation each.

  interpolation_taps(n_in, n_out)              -> i0, i1 (n_out,) int32 source indices, w0, w1 (n_out,) float32
  interpolation_matrix(n_in, n_out)            -> (n_out, n_in) float32 weights of 1-D bilinear resizing
  upsample_bilinear(x (..., h, w), (H, W))     -> (..., H, W) float32 jax.Array, ``align_corners=False``
  upsample_bilinear_taps(x (..., h, w), (H, W)) -> (..., H, W) float32, the same taps gathered (large outputs)
  masks_to_size(x (..., h, w), (H, W), threshold, binarize) -> (..., H, W) bool (or float32), two compiled calls
  stability_score(logits (..., H, W), threshold, offset, empty_value) -> (...) float32
  apply_non_overlapping(masks (P, M, H, W))    -> (P, M, H, W) NumPy

``upsample_bilinear`` and ``stability_score`` are jax.numpy: they run under ``jit`` and take NumPy inputs too
(returning a ``jax.Array``; ``np.asarray`` it for the host). The processor's ``post_process_masks``, the automatic
mask generator, the streaming writer and the mask decoder use ``upsample_bilinear``; the image predictor uses
``masks_to_size`` (the same taps, two per output pixel, the row pass and the threshold in one compiled loop).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# the official predictors clamp low-resolution logits to +-32 where they are handed back as a mask prompt
LOW_RES_CLAMP = 32.0


def interpolation_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two taps of 1-D linear resizing with ``align_corners=False``, as torch's CPU ``upsample_bilinear2d``
    computes them in float32: scale = float32(n_in) / n_out; src = scale * (i + 0.5) - 0.5 rounded once to
    float32 (a fused multiply-add), clamped at 0; i0 = trunc(src), i1 = min(i0 + 1, n_in - 1); w1 = src - i0,
    w0 = 1 - w1. Returns i0, i1 (n_out,) int32 and w0, w1 (n_out,) float32. (Computing src in float64 instead is
    more exact, but moves the weights by up to ~1e-5 at 1000+ px and the logits by up to ~4e-4, enough to flip a
    few thresholded pixels.)"""
    scale = float(np.float32(n_in) / np.float32(n_out))
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)  # exact in f64, one rounding
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return i0.astype(np.int32), i1.astype(np.int32), np.float32(1.0) - w1, w1


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of linear resizing with ``align_corners=False``: row i holds the two taps of
    ``interpolation_taps`` (summed where they fall on the same source pixel, at the border)."""
    i0, i1, w0, w1 = interpolation_taps(n_in, n_out)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), w0)
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


def _columns(x, width: int) -> jax.Array:
    """(..., h, w) -> (..., h, width): the column pass of ``upsample_bilinear_taps``."""
    c0, c1, cw0, cw1 = interpolation_taps(x.shape[-1], width)
    return jnp.take(x, c0, axis=-1) * cw0 + jnp.take(x, c1, axis=-1) * cw1


def _rows(t, height: int) -> jax.Array:
    """(..., h, W) -> (..., height, W): the row pass of ``upsample_bilinear_taps``."""
    r0, r1, rw0, rw1 = interpolation_taps(t.shape[-2], height)
    return jnp.take(t, r0, axis=-2) * rw0[:, None] + jnp.take(t, r1, axis=-2) * rw1[:, None]


def upsample_bilinear_taps(x, size: tuple[int, int]) -> jax.Array:
    """(..., h, w) -> (..., H, W) bilinear, ``align_corners=False``: ``upsample_bilinear``'s taps, gathered.

    Columns first ((..., h, W)), then rows, torch's order: each output pixel is w0 * a + w1 * b of two gathered
    values, 2 multiply-adds where the matrix form spends h + w. Equal to ``upsample_bilinear`` up to float32
    rounding (one ulp: the matrix product may fuse the multiply-adds differently). Under one ``jit`` XLA fuses
    both passes into one loop that recomputes the column pass per output row; ``masks_to_size`` compiles the
    two passes apart instead (about twice as fast for large outputs)."""
    x = jnp.asarray(x, jnp.float32)
    return _rows(_columns(x, int(size[1])), int(size[0]))


@functools.partial(jax.jit, static_argnames=("width",))
def _columns_jit(x, width: int) -> jax.Array:
    return _columns(jnp.asarray(x, jnp.float32), width)


@functools.partial(jax.jit, static_argnames=("height", "binarize"))
def rows_jit(t, threshold, height: int, binarize: bool) -> jax.Array:
    """The compiled row pass of the upsampling, to ``height`` rows (thresholded when ``binarize``)."""
    up = _rows(t, height)
    return up > jnp.asarray(threshold, jnp.float32) if binarize else up


def masks_to_size(x, size: tuple[int, int], threshold=0.0, binarize: bool = True) -> jax.Array:
    """Low-res mask logits (..., h, w) -> (..., H, W) at ``size`` = (H, W): bool ``logits > threshold`` (1 byte a
    pixel, the full-size logits never stored) when ``binarize``, else the float32 logits.

    The official ``SAM2Transforms.postprocess_masks`` (bilinear, ``align_corners=False``, no antialiasing,
    straight to the original size) followed by the predictor's threshold, as two compiled calls on the device:
    the column pass ((..., h, W) float32, small), then the row pass fused with the threshold, which writes only
    the result. On CPU ~0.15-0.3 s for 64 masks to 1500 x 2250 on one core, against ~2.7 s for the matrix form
    (``upsample_bilinear``). ``size`` and ``binarize`` are static: one compile per input shape, output size and
    ``binarize``; ``threshold`` is traced (a new threshold does not recompile)."""
    return rows_jit(_columns_jit(x, int(size[1])), threshold, int(size[0]), bool(binarize))


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
