"""Boxes and non-maximum suppression, with the semantics of the official ``sam2.utils.amg`` and torchvision.

Shapes (N, M boxes, H x W pixels; boxes are ``x0, y0, x1, y1`` unless named ``xywh``):

  box_xyxy_to_xywh(boxes (..., 4))             -> (..., 4)
  batched_mask_to_box(masks (..., H, W) bool)  -> (..., 4) int64, [0, 0, 0, 0] for an empty mask (NumPy in,
                                                  NumPy out; ``mask_to_box`` is the same in jax.numpy, for jit)
  occupied_span(occupied, index, axis)         -> first and last occupied index (a box's two edges)
  box_iou(boxes1 (N, 4), boxes2 (M, 4))        -> (N, M) float32
  nms / batched_nms(boxes (N, 4), scores (N,), [categories (N,)], iou_threshold) -> kept indices, best first

The greedy NMS loops once per kept box, each step vectorised.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def box_xyxy_to_xywh(boxes) -> np.ndarray:
    """(..., 4) xyxy -> (..., 4) xywh, a new array of the same dtype."""
    out = np.array(boxes, copy=True)
    out[..., 2:] = out[..., 2:] - out[..., :2]
    return out


def occupied_span(occupied, index, axis=-1):
    """First and last ``index`` where ``occupied`` holds, reduced over ``axis`` (an int or a tuple), in jax.numpy;
    0 and 0 where nothing is occupied (the official empty box). ``index`` broadcasts against ``occupied``."""
    any_ = jnp.any(occupied, axis=axis)
    first = jnp.min(jnp.where(occupied, index, np.iinfo(np.int32).max), axis=axis)
    last = jnp.max(jnp.where(occupied, index, -1), axis=axis)
    return jnp.where(any_, first, 0), jnp.where(any_, last, 0)


def mask_to_box(masks):
    """Tight xyxy boxes (inclusive pixel indices) of masks (..., H, W), in jax.numpy (works under jit);
    [0, 0, 0, 0] for an empty mask (the official convention)."""
    masks = jnp.asarray(masks, bool)
    h, w = masks.shape[-2:]
    x0, x1 = occupied_span(jnp.any(masks, axis=-2), jnp.arange(w))
    y0, y1 = occupied_span(jnp.any(masks, axis=-1), jnp.arange(h))
    return jnp.stack([x0, y0, x1, y1], axis=-1)


def batched_mask_to_box(masks) -> np.ndarray:
    """``mask_to_box`` on host arrays: (..., H, W) bool -> (..., 4) int64."""
    masks = np.asarray(masks, bool)
    if masks.size == 0:
        return np.zeros((*masks.shape[:-2], 4), np.int64)
    return np.asarray(mask_to_box(masks)).astype(np.int64)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_one(box: np.ndarray, area: np.float32, boxes: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """IoU of one box with many, in float32 with torchvision's ``nms`` kernel's order of operations."""
    w = np.maximum(np.float32(0), np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(np.float32(0), np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area + areas - inter)


def box_iou(boxes1, boxes2) -> np.ndarray:
    """(N, M) IoU of xyxy boxes, float32 (NaN between two empty boxes)."""
    b1 = np.asarray(boxes1, np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
    a1, a2 = _areas(b1), _areas(b2)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.maximum(rb - lt, np.float32(0))
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (a1[:, None] + a2[None, :] - inter)


def batched_nms(boxes, scores, idxs, iou_threshold: float) -> np.ndarray:
    """Greedy NMS within each category, like ``torchvision.ops.batched_nms``: visit boxes by decreasing score
    (ties in index order), keep one and drop the later boxes of its category with IoU > ``iou_threshold``.
    Returns the kept indices (int64), best score first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(scores)} scores for {len(boxes)} boxes")
    idxs = np.zeros(len(boxes), np.int64) if idxs is None else np.asarray(idxs).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    b, cat = boxes[order], idxs[order]
    areas = _areas(b)
    keep = []
    remaining = np.arange(len(order))
    while remaining.size:
        i, rest = remaining[0], remaining[1:]
        keep.append(i)
        iou = _iou_one(b[i], areas[i], b[rest], areas[rest]).astype(np.float64)  # compared like C++: as double
        remaining = rest[~((iou > iou_threshold) & (cat[rest] == cat[i]))]
    return order[np.asarray(keep, np.int64)]


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """``torchvision.ops.nms``: ``batched_nms`` with one category."""
    return batched_nms(boxes, scores, None, iou_threshold)
