"""Prompt simulation for training (the official ``SAM2Train``'s clicks and boxes), jit-able, explicit PRNG keys.

Masks are boolean (..., H, W); coordinates come back as (x, y) pixel indices of that grid (the official
convention: no half-pixel shift), float32. Scale them to the model frame with ``image_size / W`` when the masks
are not at the model's resolution. Every shape is static; ``...`` is any batch shape, e.g. (B, P).

  mask_to_box(masks (..., H, W)) -> (..., 4) (x1, y1, x2, y2) float32, inclusive pixel bounds; an empty mask
        gives (W, H, -1, -1) as the official ``mask_to_box``
  sample_box(key, masks, noise=0.1, noise_bound=20) -> points (..., 2, 2), labels (..., 2) int32 = (2, 3):
        the box as its two corner points (``processing.prompts.as_corner_points``'s convention); with
        ``noise > 0`` each coordinate moves by U(-1, 1) * min(noise * box side, noise_bound) and is clamped
        to the image (the official ``sample_box_points``)
  sample_error_points(key, gt (..., H, W), pred (..., H, W) or None, num_points=1) -> points (..., n, 2),
        labels (..., n) int32: the official ``sample_random_points_from_errors``: each click is uniform over
        the error pixels, labelled 1 (positive) in the false-negative region (gt and not pred) and 0 (negative)
        in the false-positive region; when the prediction is exactly right, a negative click on the background.
        ``pred=None`` (an empty prediction) gives a uniform positive click inside the mask.
  sample_initial_prompt(key, gt, use_box=False, noise=0.1, noise_bound=20) -> points (..., 2, 2),
        labels (..., 2), prompt_mask (..., 2) bool: a click (then one padding point: (0, 0),
        ``NOT_A_POINT_LABEL``, mask False, the rule of ``processing.prompts.pad_batch``) or a box as two corners
  append_points(points, labels, prompt_mask, new_points, new_labels) -> the three concatenated along the point
        axis (the official ``concat_points``), the new points unmasked
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..modeling.prompt_encoder import NOT_A_POINT_LABEL
from ..processing.prompts import BOX_CORNER_LABELS

__all__ = ["mask_to_box", "sample_box", "sample_error_points", "sample_initial_prompt", "append_points"]


def mask_to_box(masks) -> jax.Array:
    """(..., H, W) bool -> (..., 4) float32 (x1, y1, x2, y2); empty masks give (W, H, -1, -1)."""
    masks = jnp.asarray(masks, bool)
    h, w = masks.shape[-2:]
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)  # (..., H), (..., W)
    xs, ys = jnp.arange(w), jnp.arange(h)
    x1 = jnp.where(cols, xs, w).min(-1)
    x2 = jnp.where(cols, xs, -1).max(-1)
    y1 = jnp.where(rows, ys, h).min(-1)
    y2 = jnp.where(rows, ys, -1).max(-1)
    return jnp.stack([x1, y1, x2, y2], axis=-1).astype(jnp.float32)


def sample_box(key, masks, noise: float = 0.1, noise_bound: float = 20.0) -> tuple[jax.Array, jax.Array]:
    """The mask's bounding box as corner points (..., 2, 2) with labels (..., 2) = (2, 3), optionally jittered."""
    masks = jnp.asarray(masks, bool)
    h, w = masks.shape[-2:]
    box = mask_to_box(masks)
    if noise > 0:
        max_dx = jnp.minimum((box[..., 2] - box[..., 0]) * noise, noise_bound)
        max_dy = jnp.minimum((box[..., 3] - box[..., 1]) * noise, noise_bound)
        scale = jnp.stack([max_dx, max_dy, max_dx, max_dy], axis=-1)
        box = box + jax.random.uniform(key, box.shape, jnp.float32, -1.0, 1.0) * scale
        box = jnp.clip(box, 0.0, jnp.array([w - 1, h - 1, w - 1, h - 1], jnp.float32))
    labels = jnp.broadcast_to(jnp.asarray(BOX_CORNER_LABELS, jnp.int32), (*box.shape[:-1], 2))
    return box.reshape(*box.shape[:-1], 2, 2), labels


def sample_error_points(key, gt, pred=None, num_points: int = 1) -> tuple[jax.Array, jax.Array]:
    """Clicks (..., n, 2) and labels (..., n) from the error regions of ``pred`` against ``gt`` (see above)."""
    gt = jnp.asarray(gt, bool)
    pred = jnp.zeros_like(gt) if pred is None else jnp.asarray(pred, bool)
    h, w = gt.shape[-2:]
    fp = ~gt & pred
    fn = gt & ~pred
    all_correct = jnp.all(gt == pred, axis=(-2, -1), keepdims=True)
    negative = fp | (all_correct & ~gt)
    allowed = jnp.stack([negative, fn], axis=-1)[..., None, :, :, :]  # (..., 1, H, W, 2): channel = label
    noise = jax.random.uniform(key, (*gt.shape[:-2], num_points, h, w, 2), jnp.float32)
    idx = jnp.argmax((noise * allowed).reshape(*noise.shape[:-3], h * w * 2), axis=-1)
    labels = (idx % 2).astype(jnp.int32)
    pixel = idx // 2
    points = jnp.stack([pixel % w, pixel // w], axis=-1).astype(jnp.float32)
    return points, labels


def sample_initial_prompt(
    key, gt, use_box: bool = False, noise: float = 0.1, noise_bound: float = 20.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A first prompt per mask, as two point slots: a click and a padding point, or a box's two corners."""
    gt = jnp.asarray(gt, bool)
    if use_box:
        points, labels = sample_box(key, gt, noise, noise_bound)
        return points, labels, jnp.ones(labels.shape, bool)
    click, label = sample_error_points(key, gt, None, 1)
    points = jnp.concatenate([click, jnp.zeros_like(click)], axis=-2)
    labels = jnp.concatenate([label, jnp.full_like(label, NOT_A_POINT_LABEL)], axis=-1)
    mask = jnp.concatenate([jnp.ones(label.shape, bool), jnp.zeros(label.shape, bool)], axis=-1)
    return points, labels, mask


def append_points(points, labels, prompt_mask, new_points, new_labels):
    """Concatenate new clicks (..., n, 2) / (..., n) after the existing ones; ``prompt_mask`` None = all valid."""
    if prompt_mask is None:
        prompt_mask = jnp.ones(labels.shape, bool)
    points = jnp.concatenate([points, new_points.astype(points.dtype)], axis=-2)
    labels = jnp.concatenate([labels, new_labels.astype(labels.dtype)], axis=-1)
    prompt_mask = jnp.concatenate([prompt_mask, jnp.ones(new_labels.shape, bool)], axis=-1)
    return points, labels, prompt_mask
