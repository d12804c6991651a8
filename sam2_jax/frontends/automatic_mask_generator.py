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

Per crop the image is embedded once and the grid is decoded ``points_per_batch`` points at a time under jit (the
last batch padded, so one compile serves all). Masks that pass ``pred_iou_thresh`` are upsampled to the crop size
(bilinear as two matrix products, under jit, 8 masks at a time) for their stability scores and boxes; survivors
are upsampled again, binarised and run-length encoded. ``min_mask_region_area`` > 0 fills holes and removes
sprinkles of up to that many pixels in the low-resolution logits, like the official predictor (which needs its
CUDA extension for it). Filtering, NMS and RLE are vectorised NumPy (``sam2_jax.amg``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..processing import amg
from .image_predictor import Sam2ImagePredictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
_CHUNK = 8  # masks upsampled at once (bounds memory: 8 x H x W float32)


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of 1-D linear resizing with ``align_corners=False``; each row holds the
    two taps of torch's bilinear kernel, computed in float32 as it does (source index clamped at 0)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam1 = (src - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), np.float32(1) - lam1)
    np.add.at(m, (rows, i1), lam1)
    return m


def upsample_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(..., h, w) -> (..., H, W) bilinear, ``align_corners=False``, like torch's ``F.interpolate``.

    Two small matrix products (columns, then rows) with full float32 precision: on CPU several times faster
    than gathering the taps, and the natural form for an accelerator."""
    h, w = x.shape[-2:]
    rows = jnp.asarray(interpolation_matrix(h, size[0]))
    cols = jnp.asarray(interpolation_matrix(w, size[1]))
    hi = jax.lax.Precision.HIGHEST
    t = jnp.matmul(x, cols.T, precision=hi)  # (..., h, W)
    return jnp.matmul(rows, t, precision=hi)  # (..., H, W)


def _stats_fn(logits, size, mask_threshold, offset):
    """Stability score and xyxy box of each full-resolution mask of a chunk of (K, h, w) low-res logits."""
    full = upsample_bilinear(logits, size)
    inter = jnp.sum(full > mask_threshold + offset, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(full > mask_threshold - offset, axis=(-2, -1)).astype(jnp.float32)
    stability = inter / union  # NaN for a mask empty at the low threshold, as the official score
    binary = full > mask_threshold
    rows, cols = jnp.any(binary, axis=-1), jnp.any(binary, axis=-2)
    (x0, x1), (y0, y1) = _first_last(cols), _first_last(rows)
    return stability, jnp.stack([x0, y0, x1, y1], axis=-1)


def _binarize_t(logits, size, mask_threshold):
    """(K, h, w) low-res logits -> (K, W, H) bool full-resolution masks, transposed (column-major for RLE)."""
    return jnp.swapaxes(upsample_bilinear(logits, size) > mask_threshold, -1, -2)


_STATS = jax.jit(_stats_fn, static_argnames=("size",))
_BINARIZE_T = jax.jit(_binarize_t, static_argnames=("size",))


def _first_last(any_along: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First and last True index along the last axis; (0, 0) when none (the official empty-box convention)."""
    n = any_along.shape[-1]
    idx = jnp.arange(n)
    empty = ~jnp.any(any_along, axis=-1)
    first = jnp.min(jnp.where(any_along, idx, n), axis=-1)
    last = jnp.max(jnp.where(any_along, idx, -1), axis=-1)
    return jnp.where(empty, 0, first), jnp.where(empty, 0, last)


class Sam2AutomaticMaskGenerator:
    """The official ``SAM2AutomaticMaskGenerator`` over a JAX model; see the module docstring.

    ``model, params`` as ``sam2_jax.load`` returns them, or ``predictor=`` an existing ``Sam2ImagePredictor``
    (its compiled encoder and decoder are reused; its own hole and sprinkle settings are not consulted).
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
            amg.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
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
        self._stats = _STATS  # shared by all generators: one compile per crop size
        self._binarize_t = _BINARIZE_T

    @classmethod
    def from_pretrained(cls, src, dtype=jnp.float32, **kwargs) -> Sam2AutomaticMaskGenerator:
        """Load a checkpoint (any source ``sam2_jax.load`` accepts) and wrap it; ``kwargs`` as ``__init__``."""
        from ..checkpoints.loading import load

        model, params = load(src, dtype=dtype)
        return cls(model, params, **kwargs)

    # ---- public ------------------------------------------------------------------------------------------------
    def generate(self, image, progress: bool = False) -> list[dict[str, Any]]:
        """Mask records for an (H, W, 3) RGB image (uint8 array, or a PIL image); see the module docstring."""
        image = _as_image(image)
        data = self._generate_masks(image, progress)
        if self.output_mode == "binary_mask":
            segs = [amg.rle_to_mask(rle) for rle in data["rles"]]
        elif self.output_mode == "coco_rle":
            segs = [amg.coco_encode_rle(rle) for rle in data["rles"]]
        else:
            segs = data["rles"]
        # the official records carry float32 boxes, points and scores as Python floats
        boxes = amg.box_xyxy_to_xywh(data["boxes"].astype(np.float32)).tolist()
        crop_boxes = amg.box_xyxy_to_xywh(data["crop_boxes"].astype(np.float32)).tolist()
        points = data["points"].astype(np.float32).tolist()
        ious = data["iou_preds"].astype(np.float32).tolist()
        stability = data["stability_score"].astype(np.float32).tolist()
        return [
            {
                "segmentation": segs[i],
                "area": amg.area_from_rle(rle),
                "bbox": boxes[i],
                "predicted_iou": ious[i],
                "point_coords": [points[i]],
                "stability_score": stability[i],
                "crop_box": crop_boxes[i],
            }
            for i, rle in enumerate(data["rles"])
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
            from PIL import Image

            with Image.open(image) as im:
                image = np.asarray(im.convert("RGB"))
        saved = self.points_per_batch
        if points_per_batch is not None:
            if points_per_batch < 1:
                raise ValueError("points_per_batch must be positive")
            self.points_per_batch = points_per_batch
        try:
            data = self._generate_masks(_as_image(image), progress=False)
        finally:
            self.points_per_batch = saved
        out: dict[str, Any] = {
            "masks": [amg.rle_to_mask(rle) for rle in data["rles"]],
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
        for s in range(0, n, _CHUNK):  # full-resolution connected components, a chunk of masks at a time
            chunk = np.stack([amg.rle_to_mask(rle) for rle in data["rles"][s : s + _CHUNK]])
            chunk, holes = amg.remove_small_regions(chunk, min_area, "holes")
            chunk, islands = amg.remove_small_regions(chunk, min_area, "islands")
            masks.append(chunk)
            unchanged.append(~(holes | islands))
        masks, unchanged = np.concatenate(masks), np.concatenate(unchanged)
        boxes = amg.batched_mask_to_box(masks)
        keep = amg.batched_nms(boxes.astype(np.float32), unchanged.astype(np.float32), None, nms_thresh)
        changed = keep[~unchanged[keep]]
        out = dict(data, rles=list(data["rles"]), boxes=np.array(data["boxes"], copy=True))
        for i, rle in zip(changed.tolist(), amg.mask_to_rle(masks[changed]), strict=True):
            out["rles"][i] = rle
        out["boxes"][changed] = boxes[changed]
        return _take(out, keep)

    # ---- internals ---------------------------------------------------------------------------------------------
    def _generate_masks(self, image: np.ndarray, progress: bool) -> dict[str, Any]:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = amg.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(-(-len(self.point_grids[i]) // self.points_per_batch) for i in layer_idxs)
        bar = _progress(total, progress)
        parts = [
            self._process_crop(image, box, layer, orig_size, bar)
            for box, layer in zip(crop_boxes, layer_idxs, strict=True)
        ]
        bar.close()
        data = _cat(parts)
        if len(crop_boxes) > 1 and len(data["iou_preds"]):  # prefer masks from smaller crops
            cb = data["crop_boxes"]
            scores = np.float32(1.0) / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            keep = amg.batched_nms(data["boxes"].astype(np.float32), scores, None, self.crop_nms_thresh)
            data = _take(data, keep)
        return data

    def _process_crop(self, image, crop_box, layer_idx, orig_size, bar) -> dict[str, Any]:
        x0, y0, x1, y1 = crop_box
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        h, w = cropped.shape[:2]
        self.predictor.set_image(cropped)
        points = (self.point_grids[layer_idx] * np.array([w, h])).astype(np.float32)
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            parts.append(self._process_batch(batch, (h, w), crop_box, orig_size))
            bar.update(1)
        self.predictor.reset_predictor()
        data = _cat(parts)
        if len(data["iou_preds"]):
            keep = amg.batched_nms(data["boxes"].astype(np.float32), data["iou_preds"], None, self.box_nms_thresh)
            data = _take(data, keep)
        data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = amg.uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = np.tile(np.asarray(crop_box, np.int64), (len(data["iou_preds"]), 1))
        return data

    def _decode(self, points_xy, size, mask_input=None, multimask=True):
        """Decode one fixed-size batch of single-point prompts: low-res logits (n, M, h, w), scores (n, M)."""
        n = len(points_xy)
        pad = self.points_per_batch - n
        coords = np.pad(points_xy, ((0, pad), (0, 0)))[:, None, :]
        labels = np.ones((self.points_per_batch, 1), np.int32)
        if mask_input is not None:
            mask_input = np.pad(mask_input, ((0, pad), (0, 0), (0, 0)))[:, None]
        low_res, scores = self.predictor._decode_padded(
            0, self._to_model(coords, size), labels, None, mask_input, self.points_per_batch, multimask
        )
        return low_res[:n], scores[:n]

    def _to_model(self, coords: np.ndarray, size) -> np.ndarray:
        """Crop pixels -> the model's input frame, in float32 and in the official transform's order."""
        h, w = size
        xy = coords.astype(np.float32) / np.array([w, h], np.float32)
        return xy * np.float32(self.predictor.image_size)

    def _fill(self, low_res: np.ndarray) -> np.ndarray:
        """The official predictor's clean-up of (K, h, w) low-res logits for ``min_mask_region_area``: background
        components (8-connected) of area <= it become threshold + 10, foreground ones threshold - 10, both found
        on the logits as they come (the official computes the sprinkles before filling the holes)."""
        area = self.min_mask_region_area
        if area <= 0:
            return low_res
        from ..processing.components import connected_components

        t = self.mask_threshold
        labels, areas = connected_components(low_res <= t)
        holes = (labels > 0) & (areas <= area)
        labels, areas = connected_components(low_res > t)
        sprinkles = (labels > 0) & (areas <= area)
        return np.where(holes, np.float32(t + 10.0), np.where(sprinkles, np.float32(t - 10.0), low_res))

    def _process_batch(self, points, size, crop_box, orig_size) -> dict[str, Any]:
        low_res, scores = self._decode(points, size, multimask=self.multimask_output)
        m = low_res.shape[1]
        clamped = np.clip(low_res, -32.0, 32.0)
        data = {
            "logits": self._fill(low_res.reshape(-1, *low_res.shape[2:])),
            "low_res": clamped.reshape(-1, *low_res.shape[2:]),
            "iou_preds": scores.reshape(-1),
            "points": np.repeat(points, m, axis=0),
        }
        if self.use_m2m:  # one refinement step, each mask fed back with its own point
            refined, ious = [], []
            for s in range(0, len(data["points"]), self.points_per_batch):
                sl = slice(s, s + self.points_per_batch)
                r, i = self._decode(data["points"][sl], size, mask_input=data["low_res"][sl], multimask=False)
                refined.append(r[:, 0])
                ious.append(i[:, 0])
            data["logits"] = self._fill(np.concatenate(refined)) if refined else data["logits"][:0]
            data["iou_preds"] = np.concatenate(ious) if ious else data["iou_preds"][:0]
        if self.pred_iou_thresh > 0.0:
            data = _take(data, np.nonzero(data["iou_preds"] > self.pred_iou_thresh)[0])
        stability, boxes = self._mask_stats(data["logits"], size)
        data["stability_score"], data["boxes"] = stability, boxes
        if self.stability_score_thresh > 0.0:
            data = _take(data, np.nonzero(data["stability_score"] >= self.stability_score_thresh)[0])
        orig_h, orig_w = orig_size
        near = amg.is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        data = _take(data, np.nonzero(~near)[0])
        data["rles"] = self._encode_masks(data["logits"], size, crop_box, orig_size)
        del data["logits"], data["low_res"]
        return data

    def _mask_stats(self, logits: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
        """Stability scores (K,) and xyxy boxes (K, 4) of (K, h, w) logits upsampled to ``size``, chunk by chunk
        (one compile per crop size; the last chunk padded)."""
        stability, boxes = [np.zeros(0, np.float32)], [np.zeros((0, 4), np.int64)]
        for s in range(0, len(logits), _CHUNK):
            chunk = logits[s : s + _CHUNK]
            st, bx = self._stats(
                jnp.asarray(_pad_rows(chunk, _CHUNK)), tuple(size), self.mask_threshold, self.stability_score_offset
            )
            stability.append(np.asarray(st)[: len(chunk)])
            boxes.append(np.asarray(bx)[: len(chunk)].astype(np.int64))
        return np.concatenate(stability), np.concatenate(boxes)

    def _encode_masks(self, logits, size, crop_box, orig_size) -> list[dict]:
        """RLEs of the binarised full-resolution masks in the image frame, upsampled chunk by chunk in jit."""
        x0, y0, x1, y1 = crop_box
        orig_h, orig_w = orig_size
        pad = ((0, 0), (x0, orig_w - x1), (y0, orig_h - y1))  # in the transposed (W, H) frame
        rles = []
        for s in range(0, len(logits), _CHUNK):
            chunk = logits[s : s + _CHUNK]
            masks_t = self._binarize_t(jnp.asarray(_pad_rows(chunk, _CHUNK)), tuple(size), self.mask_threshold)
            masks_t = np.asarray(masks_t)[: len(chunk)]
            if any(p != (0, 0) for p in pad):
                masks_t = np.pad(masks_t, pad)
            rles.extend(amg.mask_to_rle(masks_t, transposed=True))
        return rles


def _as_image(image) -> np.ndarray:
    """(H, W, 3) array from an array or a PIL image (any mode, converted to RGB)."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return image


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x, ((0, n - len(x)), (0, 0), (0, 0)))


def _take(data: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        out[k] = [v[i] for i in idx] if isinstance(v, list) else v[idx]
    return out


def _empty() -> dict[str, Any]:
    return {
        "iou_preds": np.zeros(0, np.float32),
        "points": np.zeros((0, 2), np.float32),
        "stability_score": np.zeros(0, np.float32),
        "boxes": np.zeros((0, 4), np.int64),
        "crop_boxes": np.zeros((0, 4), np.int64),
        "rles": [],
    }


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if not parts:
        return _empty()
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        out[k] = [x for v in vals for x in v] if isinstance(vals[0], list) else np.concatenate(vals)
    return out


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="mask generation", unit="batch")
