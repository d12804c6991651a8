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

Each crop is embedded once, the crops of a layer ``crop_batch`` to an encoder call (``default_crop_batch()``: 4
on accelerators, 1 on CPU; ``Sam2ImagePredictor.embed_images``, one compile per batch size), and its grid is decoded
``points_per_batch`` points at a time under jit, every batch padded once to ``points_per_batch`` prompts, so one
compile serves all (``frontends.image.mask_candidates``). With ``pred_iou_thresh`` > 0 (and no m2m, three masks a point)
a batch is one device call, ``predict_survivors`` (``frontends.image.mask_survivors``): the decoder's scores for every
point, masks only for points with a score above the threshold (the decoder's ``mask_floor``: on CPU about half the
decoding of a point without one), and those masks' stability scores and boxes at the crop size
(``processing.mask_stats``, counted without storing the upsampled masks), fetched to the host once. Otherwise
(``predict_batched``) every mask is made and the passing ones get the same numbers. Survivors are upsampled again,
binarised and run-length encoded. ``decode_threads`` batches of a crop are in flight at once, each in a thread
(on CPU one batch's decoding keeps about one core busy; elsewhere the host's work on one batch overlaps the
device's on the next); records keep the grid's order. ``min_mask_region_area`` > 0 fills holes and removes
sprinkles of up to that many pixels in the low-resolution logits, like the official predictor (which needs its
CUDA extension for it). Filtering, NMS and RLE are vectorised NumPy (``sam2_jax.processing``: ``crops``,
``boxes``, ``rle``, ``components``).

Threads: a generator keeps no per-call state (``points_per_batch`` of a call is passed down, the image
embedding is local to the call), so one generator may serve several threads at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax.numpy as jnp
import numpy as np

from ...processing import boxes as box_ops
from ...processing import crops, rle
from ...processing.images import read_image
from ...utils.progress import progress_bar
from . import mask_records as records
from .image_predictor import Sam2ImagePredictor
from .mask_candidates import batch_records

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


def default_decode_threads() -> int:
    """Batches in flight at once by default: on the CPU backend one per available core, up to 4 (one batch's
    decoding keeps about one core busy), elsewhere 2 (one batch's host work overlaps the next one's decoding)."""
    import jax

    if jax.default_backend() != "cpu":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def default_crop_batch() -> int:
    """Crops of a layer per encoder call by default: 1 on the CPU backend (on a 2-core CPU four crops took 12.5 s
    in one call against 9.1 s one by one: the batch's activations leave the cache), 4 elsewhere."""
    import jax

    return 1 if jax.default_backend() == "cpu" else 4


class Sam2AutomaticMaskGenerator:
    """The official ``SAM2AutomaticMaskGenerator`` over a JAX model; see the module docstring.

    ``model, params`` as ``sam2_jax.load`` returns them, or ``predictor=`` an existing ``Sam2ImagePredictor``
    (its compiled encoder and decoder are reused; its own hole and sprinkle settings are not consulted).
    ``decode_threads`` batches of a crop are decoded at once, each in its own thread (default
    ``default_decode_threads()``; 1 decodes them one after the other): the records are the same, in the same order.
    ``crop_batch`` crops of a crop layer go through the encoder at once (default ``default_crop_batch()``; 1: one
    by one; the records are the same up to float32 rounding of the batched encoder).
    Thread-safe: ``generate`` and ``__call__`` keep their state in the call (the predictor is used only through
    its stateless ``embed_images`` / ``predict_batched`` / ``predict_survivors``), so threads may share one generator.
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
        decode_threads: int | None = None,
        crop_batch: int | None = None,
    ):
        if (predictor is None) == (model is None or params is None):
            raise ValueError("Give either model and params, or a predictor")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"Unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}")
        if points_per_batch < 1:
            raise ValueError("points_per_batch must be positive")
        if decode_threads is not None and decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {decode_threads}")
        if crop_batch is not None and crop_batch < 1:
            raise ValueError(f"crop_batch must be at least 1, got {crop_batch}")
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
        self.decode_threads = decode_threads or default_decode_threads()
        self.crop_batch = crop_batch or default_crop_batch()

    @classmethod
    def from_pretrained(
        cls, src, dtype=jnp.float32, config=None, image_size=None, **kwargs
    ) -> Sam2AutomaticMaskGenerator:
        """Load a checkpoint (any source ``sam2_jax.load`` accepts, with its ``config`` and ``image_size``) and wrap
        it; ``kwargs`` as ``__init__``."""
        from ...checkpoints.loading import load
        from ...utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype=dtype, config=config, image_size=image_size)
        return cls(model, params, **kwargs)

    # ---- public ------------------------------------------------------------------------------------------------
    def generate(self, image, progress: bool | Callable[[int, int], None] = False) -> list[dict[str, Any]]:
        """Mask records for an (H, W, 3) RGB image (uint8 array, or a PIL image); see the module docstring.
        ``progress``: True for a tqdm bar, or a callable ``(batches done, batches in all)`` called as they end."""
        image = _as_image(image)
        data = self._generate_masks(image, progress, self.points_per_batch)
        return records.to_records(data, self.output_mode)

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
        return records.postprocess_small_regions(data, min_area, nms_thresh)

    # ---- internals ---------------------------------------------------------------------------------------------
    def _generate_masks(self, image: np.ndarray, progress, points_per_batch: int | None = None) -> dict[str, Any]:
        points_per_batch = points_per_batch or self.points_per_batch
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = crops.generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(-(-len(self.point_grids[i]) // points_per_batch) for i in layer_idxs)
        with progress_bar(total, progress, desc="mask generation", unit="batch") as bar:
            parts = [
                self._process_crop(embedding, box, layer, orig_size, bar, points_per_batch)
                for embedding, box, layer in self._embed_crops(image, crop_boxes, layer_idxs)
            ]
        data = records.cat(parts)
        if len(crop_boxes) > 1 and len(data["iou_preds"]):  # prefer masks from smaller crops
            cb = data["crop_boxes"]
            scores = np.float32(1.0) / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            keep = box_ops.batched_nms(data["boxes"].astype(np.float32), scores, None, self.crop_nms_thresh)
            data = records.take(data, keep)
        return data

    def _embed_crops(self, image, crop_boxes, layer_idxs):
        """(embedding, crop box, layer) per crop, in order: the crops of a layer embedded ``crop_batch`` at a time
        (one encoder call each; every crop is resized to the model's input, so their sizes may differ)."""
        start = 0
        while start < len(crop_boxes):
            stop = start + 1
            while stop < len(crop_boxes) and stop - start < self.crop_batch and layer_idxs[stop] == layer_idxs[start]:
                stop += 1
            group = crop_boxes[start:stop]
            cropped = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in group]
            yield from zip(self.predictor.embed_images(cropped), group, layer_idxs[start:stop], strict=True)
            start = stop

    def _process_crop(self, embedding, crop_box, layer_idx, orig_size, bar, points_per_batch) -> dict[str, Any]:
        h, w = embedding.original_sizes[0]
        points = (self.point_grids[layer_idx] * np.array([w, h])).astype(np.float32)

        def one(start):
            batch = points[start : start + points_per_batch]
            out = batch_records(self, batch, embedding, crop_box, orig_size, points_per_batch)
            bar.update(1)
            return out

        starts = range(0, len(points), points_per_batch)
        if self.decode_threads > 1 and len(starts) > 1:  # batches in flight at once, results in order
            with ThreadPoolExecutor(min(self.decode_threads, len(starts))) as pool:
                parts = list(pool.map(one, starts))
        else:
            parts = [one(start) for start in starts]
        data = records.cat(parts)
        if len(data["iou_preds"]):
            keep = box_ops.batched_nms(data["boxes"].astype(np.float32), data["iou_preds"], None, self.box_nms_thresh)
            data = records.take(data, keep)
        data["boxes"] = crops.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = crops.uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = np.tile(np.asarray(crop_box, np.int64), (len(data["iou_preds"]), 1))
        return data

    def _split(self) -> bool:
        """Whether a batch skips the masks of prompts whose IoU scores all miss ``pred_iou_thresh``
        (``predict_survivors``): not with m2m, which refines every mask, nor for one stability-checked mask."""
        return self.pred_iou_thresh > 0.0 and not self.use_m2m and self.multimask_output


def _as_image(image) -> np.ndarray:
    """(H, W, 3) array from an array or a PIL image (any mode, converted to RGB)."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = image.convert("RGB")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return image
