"""Stability scores and boxes of bilinearly upsampled mask logits, without gathers or full-size products.

  grouped_taps(n_in, n_out)  -> ``GroupedTaps``: ``interpolation_taps`` laid out as (n_in + 1, S) slots
  upsample_grouped(x (..., h, w), (H, W)) -> (..., h + 1, Sh, w + 1, Sw) full-size logits in slots, NaN in padding
  stability_and_boxes(x (..., h, w), (H, W), threshold, offset, empty_value)
                             -> stability (...) float32, xyxy boxes (..., 4) int32 at (H, W)

The automatic mask generator thresholds each candidate's logits, upsampled to the crop's size, three times (the
stability score's two counts and the box). Bilinear resizing with ``align_corners=False`` gives output pixel i
the taps ``i0, min(i0 + 1, n - 1)`` with weights ``w0, w1`` (``masks.interpolation_taps``, torch's float32
numbers); the matrix form (``masks.upsample_bilinear``) spends h + w multiply-adds a pixel, the gathered form
(``masks.upsample_bilinear_taps``) 2, but XLA's CPU reductions over a gather are slow.

Here the outputs of one axis are grouped by their first tap: group g (g = 0 .. n_in) holds the outputs whose taps
are ``x_ext[g], x_ext[g + 1]`` of the input with its first and last row repeated (``x_ext = [x0, x0, ..., x_last,
x_last]``; group 0 takes the outputs torch clamps to the first pixel, with weights 1, 0), in S slots (the most
outputs any group has; padding slots have NaN weights, so they pass no threshold). Both passes are then shifted
slices and broadcasts:

  columns  t[..., r, g, j] = w0[g, j] * x_ext[..., r, g] + w1[g, j] * x_ext[..., r, g + 1]   ((..., h, G, S) small)
  rows     u[..., g, j, c] = v0[g, j] * t_ext[..., g, c] + v1[g, j] * t_ext[..., g + 1, c]  (never stored)

the same products and sums per pixel as torch (columns first), so the counts equal thresholding
``upsample_bilinear_taps``' output (up to a one-ulp difference where XLA fuses a multiply-add). The counts and
the box's row / column occupancy are reductions over ``u``, fused by XLA into loops over contiguous memory: about
2 multiply-adds and 3 compares a padded pixel, (n_in + 1) * S / n_out more pixels than the output (~1.1 for 256
-> 1200 x 1800).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .boxes import occupied_span
from .masks import interpolation_taps


class GroupedTaps(NamedTuple):
    """One axis' taps in (G, S) slots, G = n_in + 1 groups: weights w0, w1 (G, S) float32 (NaN in padding, so
    that a padded slot's value is NaN and passes no threshold), the output index of each slot (G, S) int32 (-1
    in padding)."""

    w0: np.ndarray
    w1: np.ndarray
    index: np.ndarray


@functools.lru_cache(maxsize=64)
def grouped_taps(n_in: int, n_out: int) -> GroupedTaps:
    """``interpolation_taps(n_in, n_out)`` grouped by first tap (see the module docstring)."""
    i0, _, w0, w1 = interpolation_taps(n_in, n_out)  # i1 = min(i0 + 1, n_in - 1)
    # group g uses x_ext[g], x_ext[g + 1] of x_ext = [x0, x0, x1, ..., x_last, x_last]; where torch clamps the
    # source position at 0 (w1 = 0, i0 = 0) the value is 1 * x0 + 0 * x0 == x0, torch's 1 * x0 + 0 * x1
    group = np.where((i0 == 0) & (w1 == 0), 0, i0 + 1)
    g_n = n_in + 1
    counts = np.bincount(group, minlength=g_n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(n_out) - starts[group]  # the outputs are sorted by group (the taps are monotonic)
    shape = (g_n, int(counts.max()))
    gw0, gw1 = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    index = np.full(shape, -1, np.int32)
    gw0[group, slot], gw1[group, slot], index[group, slot] = w0, w1, np.arange(n_out)
    return GroupedTaps(gw0, gw1, index)


def _extend(x, axis: int):
    """Repeat the first and last entries along ``axis``: (.., n, ..) -> (.., n + 2, ..)."""
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
    return jnp.concatenate([first, x, last], axis=axis)


def _passes(x, size: tuple[int, int]):
    """(..., h, w) -> (..., h + 2, Gw, Sw) column pass with its rows extended, and the row pass as a function
    of it: (..., Gh, Sh, Gw, Sw), NaN in padded slots. XLA fuses the row pass into whatever consumes it."""
    rows, cols = grouped_taps(x.shape[-2], int(size[0])), grouped_taps(x.shape[-1], int(size[1]))
    e = _extend(x, -1)
    t = _extend(e[..., :-1, None] * cols.w0 + e[..., 1:, None] * cols.w1, -3)  # (..., h + 2, Gw, Sw)
    w0, w1 = rows.w0[:, :, None, None], rows.w1[:, :, None, None]
    return t, lambda t: t[..., :-1, None, :, :] * w0 + t[..., 1:, None, :, :] * w1


def upsample_grouped(x, size: tuple[int, int]):
    """(..., h, w) -> (..., h + 1, Sh, w + 1, Sw) float32 upsampled logits in grouped slots, NaN in padding.
    For tests and small outputs; ``stability_and_boxes`` never stores it."""
    t, row_pass = _passes(jnp.asarray(x, jnp.float32), size)
    return row_pass(t)


def _count(per_slot_sums, shift: int):
    """(..., Gh, Gw, Sw) uint8 per-group counts (4 bits from ``shift``, or all 8) -> (...) int32 totals: summed
    over the groups in uint16 (at most 255 * (h + 1) per column), then over columns in int32."""
    c = per_slot_sums if shift is None else (per_slot_sums >> shift) & 15
    return jnp.sum(jnp.sum(c, axis=-3, dtype=jnp.uint16), axis=(-2, -1), dtype=jnp.int32)


def stability_and_boxes(x, size: tuple[int, int], threshold, offset, empty_value: float = float("nan")):
    """(..., h, w) low-res logits -> stability scores (...) float32 (``masks.stability_score`` of the logits
    upsampled to ``size``; ``empty_value`` where the low mask is empty) and xyxy boxes (..., 4) int32 of
    ``upsampled > threshold`` (``boxes.mask_to_box``'s convention). Traceable; ``size`` must be static.

    Each reduction runs over one axis group of the fused row pass, in narrow integers (XLA's CPU loops vectorise
    uint8 sums and boolean ``any``; int32 sums over a fused producer run 3-4x slower): the two counts per
    group as one uint8 (4 bits each while a group has at most 15 rows), the box's column and row occupancy as
    ``any``. The optimisation barriers keep XLA from merging them into one multi-output loop (2x slower)."""
    x = jnp.asarray(x, jnp.float32)
    rows, cols = grouped_taps(x.shape[-2], int(size[0])), grouped_taps(x.shape[-1], int(size[1]))
    hi, lo, thr = (jnp.asarray(v, jnp.float32) for v in (threshold + offset, threshold - offset, threshold))
    t, row_pass = _passes(x, size)
    up = row_pass(t)
    if rows.index.shape[1] <= 15:
        packed = jnp.sum((up > hi).astype(jnp.uint8) | ((up > lo).astype(jnp.uint8) << 4), axis=-3, dtype=jnp.uint8)
        packed, t = jax.lax.optimization_barrier((packed, t))
        inter, union = _count(packed, 0), _count(packed, 4)
    else:
        inter = jnp.sum(up > hi, axis=-3, dtype=jnp.uint8)
        inter, t = jax.lax.optimization_barrier((inter, t))
        union = jnp.sum(row_pass(t) > lo, axis=-3, dtype=jnp.uint8)
        union, t = jax.lax.optimization_barrier((union, t))
        inter, union = _count(inter, None), _count(union, None)
    in_columns = jnp.any(row_pass(t) > thr, axis=(-4, -3))
    in_columns, t = jax.lax.optimization_barrier((in_columns, t))
    in_rows = jnp.any(row_pass(t) > thr, axis=(-2, -1))
    inter, union = inter.astype(jnp.float32), union.astype(jnp.float32)
    stability = jnp.where(union > 0, inter / jnp.maximum(union, 1.0), jnp.float32(empty_value))
    y0, y1 = occupied_span(in_rows, jnp.asarray(rows.index), axis=(-2, -1))
    x0, x1 = occupied_span(in_columns, jnp.asarray(cols.index), axis=(-2, -1))
    return stability, jnp.stack([x0, y0, x1, y1], axis=-1).astype(jnp.int32)
