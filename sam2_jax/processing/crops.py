"""Point grids and crops of automatic mask generation, with the semantics of the official ``sam2.utils.amg``.

Shapes (N boxes; boxes are ``x0, y0, x1, y1``):

  build_point_grid(n)                          -> (n * n, 2) float64 points in [0, 1], x fastest
  build_all_layer_point_grids(n, layers, s)    -> [(n_i * n_i, 2)] with n_i = int(n / s**i), i = 0..layers
  generate_crop_boxes((h, w), layers, ratio)   -> ([[x0, y0, x1, y1]] int, [layer index]), whole image first
  uncrop_boxes_xyxy(boxes (..., 4), crop) / uncrop_points(points (..., 2), crop): crop frame -> image frame
  uncrop_masks(masks (..., h, w), crop, H, W)  -> (..., H, W), zero outside the crop
  is_box_near_crop_edge(boxes (N, 4), crop, image) -> (N,) bool
"""

from __future__ import annotations

import math

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n * n, 2) points evenly spaced in [0, 1]^2, at the cell centres, row by row (x varies fastest)."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (xyxy, ints) and their layer index: the whole image, then (2**i)**2 overlapping crops in
    layer i, x-major (all crops of the first column first). The overlap is ``overlap_ratio`` of the short side
    in layer 1 and halves with each further layer."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        x0 = [int((crop_w - overlap) * k) for k in range(n)]
        y0 = [int((crop_h - overlap) * k) for k in range(n)]
        for x in x0:
            for y in y0:
                boxes.append([x, y, min(x + crop_w, im_w), min(y + crop_h, im_h)])
                layers.append(i + 1)
    return boxes, layers


def _offset_like(x: np.ndarray, offset) -> np.ndarray:
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.int64
    return np.asarray(offset, dtype)


def uncrop_boxes_xyxy(boxes, crop_box) -> np.ndarray:
    """Boxes (..., 4) in the crop frame -> the image frame."""
    boxes = np.asarray(boxes)
    x0, y0 = crop_box[0], crop_box[1]
    return boxes + _offset_like(boxes, [x0, y0, x0, y0])


def uncrop_points(points, crop_box) -> np.ndarray:
    """Points (..., 2) in the crop frame -> the image frame."""
    points = np.asarray(points)
    return points + _offset_like(points, [crop_box[0], crop_box[1]])


def uncrop_masks(masks, crop_box, orig_h: int, orig_w: int) -> np.ndarray:
    """Masks (..., h, w) of a crop -> (..., orig_h, orig_w), zero outside the crop."""
    masks = np.asarray(masks)
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    pad = [(0, 0)] * (masks.ndim - 2) + [(y0, pad_y - y0), (x0, pad_x - x0)]
    return np.pad(masks, pad)


def is_box_near_crop_edge(boxes, crop_box, orig_box, atol: float = 20.0) -> np.ndarray:
    """(N,) True where a crop-frame box lies within ``atol`` of a crop edge that is not also an image edge."""
    boxes = uncrop_boxes_xyxy(np.asarray(boxes), crop_box).astype(np.float32)
    crop = np.asarray(crop_box, np.float32)
    orig = np.asarray(orig_box, np.float32)
    near_crop = np.abs(boxes - crop) <= np.float32(atol)
    near_image = np.abs(boxes - orig) <= np.float32(atol)
    return np.any(near_crop & ~near_image, axis=-1)
