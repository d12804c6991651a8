"""Masks of the annotation server in and out of their COCO forms: no state, NumPy and PIL only.

column_rle(mask (H, W) bool)     -> the uncompressed column-major RLE of ``processing.rle.mask_to_rle``
encode_masks(masks (N, H, W))    -> per mask {"segmentation": COCO compressed RLE, "area": int,
                                    "bbox": [x, y, w, h]} (pycocotools' ``toBbox``: w = x1 - x0 + 1)
encode_mask(mask (H, W))         -> one of those
mask_area_bbox(mask (H, W))      -> {"area", "bbox"} alone, without encoding
polygons_to_mask(polygons, H, W) -> (H, W) bool, COCO polygons rasterised by PIL (edges included)
color_of(id)                     -> "#rrggbb", a distinct colour per object id
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np

from ..processing.rle import coco_encode_rle


def color_of(ann_id: int) -> str:
    """A distinct colour per object id (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((ann_id * 0.618033988749895) % 1.0, 0.75, 0.95)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def column_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> the uncompressed column-major RLE ``processing.rle.mask_to_rle`` makes, from the row-major
    mask without transposing it: the run starts inside columns (vertical changes, found with a flat search) and
    at column boundaries, sorted (they are few). About 8x faster on a 1200 x 1800 mask (0.8 ms against 7)."""
    h, w = mask.shape
    ys, xs = np.divmod(np.flatnonzero(mask[1:] != mask[:-1]), w)
    starts = np.concatenate([xs * h + ys + 1, (np.flatnonzero(mask[0, 1:] != mask[-1, :-1]) + 1) * h])
    runs = np.diff(np.concatenate([[0], np.sort(starts), [h * w]])).tolist()
    return {"size": [h, w], "counts": ([0] if h * w and mask[0, 0] else []) + runs}


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """(N, H, W) bool -> per mask {"segmentation": COCO RLE, "area": int, "bbox": [x, y, w, h]} (the bbox of
    pycocotools' ``toBbox``: w = x1 - x0 + 1; [0, 0, 0, 0] for an empty mask)."""
    masks = np.asarray(masks, bool)
    out = []
    for m in masks:
        out.append({"segmentation": coco_encode_rle(column_rle(m)), **mask_area_bbox(m)})
    return out


def mask_area_bbox(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> {"area": int, "bbox": [x, y, w, h]} as ``encode_masks`` gives them, without the RLE."""
    m = np.asarray(mask, bool)
    ys, xs = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    box = [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)] if len(xs) else [0, 0, 0, 0]
    return {"area": int(np.count_nonzero(m)), "bbox": box}


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> {"segmentation": COCO RLE, "area": int, "bbox": [x, y, w, h]} (``encode_masks``)."""
    return encode_masks(np.asarray(mask, bool)[None])[0]


def polygons_to_mask(polygons: list, h: int, w: int) -> np.ndarray:
    """COCO polygons [[x1, y1, x2, y2, ...], ...] -> (H, W) bool (PIL's rasterisation)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        if isinstance(poly, (list, tuple)) and len(poly) >= 6:
            draw.polygon([float(v) for v in poly], fill=1, outline=1)
    return np.asarray(canvas, bool)
