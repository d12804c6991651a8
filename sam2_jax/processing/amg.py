"""NumPy building blocks of automatic mask generation, with the semantics of the official ``sam2.utils.amg``.

Shapes (N masks or boxes, H x W pixels; boxes are ``x0, y0, x1, y1`` unless named ``xywh``):

  build_point_grid(n)                          -> (n * n, 2) float64 points in [0, 1], x fastest
  build_all_layer_point_grids(n, layers, s)    -> [(n_i * n_i, 2)] with n_i = int(n / s**i), i = 0..layers
  generate_crop_boxes((h, w), layers, ratio)   -> ([[x0, y0, x1, y1]] int, [layer index]), whole image first
  box_xyxy_to_xywh(boxes (..., 4))             -> (..., 4)
  uncrop_boxes_xyxy / uncrop_points / uncrop_masks: crop frame -> image frame (offset, or zero padding)
  is_box_near_crop_edge(boxes (N, 4), crop, image) -> (N,) bool
  calculate_stability_score(logits (..., H, W), threshold, offset) -> (...) float32
  batched_mask_to_box(masks (..., H, W) bool)  -> (..., 4) int64, [0, 0, 0, 0] for an empty mask
  box_iou(boxes1 (N, 4), boxes2 (M, 4))        -> (N, M) float32
  nms / batched_nms(boxes (N, 4), scores (N,), [categories (N,)], iou_threshold) -> kept indices, best first
  mask_to_rle(masks (N, H, W) bool)            -> N uncompressed RLEs {"size": [H, W], "counts": [int]}
                                                  ((N, W, H) with ``transposed=True``)
  rle_to_mask(rle)                             -> (H, W) bool (uncompressed or COCO-compressed RLE)
  area_from_rle(rle)                           -> int
  coco_encode_rle(rle) / coco_decode_rle(rle)  -> COCO's compressed string RLE and back (no pycocotools)
  remove_small_regions(mask (..., H, W), area, mode) -> (mask, changed)

RLE counts run over the mask in column-major (Fortran) order and start with a background run (0 when the
first pixel is foreground), the pycocotools convention. Everything is vectorised over masks, boxes and runs;
the greedy NMS loops once per kept box, and the per-mask RLE dicts are assembled in Python.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ---- point grids and crops ----------------------------------------------------------------------------------


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


# ---- boxes and points ---------------------------------------------------------------------------------------


def box_xyxy_to_xywh(boxes) -> np.ndarray:
    """(..., 4) xyxy -> (..., 4) xywh, a new array of the same dtype."""
    out = np.array(boxes, copy=True)
    out[..., 2:] = out[..., 2:] - out[..., :2]
    return out


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


def batched_mask_to_box(masks) -> np.ndarray:
    """Tight xyxy boxes (inclusive pixel indices) of masks (..., H, W); [0, 0, 0, 0] for an empty mask."""
    masks = np.asarray(masks, bool)
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)

    def first_last(any_along):
        n = any_along.shape[-1]
        idx = np.arange(n)
        first = np.where(any_along, idx, n).min(axis=-1, initial=n)
        last = np.where(any_along, idx, -1).max(axis=-1, initial=-1)
        return first, last

    x0, x1 = first_last(cols)
    y0, y1 = first_last(rows)
    boxes = np.stack([x0, y0, x1, y1], axis=-1).astype(np.int64)
    return np.where(masks.any(axis=(-2, -1))[..., None], boxes, 0)


def calculate_stability_score(masks, mask_threshold: float, threshold_offset: float) -> np.ndarray:
    """IoU of the masks thresholded at ``mask_threshold +- threshold_offset`` (the high one lies inside the
    low one, so the IoU is a ratio of pixel counts); float32, NaN for a mask empty at the low threshold."""
    masks = np.asarray(masks)
    inter = np.count_nonzero(masks > (mask_threshold + threshold_offset), axis=(-2, -1))
    union = np.count_nonzero(masks > (mask_threshold - threshold_offset), axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(inter, np.float32) / np.asarray(union, np.float32)


# ---- non-maximum suppression --------------------------------------------------------------------------------


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


# ---- run-length encoding ------------------------------------------------------------------------------------


def _flatnonzero(x: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a 1-D bool array, scanning 8 bytes at a time (change points are sparse)."""
    n = x.size
    padded = np.zeros(-(-n // 8) * 8, np.uint8)
    padded[:n] = x.view(np.uint8)
    words = np.flatnonzero(padded.view(np.uint64))
    sub = np.nonzero(padded.reshape(-1, 8)[words])
    return words[sub[0]] * 8 + sub[1]


def mask_to_rle(masks, transposed: bool = False) -> list[dict[str, Any]]:
    """Masks (N, H, W) bool -> N uncompressed RLEs in column-major order (``mask_to_rle_pytorch``'s format).

    ``transposed=True`` takes the masks as (N, W, H), already in column-major order (saves a copy)."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    b, h, w = masks.shape
    if transposed:
        h, w = w, h
    n = h * w
    if b == 0:
        return []
    if n == 0:
        return [{"size": [h, w], "counts": []} for _ in range(b)]
    flat = np.ascontiguousarray(masks if transposed else masks.transpose(0, 2, 1)).reshape(-1)
    change = _flatnonzero(flat[1:] != flat[:-1])  # over all masks end to end
    change = change[(change + 1) % n != 0]  # drop the steps from one mask to the next
    rows, cols = np.divmod(change, n)  # sorted by mask, then position
    n_changes = np.bincount(rows, minlength=b)
    # run boundaries of every mask laid end to end: 0, change + 1 ..., n
    per_mask = n_changes + 2
    ends = np.cumsum(per_mask)
    starts = ends - per_mask
    bounds = np.empty(int(ends[-1]), np.int64)
    bounds[starts] = 0
    bounds[ends - 1] = n
    rank = np.arange(len(rows)) - (np.cumsum(n_changes) - n_changes)[rows]
    bounds[starts[rows] + 1 + rank] = cols + 1
    runs = np.diff(bounds).tolist()  # the entries at ends[:-1] - 1 straddle two masks and are skipped
    first_fg = flat[::n].tolist()
    return [
        {"size": [h, w], "counts": ([0] if fg else []) + runs[s : e - 1]}
        for fg, s, e in zip(first_fg, starts.tolist(), ends.tolist(), strict=True)
    ]


def _counts(rle: dict[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_decode_rle(rle)["counts"]
    return np.asarray(counts, np.int64)


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """An RLE (uncompressed, or COCO-compressed string counts) -> (H, W) bool."""
    h, w = rle["size"]
    counts = _counts(rle)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts cover {int(counts.sum())} pixels, not {h} x {w}")
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    """Foreground pixels of an RLE (the odd runs)."""
    return int(_counts(rle)[1::2].sum())


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO's compressed RLE {"size": [H, W], "counts": str}, as ``pycocotools.mask``'s
    ``frPyObjects`` writes it: each count (from the fourth on, minus the count two before) in a LEB128-like
    code of 5 data bits per character, bit 5 flagging a following character, offset by ASCII 48."""
    h, w = uncompressed_rle["size"]
    cnts = np.asarray(uncompressed_rle["counts"], np.int64) & 0xFFFFFFFF  # pycocotools stores uint32
    x = cnts.copy()
    x[3:] -= cnts[1:-2]
    chars, active = [], np.ones(len(x), bool)
    while active.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, as for the C long
        more = np.where(c & 0x10, x != -1, x != 0)
        chars.append(np.where(active, np.where(more, c | 0x20, c) + 48, 0))
        active &= more
    table = np.stack(chars, axis=1) if chars else np.zeros((0, 1), np.int64)
    return {"size": [h, w], "counts": table[table > 0].astype(np.uint8).tobytes().decode("ascii")}


def coco_decode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """COCO's compressed RLE (str or bytes counts) -> the uncompressed RLE (``rleFrString``)."""
    h, w = rle["size"]
    s = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else bytes(rle["counts"])
    code = np.frombuffer(s, np.uint8).astype(np.int64) - 48
    if code.size == 0:
        return {"size": [h, w], "counts": []}
    if np.any((code < 0) | (code > 63)):
        raise ValueError("not a COCO RLE string: characters outside '0'..'o'")
    last = (code & 0x20) == 0
    if not last[-1]:
        raise ValueError("truncated COCO RLE string")
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(len(code)) - starts[group]
    x = np.add.reduceat((code & 0x1F) << (5 * k), starts)
    n_chars = np.diff(np.append(starts, len(code)))
    negative = (code[last] & 0x10) != 0
    x = np.where(negative, x | (-1 << (5 * n_chars)), x)
    cnts = x.copy()  # cnts[m] = x[m] + cnts[m - 2] for m > 2: two interleaved running sums
    cnts[1::2] = np.cumsum(x[1::2])
    cnts[2::2] = np.cumsum(x[2::2])
    return {"size": [h, w], "counts": (cnts & 0xFFFFFFFF).tolist()}


# ---- small regions ------------------------------------------------------------------------------------------


def remove_small_regions(mask, area_thresh: float, mode: str) -> tuple[np.ndarray, bool | np.ndarray]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) of area < ``area_thresh`` in an (H, W) mask,
    8-connected; returns the mask and whether any region was small. When every island is small, the largest
    (the first in raster order among equals) is kept. A stack (..., H, W) is done at once; ``changed`` is then
    a (...) bool array."""
    from .components import connected_components

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, bool)
    holes = mode == "holes"
    working = mask ^ holes
    labels, areas = connected_components(working, connectivity=8)
    small = working & (areas < area_thresh)
    changed = small.any(axis=(-2, -1))
    if not changed.any():
        return mask, (changed if mask.ndim > 2 else False)
    if holes:
        out = mask | small
    else:
        out = working & ~small
        none_left = changed & ~out.any(axis=(-2, -1))  # every island small: keep the largest
        if none_left.any():
            largest = areas.max(axis=(-2, -1), keepdims=True)
            first = np.where(working & (areas == largest), labels, np.iinfo(labels.dtype).max)
            keep = labels == first.min(axis=(-2, -1), keepdims=True)
            out = np.where(none_left[..., None, None], keep, out)
    return out, (changed if mask.ndim > 2 else True)
