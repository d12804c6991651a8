"""Automatic mask generation: segment everything in an image from a grid of single-point prompts.

Follows the official ``SAM2AutomaticMaskGenerator`` (point grids, crop layers, thresholds, NMS, m2m refinement,
record fields and their types). ``generate(image (H, W, 3) uint8)`` returns a list of records:

  segmentation     (H, W) bool; or an uncompressed RLE {"size": [H, W], "counts": [int]} (column-major runs,
                   background first) or a COCO compressed RLE (str counts), per ``output_mode``
  area             int, pixels in the mask
  bbox             [x, y, w, h] floats, with w = x1 - x0 between inclusive corner pixels (the official box)
  predicted_iou    float, the decoder's IoU estimate
  point_coords     [[x, y]], the grid point that produced it (image pixels)
  stability_score  float, IoU of the mask thresholded at mask_threshold +- stability_score_offset
  crop_box         [x, y, w, h] floats, the crop it came from

``generator(image, points_per_batch=64)`` is transformers' ``mask-generation`` pipeline call: ``{"masks": [(H, W)
bool], "scores": (N,) float32}`` (``image`` may be a path), with the generator's thresholds.

Per crop the image is embedded once (``Sam2ImagePredictor.embed_image``) and the grid is decoded
``points_per_batch`` points at a time under jit (``predict_batched``, every batch padded once to
``points_per_batch`` prompts, so one compile serves all). Masks that pass ``pred_iou_thresh`` are upsampled to
the crop size (``processing.masks.upsample_bilinear``, under jit, 8 masks at a time) for their stability scores
and boxes; survivors are upsampled again, binarised and run-length encoded. ``min_mask_region_area`` > 0 fills
holes and removes sprinkles of up to that many pixels in the low-resolution logits, like the official predictor
(which needs its CUDA extension for it). Filtering, NMS and RLE are vectorised NumPy (``sam2_jax.processing``:
``crops``, ``boxes``, ``rle``, ``components``).

Threads: a generator keeps no per-call state (``points_per_batch`` of a call is passed down, the image
embedding is local to the call), so one generator may serve several threads at once.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..processing import boxes as box_ops
from ..processing import crops, rle
from ..processing.components import fill_holes_and_remove_sprinkles, remove_small_regions
from ..processing.images import read_image
from ..processing.masks import LOW_RES_CLAMP
from ..utils.progress import progress_bar
from . import mask_records as records
from .image_predictor import ImageEmbedding, Sam2ImagePredictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class Sam2AutomaticMaskGenerator:
    """The official ``SAM2AutomaticMaskGenerator`` over a JAX model; see the module docstring.

    ``model, params`` as ``sam2_jax.load`` returns them, or ``predictor=`` an existing ``Sam2ImagePredictor``
    (its compiled encoder and decoder are reused; its own hole and sprinkle settings are not consulted).
    Thread-safe: ``generate`` and ``__call__`` keep their state in the call (the predictor is used only through
    its stateless ``embed_image`` / ``predict_batched``), so threads may share one generator.
    """

    def __init__(
        self,
        model=None,
        params=None,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        predictor: Sam2ImagePredictor | None = None,
    ):
        if (predictor is None) == (model is None or params is None):
            raise ValueError("Give either model and params, or a predictor")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"Unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be positive")
        self.point_grids = (
            crops.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
            if points_per_side is not None
            else [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
        )
        if len(self.point_grids) < crop_n_layers + 1:
            raise ValueError(f"{len(self.point_grids)} point grids for {crop_n_layers + 1} crop layers")
        # Like the official generator, min_mask_region_area fills holes and removes sprinkles in the low-res
        # logits of every prediction (``_fill``), here on every platform (the official needs its CUDA kernel).
        self.predictor = predictor or Sam2ImagePredictor(
            model, params, max_hole_area=min_mask_region_area, max_sprinkle_area=min_mask_region_area
        )
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    @classmethod
    def from_pretrained(cls, src, dtype=jnp.float32, **kwargs) -> Sam2AutomaticMaskGenerator:
        """Load a checkpoint (any source ``sam2_jax.load`` accepts) and wrap it; ``kwargs`` as ``__init__``."""
        from ..checkpoints.loading import load
        from ..utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype=dtype)
        return cls(model, params, **kwargs)

    # ---- public ------------------------------------------------------------------------------------------------
    def generate(self, image, progress: bool = False) -> list[dict[str, Any]]:
        """Mask records for an (H, W, 3) RGB image (uint8 array, or a PIL image); see the module docstring."""
        image = _as_image(image)
        data = self._generate_masks(image, progress, self.points_per_batch)
        if self.output_mode == "binary_mask":
            segs = [rle.rle_to_mask(r) for r in data["rles"]]
        elif self.output_mode == "coco_rle":
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

    def __call__(
        self,
        image,
        points_per_batch: int | None = None,
        output_bboxes_mask: bool = False,
        output_rle_mask: bool = False,
    ) -> dict[str, Any]:
        """transformers' ``mask-generation`` pipeline output: ``generator(image, points_per_batch=64)``.

        ``image`` is a path, a PIL image or an (H, W, 3) array. Returns ``{"masks": [(H, W) bool], "scores":
        (N,) float32 predicted IoUs}`` in the order of ``generate`` (best first within a crop), plus
        ``"bounding_boxes"`` ((N, 4) xyxy int64, inclusive) and ``"rle_mask"`` (uncompressed RLEs) on request.
        ``points_per_batch`` overrides the constructor's for this call; it changes speed and memory only.
        """
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, "image")
        if points_per_batch is None:
            points_per_batch = self.points_per_batch
        elif points_per_batch < 1:
            raise ValueError("points_per_batch must be positive")
        data = self._generate_masks(_as_image(image), False, points_per_batch)
        out: dict[str, Any] = {
            "masks": [rle.rle_to_mask(r) for r in data["rles"]],
            "scores": data["iou_preds"].astype(np.float32),
        }
        if output_bboxes_mask:
            out["bounding_boxes"] = data["boxes"].astype(np.int64)
        if output_rle_mask:
            out["rle_mask"] = data["rles"]
        return out

    @staticmethod
    def postprocess_small_regions(data: dict[str, Any], min_area: int, nms_thresh: float) -> dict[str, Any]:
        """The official (SAM 1 style) clean-up of finished masks, which the official SAM 2 ``generate`` no longer
        calls: fill holes, then drop islands, of area < ``min_area`` in every mask (``data["rles"]``), recompute
        the boxes and rerun box NMS preferring unchanged masks. ``data`` is ``_generate_masks``' dict (with
        ``rles`` and image-frame ``boxes``); returns a filtered copy."""
        n = len(data["rles"])
        if n == 0:
            return data
        masks, unchanged = [], []
        for s in range(0, n, records.CHUNK):  # full-resolution connected components, a chunk of masks at a time
            chunk = np.stack([rle.rle_to_mask(r) for r in data["rles"][s : s + records.CHUNK]])
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
        return records.take(out, keep)

    # ---- internals ---------------------------------------------------------------------------------------------
    def _generate_masks(self, image: np.ndarray, progress: bool, points_per_batch: int | None = None) -> dict[str, Any]:
        points_per_batch = points_per_batch or self.points_per_batch
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = crops.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(-(-len(self.point_grids[i]) // points_per_batch) for i in layer_idxs)
        with progress_bar(total, progress, desc="mask generation", unit="batch") as bar:
            parts = [
                self._process_crop(image, box, layer, orig_size, bar, points_per_batch)
                for box, layer in zip(crop_boxes, layer_idxs, strict=True)
            ]
        data = records.cat(parts)
        if len(crop_boxes) > 1 and len(data["iou_preds"]):  # prefer masks from smaller crops
            cb = data["crop_boxes"]
            scores = np.float32(1.0) / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            keep = box_ops.batched_nms(data["boxes"].astype(np.float32), scores, None, self.crop_nms_thresh)
            data = records.take(data, keep)
        return data

    def _process_crop(self, image, crop_box, layer_idx, orig_size, bar, points_per_batch) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        h, w = cropped.shape[:2]
        embedding = self.predictor.embed_image(cropped)
        points = (self.point_grids[layer_idx] * np.array([w, h])).astype(np.float32)
        parts = []
        for start in range(0, len(points), points_per_batch):
            batch = points[start : start + points_per_batch]
            parts.append(self._process_batch(batch, embedding, crop_box, orig_size, points_per_batch))
            bar.update(1)
        data = records.cat(parts)
        if len(data["iou_preds"]):
            keep = box_ops.batched_nms(data["boxes"].astype(np.float32), data["iou_preds"], None, self.box_nms_thresh)
            data = records.take(data, keep)
        data["boxes"] = crops.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = crops.uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = np.tile(np.asarray(crop_box, np.int64), (len(data["iou_preds"]), 1))
        return data

    def _decode(self, points_xy, embedding: ImageEmbedding, points_per_batch, mask_input=None, multimask=True):
        """Decode up to ``points_per_batch`` single-point prompts (crop pixels), padded once to that many:
        low-res logits (n, M, h, w), scores (n, M)."""
        return self.predictor.predict_batched(
            points_xy[:, None, :],
            np.ones((len(points_xy), 1), np.int32),
            mask_input=None if mask_input is None else mask_input[:, None],
            multimask_output=multimask,
            embedding=embedding,
            pad_to=points_per_batch,
        )

    def _fill(self, low_res: np.ndarray) -> np.ndarray:
        """The official predictor's clean-up of (K, h, w) low-res logits for ``min_mask_region_area``."""
        area = self.min_mask_region_area
        if area <= 0:
            return low_res
        return fill_holes_and_remove_sprinkles(low_res, area, area, self.mask_threshold)

    def _process_batch(self, points, embedding, crop_box, orig_size, points_per_batch) -> dict[str, Any]:
        size = embedding.original_sizes[0]
        low_res, scores = self._decode(points, embedding, points_per_batch, multimask=self.multimask_output)
        m = low_res.shape[1]
        clamped = np.clip(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP)
        data = {
            "logits": self._fill(low_res.reshape(-1, *low_res.shape[2:])),
            "low_res": clamped.reshape(-1, *low_res.shape[2:]),
            "iou_preds": scores.reshape(-1),
            "points": np.repeat(points, m, axis=0),
        }
        if self.use_m2m:  # one refinement step, each mask fed back with its own point
            refined, ious = [], []
            for s in range(0, len(data["points"]), points_per_batch):
                sl = slice(s, s + points_per_batch)
                r, i = self._decode(data["points"][sl], embedding, points_per_batch, data["low_res"][sl], False)
                refined.append(r[:, 0])
                ious.append(i[:, 0])
            data["logits"] = self._fill(np.concatenate(refined)) if refined else data["logits"][:0]
            data["iou_preds"] = np.concatenate(ious) if ious else data["iou_preds"][:0]
        if self.pred_iou_thresh > 0.0:
            data = records.take(data, np.nonzero(data["iou_preds"] > self.pred_iou_thresh)[0])
        stability, boxes = records.stats(data["logits"], size, self.mask_threshold, self.stability_score_offset)
        data["stability_score"], data["boxes"] = stability, boxes
        if self.stability_score_thresh > 0.0:
            data = records.take(data, np.nonzero(data["stability_score"] >= self.stability_score_thresh)[0])
        orig_h, orig_w = orig_size
        near = crops.is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        data = records.take(data, np.nonzero(~near)[0])
        data["rles"] = records.encode_rles(data["logits"], size, crop_box, orig_size, self.mask_threshold)
        del data["logits"], data["low_res"]
        return data


def _as_image(image) -> np.ndarray:
    """(H, W, 3) array from an array or a PIL image (any mode, converted to RGB)."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return image
