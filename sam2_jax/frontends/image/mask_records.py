"""Candidate masks of automatic mask generation, as the official ``MaskData``: a dict of aligned per-mask
arrays (``iou_preds`` (K,), ``points`` (K, 2), ``stability_score`` (K,), ``boxes`` (K, 4) xyxy, ``crop_boxes``
(K, 4), ``rles`` a list of K dicts), and the full-resolution work done on them on the device.

``take(data, idx)`` / ``cat(parts)`` select and join records. ``stats(logits (K, h, w), size, threshold, offset)``
upsamples low-res logits to ``size`` = (H, W) under jit, ``CHUNK`` masks at a time (one compile per size, the
last chunk padded), and returns stability scores (K,) (NaN for a mask empty at
the low threshold, as the official score) and xyxy boxes (K, 4) int64. ``encode_rles(logits, size, crop_box,
orig_size, threshold)`` binarises the upsampled masks, places them in the image frame and run-length encodes them
(column-major, from a transposed mask so that no copy is needed). ``stats_of`` is ``stats``' traceable core (the
device-side batches of ``mask_survivors`` use it), ``postprocess_small_regions`` the generator's static method,
``to_records(data, output_mode)`` the records ``generate`` returns.

Neither stores the full-resolution logits (8 masks to 1200 x 1800 on a 2-core CPU): ``encode_rles`` gathers the
two taps per pixel (``upsample_bilinear_taps``, fused with the threshold: 19 ms against 128 ms for the matrix
form); ``stats`` counts and boxes the taps grouped by source pixel (``mask_stats.stability_and_boxes``: 35 ms
against ~150 ms for thresholding the matrix form). Both give the numbers of thresholding
``upsample_bilinear_taps``' output.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...processing import boxes as box_ops
from ...processing import rle
from ...processing.components import remove_small_regions
from ...processing.mask_stats import stability_and_boxes
from ...processing.masks import upsample_bilinear_taps

CHUNK = 8  # masks upsampled at once


def stats_of(logits, size, mask_threshold, offset):
    """(K, h, w) logits -> stability scores (K,) and xyxy boxes (K, 4) at ``size``, in jax.numpy (traceable)."""
    return stability_and_boxes(logits, size, mask_threshold, offset, float("nan"))


_stats = jax.jit(stats_of, static_argnames=("size",))


@jax.jit(static_argnames=("size",))
def _binarize_t(logits, size, mask_threshold):
    """(K, h, w) low-res logits -> (K, W, H) bool full-resolution masks, transposed (column-major for RLE)."""
    return jnp.swapaxes(upsample_bilinear_taps(logits, size) > mask_threshold, -1, -2)


def _chunks(logits: np.ndarray):
    """(padded chunk as a device array, its real length), CHUNK masks at a time."""
    for s in range(0, len(logits), CHUNK):
        chunk = logits[s : s + CHUNK]
        yield jnp.asarray(np.pad(chunk, ((0, CHUNK - len(chunk)), (0, 0), (0, 0)))), len(chunk)


def stats(logits: np.ndarray, size, mask_threshold: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Stability scores (K,) and xyxy boxes (K, 4) of (K, h, w) logits upsampled to ``size``."""
    stability, boxes = [np.zeros(0, np.float32)], [np.zeros((0, 4), np.int64)]
    for chunk, n in _chunks(logits):
        st, bx = _stats(chunk, tuple(size), mask_threshold, offset)
        stability.append(np.asarray(st)[:n])
        boxes.append(np.asarray(bx)[:n].astype(np.int64))
    return np.concatenate(stability), np.concatenate(boxes)


def encode_rles(logits: np.ndarray, size, crop_box, orig_size, mask_threshold: float) -> list[dict]:
    """RLEs of the binarised full-resolution masks of a crop, in the image frame."""
    x0, y0, x1, y1 = crop_box
    orig_h, orig_w = orig_size
    pad = ((0, 0), (x0, orig_w - x1), (y0, orig_h - y1))  # in the transposed (W, H) frame
    rles = []
    for chunk, n in _chunks(logits):
        masks_t = np.asarray(_binarize_t(chunk, tuple(size), mask_threshold))[:n]
        if any(p != (0, 0) for p in pad):
            masks_t = np.pad(masks_t, pad)
        rles.extend(rle.mask_to_rle(masks_t, transposed=True))
    return rles


def take(data: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    """The records at ``idx``."""
    return {k: [v[i] for i in idx] if isinstance(v, list) else v[idx] for k, v in data.items()}


def empty() -> dict[str, Any]:
    return {
        "iou_preds": np.zeros(0, np.float32),
        "points": np.zeros((0, 2), np.float32),
        "stability_score": np.zeros(0, np.float32),
        "boxes": np.zeros((0, 4), np.int64),
        "crop_boxes": np.zeros((0, 4), np.int64),
        "rles": [],
    }


def cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The records of ``parts`` one after another (``empty()`` for none)."""
    if not parts:
        return empty()
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        out[k] = [x for v in vals for x in v] if isinstance(vals[0], list) else np.concatenate(vals)
    return out


def postprocess_small_regions(data: dict[str, Any], min_area: int, nms_thresh: float) -> dict[str, Any]:
    """``Sam2AutomaticMaskGenerator.postprocess_small_regions``: fill holes, then drop islands, of area <
    ``min_area`` in every mask of ``data["rles"]``, recompute those boxes and rerun box NMS preferring unchanged
    masks; a filtered copy of ``data``."""
    n = len(data["rles"])
    if n == 0:
        return data
    masks, unchanged = [], []
    for s in range(0, n, CHUNK):  # full-resolution connected components, a chunk of masks at a time
        chunk = np.stack([rle.rle_to_mask(r) for r in data["rles"][s : s + CHUNK]])
        chunk, holes = remove_small_regions(chunk, min_area, "holes")
        chunk, islands = remove_small_regions(chunk, min_area, "islands")
        masks.append(chunk)
        unchanged.append(~(holes | islands))
    masks, unchanged = np.concatenate(masks), np.concatenate(unchanged)
    boxes = box_ops.batched_mask_to_box(masks)
    keep = box_ops.batched_nms(boxes.astype(np.float32), unchanged.astype(np.float32), None, nms_thresh)
    changed = keep[~unchanged[keep]]
    out = dict(data, rles=list(data["rles"]), boxes=np.array(data["boxes"], copy=True))
    for i, new in zip(changed.tolist(), rle.mask_to_rle(masks[changed]), strict=True):
        out["rles"][i] = new
    out["boxes"][changed] = boxes[changed]
    return take(out, keep)


def to_records(data: dict[str, Any], output_mode: str) -> list[dict[str, Any]]:
    """The official generator's records (see ``automatic_mask_generator``) of finished ``data`` (image-frame
    ``boxes`` and ``rles``), the segmentation as a bool mask, an uncompressed RLE or a COCO RLE per
    ``output_mode`` ("binary_mask", "uncompressed_rle", "coco_rle")."""
    if output_mode == "binary_mask":
        segs = [rle.rle_to_mask(r) for r in data["rles"]]
    elif output_mode == "coco_rle":
        segs = [rle.coco_encode_rle(r) for r in data["rles"]]
    else:
        segs = data["rles"]
    # the official records carry float32 boxes, points and scores as Python floats
    boxes = box_ops.box_xyxy_to_xywh(data["boxes"].astype(np.float32)).tolist()
    crop_boxes = box_ops.box_xyxy_to_xywh(data["crop_boxes"].astype(np.float32)).tolist()
    points = data["points"].astype(np.float32).tolist()
    ious = data["iou_preds"].astype(np.float32).tolist()
    stability = data["stability_score"].astype(np.float32).tolist()
    return [
        {
            "segmentation": segs[i],
            "area": rle.area_from_rle(r),
            "bbox": boxes[i],
            "predicted_iou": ious[i],
            "point_coords": [points[i]],
            "stability_score": stability[i],
            "crop_box": crop_boxes[i],
        }
        for i, r in enumerate(data["rles"])
    ]
