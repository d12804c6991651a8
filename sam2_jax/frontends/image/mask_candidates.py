"""One batch of the automatic mask generator's grid points -> its candidate mask records.

  batch_records(gen, points (P, 2) crop pixels, embedding, crop_box xyxy, orig_size (H, W), points_per_batch)
      -> the official ``MaskData`` of the batch (``mask_records``' dict: ``iou_preds`` (K,), ``points`` (K, 2),
         ``stability_score`` (K,), ``boxes`` (K, 4) in the crop frame, ``rles`` (K dicts) in the image frame)

The official ``_process_batch``: decode, keep masks above ``pred_iou_thresh``, score their stability at the crop
size and keep those above ``stability_score_thresh``, drop masks touching an inner crop edge, run-length encode
the rest. Two ways to the candidates (``gen``: a ``Sam2AutomaticMaskGenerator``, read for its settings only):

  split   (``gen._split()``: ``pred_iou_thresh`` > 0, three masks a point, no m2m) one device call,
          ``predict_survivors``: every point's scores, masks only where one passes, and their stability scores
          and boxes at the crop size (``processing.mask_stats``), fetched to the host once;
  full    ``predict_batched`` makes every mask (then one m2m refinement step when ``use_m2m``), and the masks
          above the threshold get their stability and boxes on the host side (``mask_records.stats``, the same
          numbers).

``min_mask_region_area`` > 0 fills holes and removes sprinkles in the low-res logits first (``_fill``), so their
stability is then computed after the fill, as the official predictor does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...processing import crops
from ...processing.components import fill_holes_and_remove_sprinkles
from ...processing.masks import LOW_RES_CLAMP
from . import mask_records as records


def _decode(gen, points_xy, embedding, points_per_batch, mask_input=None, multimask=True):
    """Decode up to ``points_per_batch`` single-point prompts (crop pixels), padded once to that many:
    low-res logits (n, M, h, w), scores (n, M)."""
    return gen.predictor.predict_batched(
        points_xy[:, None, :],
        np.ones((len(points_xy), 1), np.int32),
        mask_input=None if mask_input is None else mask_input[:, None],
        multimask_output=multimask,
        embedding=embedding,
        pad_to=points_per_batch,
    )


def _fill(gen, low_res: np.ndarray) -> np.ndarray:
    """The official predictor's clean-up of (K, h, w) low-res logits for ``min_mask_region_area``."""
    area = gen.min_mask_region_area
    if area <= 0:
        return low_res
    return fill_holes_and_remove_sprinkles(low_res, area, area, gen.mask_threshold)


def _split_candidates(gen, points, embedding, points_per_batch) -> dict[str, Any]:
    """Masks only where a score passes, with stability and boxes from the device unless filled first."""
    stats = None if gen.min_mask_region_area > 0 else (gen.mask_threshold, gen.stability_score_offset)
    found = gen.predictor.predict_survivors(
        points, embedding=embedding, iou_thresh=gen.pred_iou_thresh, pad_to=points_per_batch, stats=stats
    )
    m = found.scores.shape[1]
    data = {
        "logits": _fill(gen, found.logits),
        "iou_preds": found.scores.reshape(-1)[found.index],
        "points": points[found.index // m],
    }
    if stats is not None:
        data["stability_score"], data["boxes"] = found.stability, found.boxes
    return data


def _full_candidates(gen, points, embedding, points_per_batch) -> dict[str, Any]:
    """Every mask made (and refined once with m2m), then those above ``pred_iou_thresh`` kept."""
    low_res, scores = _decode(gen, points, embedding, points_per_batch, multimask=gen.multimask_output)
    m = low_res.shape[1]
    data = {
        "logits": _fill(gen, low_res.reshape(-1, *low_res.shape[2:])),
        "iou_preds": scores.reshape(-1),
        "points": np.repeat(points, m, axis=0),
    }
    if gen.use_m2m:  # one refinement step, each mask fed back with its own point
        low = np.clip(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP).reshape(-1, *low_res.shape[2:])
        refined, ious = [], []
        for s in range(0, len(data["points"]), points_per_batch):
            sl = slice(s, s + points_per_batch)
            r, i = _decode(gen, data["points"][sl], embedding, points_per_batch, low[sl], False)
            refined.append(r[:, 0])
            ious.append(i[:, 0])
        data["logits"] = _fill(gen, np.concatenate(refined)) if refined else data["logits"][:0]
        data["iou_preds"] = np.concatenate(ious) if ious else data["iou_preds"][:0]
    if gen.pred_iou_thresh > 0.0:
        data = records.take(data, np.nonzero(data["iou_preds"] > gen.pred_iou_thresh)[0])
    return data


def batch_records(gen, points, embedding, crop_box, orig_size, points_per_batch) -> dict[str, Any]:
    """See the module docstring."""
    size = embedding.original_sizes[0]
    candidates = _split_candidates if gen._split() else _full_candidates
    data = candidates(gen, points, embedding, points_per_batch)
    if "stability_score" not in data:
        stability, boxes = records.stats(data["logits"], size, gen.mask_threshold, gen.stability_score_offset)
        data["stability_score"], data["boxes"] = stability, boxes
    if gen.stability_score_thresh > 0.0:
        data = records.take(data, np.nonzero(data["stability_score"] >= gen.stability_score_thresh)[0])
    orig_h, orig_w = orig_size
    near = crops.is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
    data = records.take(data, np.nonzero(~near)[0])
    data["rles"] = records.encode_rles(data.pop("logits"), size, crop_box, orig_size, gen.mask_threshold)
    return data
