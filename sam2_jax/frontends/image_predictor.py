"""An image predictor in the shape of the official ``SAM2ImagePredictor``: embed an image once, answer many prompts.

``set_image(image)`` runs the jit-compiled image encoder once; ``predict(...)`` decodes prompts against the
stored embedding and returns NumPy arrays in the official shapes and order:

  masks            (C, H, W) at the original image size: bool (1 byte a pixel), or float32 logits with
                   ``return_logits``
  scores           (C,) predicted IoU
  low_res_logits   (C, 256, 256), clamped to [-32, 32] like the official predictor

with C = 3 when ``multimask_output`` and 1 otherwise, and a leading (B,) axis when several prompts are given
at once (points (B, N, 2), boxes (B, 4), masks (B, 1, 256, 256)).

Post-processing runs on the device: the low-res logits are upsampled straight to the original size (bilinear,
``align_corners=False``, as the official ``SAM2Transforms.postprocess_masks``) and thresholded at
``mask_threshold`` in one compiled call (``processing.masks.masks_to_size``), so the float full-size logits are
never stored unless ``return_logits``; only hole filling / sprinkle removal (``max_hole_area``,
``max_sprinkle_area``, connected components at 256 px) runs on the host. That call compiles once per original
image size (and per ``PROMPT_BUCKETS`` chunk of prompts, multimask or not, logits or not): the first ``predict``
on a new image size pays a compile of a few tenths of a second.

``embed_image(image)`` -> ``ImageEmbedding`` and ``predict_batched(points (P, N, 2), labels (P, N), boxes (P, 4),
mask_input (P, 1, 256, 256), embedding=...)`` -> (low-res logits (P, M, 256, 256), scores (P, M)) are the
stateless form: many prompts of one image decoded at once, nothing stored on the predictor (the automatic mask
generator uses them).

Static shapes on purpose: the number of points per prompt and the number of prompts are padded up to the
next bucket of ``sam2_jax.processing.prompts.PROMPT_BUCKETS`` (or to ``pad_to`` prompts), once, by
``prompts.pad_batch``. Padded points are masked out of the decoder's attention and padded prompts are dropped,
so a padded call equals the unpadded one, and a new number of clicks does not recompile (it compiles once per
bucket, per prompt kind and per ``multimask_output``).

Threads: ``set_image`` stores the current image on the predictor, as the official predictor does, so
``set_image`` / ``predict`` / ``predict_batch`` are not safe to share between threads (give each thread its own
predictor). ``embed_image`` and ``predict_batched(..., embedding=...)`` keep no state and are safe to call from
several threads at once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..modeling.sam2_model import Sam2Model
from ..processing import prompts
from ..processing.components import fill_holes_and_remove_sprinkles
from ..processing.masks import LOW_RES_CLAMP, masks_to_size
from ..processing.processor import Sam2Processor


@dataclass(frozen=True)
class ImageEmbedding:
    """What the image encoder made of B images: ``features`` (the encoder outputs, each (B, ...), the last the
    (B, 64, 64, 256) embedding) and their ``original_sizes`` ((height, width) per image)."""

    features: tuple[jax.Array, ...]
    original_sizes: tuple[tuple[int, int], ...]


class Sam2ImagePredictor:
    """Embed once, decode many prompts; see the module docstring.

    Not thread-safe: ``set_image`` stores the current image on the predictor (as the official predictor does),
    so ``set_image`` / ``predict`` / ``predict_batch`` must not be shared between threads. ``embed_image`` and
    ``predict_batched(..., embedding=...)`` keep no state and are safe from several threads."""

    def __init__(
        self,
        model: Sam2Model,
        params: Any,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        processor: Sam2Processor | None = None,
    ):
        self.model = model
        self.params = params
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        size = model.config.prompt_encoder_config.image_size
        self.processor = processor or Sam2Processor(image_size=size)
        self.image_size = size
        self._encode = jax.jit(functools.partial(self._encode_fn, model))
        self._image_pe = jax.jit(
            lambda p: model.apply({"params": p}, method=Sam2Model.get_image_wide_positional_embeddings)
        )(params)  # depends on the params only: computed once, not per prompt
        self._decode = jax.jit(functools.partial(self._decode_fn, model), static_argnames=("multimask_output",))
        self.reset_predictor()

    @classmethod
    def from_pretrained(cls, src, dtype=jnp.float32, **kwargs) -> Sam2ImagePredictor:
        """Load a checkpoint (any source ``sam2_jax.load`` accepts) and wrap it."""
        from ..checkpoints.loading import load
        from ..utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype=dtype)
        return cls(model, params, **kwargs)

    # ---- pure functions (params are arguments, the model is a closure constant) -------------------------------
    @staticmethod
    def _encode_fn(model, params, pixel_values):
        return model.apply({"params": params}, pixel_values, method=Sam2Model.get_image_embeddings)

    @staticmethod
    def _decode_fn(model, params, image_pe, embeddings, points, labels, prompt_mask, boxes, masks, multimask_output):
        out = model.apply(
            {"params": params},
            image_embeddings=embeddings,
            image_positional_embeddings=image_pe,
            input_points=points,
            input_labels=labels,
            input_boxes=boxes,
            input_masks=masks,
            prompt_mask=prompt_mask,
            multimask_output=multimask_output,
        )
        return out.pred_masks, out.iou_scores

    # ---- images ------------------------------------------------------------------------------------------------
    def reset_predictor(self) -> None:
        self._embedding: ImageEmbedding | None = None
        self._is_batch = False

    @property
    def _orig_hw(self) -> tuple[tuple[int, int], ...]:
        return () if self._embedding is None else self._embedding.original_sizes

    def embed_image(self, image) -> ImageEmbedding:
        """Run the encoder on one image (PIL, (H, W, 3) array, grayscale or RGBA) and return the embedding,
        storing nothing (thread-safe)."""
        inputs = self.processor(images=image)
        return self.embed_pixel_values(inputs["pixel_values"], inputs["original_sizes"])

    def embed_pixel_values(self, pixel_values: np.ndarray, original_sizes) -> ImageEmbedding:
        """Run the encoder on already normalised (B, 1024, 1024, 3) pixels; ``original_sizes`` (B, 2) as
        (height, width). Stores nothing (thread-safe)."""
        pixel_values = np.asarray(pixel_values, np.float32)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"pixel_values must be (B, {self.image_size}, {self.image_size}, 3), got {pixel_values.shape}"
            )
        sizes = tuple(tuple(int(v) for v in hw) for hw in np.asarray(original_sizes).reshape(-1, 2))
        if len(sizes) != pixel_values.shape[0]:
            raise ValueError(f"{len(sizes)} original sizes for {pixel_values.shape[0]} images")
        return ImageEmbedding(tuple(self._encode(self.params, pixel_values)), sizes)

    def set_image(self, image) -> None:
        """Embed one image (PIL, (H, W, 3) array, grayscale or RGBA)."""
        inputs = self.processor(images=image)
        self.set_pixel_values(inputs["pixel_values"], inputs["original_sizes"], batch=False)

    def set_image_batch(self, images: Sequence) -> None:
        """Embed several images at once for ``predict_batch``."""
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            raise ValueError("set_image_batch takes a list of images")
        inputs = self.processor(images=list(images))
        self.set_pixel_values(inputs["pixel_values"], inputs["original_sizes"], batch=True)

    def set_pixel_values(self, pixel_values: np.ndarray, original_sizes, batch: bool | None = None) -> None:
        """Embed already normalised (B, 1024, 1024, 3) pixels; ``original_sizes`` (B, 2) as (height, width).

        ``batch`` says whether ``predict_batch`` (True) or ``predict`` (False) answers; by default B > 1."""
        self._embedding = self.embed_pixel_values(pixel_values, original_sizes)
        n = len(self._embedding.original_sizes)
        self._is_batch = n > 1 if batch is None else batch

    @property
    def embedding(self) -> ImageEmbedding | None:
        """The ``ImageEmbedding`` of the image(s) set with ``set_image``/``set_image_batch``, or None."""
        return self._embedding

    def get_image_embedding(self) -> jax.Array:
        """(B, 64, 64, 256) embedding of the current image(s)."""
        return self._require_image().features[-1]

    def _require_image(self) -> ImageEmbedding:
        if self._embedding is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        return self._embedding

    # ---- prompts -----------------------------------------------------------------------------------------------
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ):
        """Masks, scores and low-res logits for prompts on the image given to ``set_image``."""
        self._require_image()
        if len(self._orig_hw) > 1:
            raise RuntimeError(f"{len(self._orig_hw)} images are set: use predict_batch, or set_image for one")
        return self._predict_one(
            0, point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords
        )

    def predict_batch(
        self,
        point_coords_batch=None,
        point_labels_batch=None,
        box_batch=None,
        mask_input_batch=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ):
        """Lists of (masks, scores, low-res logits), one entry per image given to ``set_image_batch``."""
        self._require_image()
        if not self._is_batch:
            raise RuntimeError("predict_batch needs images set with .set_image_batch(...)")
        n = len(self._orig_hw)
        outs = ([], [], [])

        def item(seq, i, name):
            if seq is None:
                return None
            if len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} images")
            return seq[i]

        for i in range(n):
            res = self._predict_one(
                i,
                item(point_coords_batch, i, "point_coords_batch"),
                item(point_labels_batch, i, "point_labels_batch"),
                item(box_batch, i, "box_batch"),
                item(mask_input_batch, i, "mask_input_batch"),
                multimask_output,
                return_logits,
                normalize_coords,
            )
            for acc, r in zip(outs, res, strict=True):
                acc.append(r)
        return outs

    def _predict_one(self, img_idx, points, labels, box, mask_input, multimask_output, return_logits, normalize):
        low_res_dev, scores, n = self._decode_prompts(
            points, labels, box, mask_input, multimask_output, self._require_image(), img_idx, normalize, None
        )
        h, w = self._orig_hw[img_idx]
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:  # connected components: on the host, at 256 px
            src = fill_holes_and_remove_sprinkles(
                np.asarray(low_res_dev)[:n], self.max_hole_area, self.max_sprinkle_area, self.mask_threshold
            )
            masks = self.postprocess_masks(src, (h, w), binarize=not return_logits)
        else:
            masks = self.postprocess_masks(low_res_dev, (h, w), binarize=not return_logits, count=n)
        low_res = np.clip(np.asarray(low_res_dev)[:n], -LOW_RES_CLAMP, LOW_RES_CLAMP)
        if len(scores) == 1:  # the official predictor squeezes a batch of one
            return masks[0], scores[0], low_res[0]
        return masks, scores, low_res

    def postprocess_masks(self, low_res, size: tuple[int, int], binarize: bool = True, count: int | None = None):
        """Low-res logits (P, M, h, w) (NumPy or on the device) -> (count, M, H, W) NumPy at ``size`` = (H, W):
        bool ``logits > mask_threshold`` when ``binarize``, else float32 logits (the official postprocessing:
        bilinear, ``align_corners=False``, straight to the original size; no hole filling here).

        On the device, one compiled call per chunk (``processing.masks.masks_to_size``). The first ``count``
        (default all P) prompts are taken in chunks whose sizes are ``PROMPT_BUCKETS`` (17 = 16 + 1), so the
        compiles per image size are bounded by the buckets and no padded prompt is upsampled."""
        count = len(low_res) if count is None else count
        size = (int(size[0]), int(size[1]))
        parts, start = [], 0
        while start < count:
            step = max(b for b in prompts.PROMPT_BUCKETS if b <= count - start)
            chunk = low_res if step == len(low_res) else low_res[start : start + step]
            parts.append(np.asarray(masks_to_size(chunk, size, self.mask_threshold, binarize)))
            start += step
        if len(parts) == 1:
            return parts[0]
        if not parts:
            shape = (0, *low_res.shape[1:-2], *size)
            return np.zeros(shape, np.bool_ if binarize else np.float32)
        return np.concatenate(parts)

    def predict_batched(
        self,
        points=None,
        labels=None,
        boxes=None,
        mask_input=None,
        *,
        multimask_output: bool = True,
        embedding: ImageEmbedding | None = None,
        image_index: int = 0,
        normalize_coords: bool = True,
        pad_to: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode P prompts of one image at once: low-res logits (P, M, 256, 256) float32 (not clamped, not
        post-processed) and IoU scores (P, M), NumPy.

        points (P, N, 2) or (N, 2) and labels (P, N) or (N,) in original image pixels (the model frame with
        ``normalize_coords=False``), boxes (P, 4) or (4,), mask_input (P, 1, 256, 256) or (1, 256, 256) logits.
        ``embedding`` (from ``embed_image``) is the image, else image ``image_index`` of the one set with
        ``set_image``/``set_image_batch``. The prompts are padded once, to ``pad_to`` prompts when given (one
        compile for batches of up to ``pad_to`` prompts) or else to the next bucket."""
        emb = self._require_image() if embedding is None else embedding
        low_res, scores, n = self._decode_prompts(
            points, labels, boxes, mask_input, multimask_output, emb, image_index, normalize_coords, pad_to
        )
        return np.asarray(low_res)[:n], scores

    def _decode_prompts(self, points, labels, boxes, mask_input, multimask_output, emb, image_index, normalize, pad_to):
        """Pad and decode: low-res logits (p, M, 256, 256) of the p >= n padded prompts, left on the device, the
        scores (n, M) NumPy, and n."""
        size = emb.original_sizes[image_index]
        n_masks = None
        if mask_input is not None:
            mask_input = np.asarray(mask_input, np.float32)
            if mask_input.ndim == 3:
                mask_input = mask_input[None]
            if mask_input.ndim != 4 or mask_input.shape[1] != 1:
                raise ValueError(f"mask_input must be (1, 256, 256) or (B, 1, 256, 256), got {mask_input.shape}")
            n_masks = mask_input.shape[0]
        enc = prompts.encode(
            points,
            labels,
            boxes,
            size=size,
            image_size=self.image_size,
            n_prompts=n_masks,
            normalize=normalize,
        )
        n = enc.n_prompts
        if n_masks is not None and n_masks not in (1, n):
            raise ValueError(f"{n_masks} mask inputs for {n} prompts")
        p = prompts.bucket(n) if pad_to is None else pad_to
        if p < n:
            raise ValueError(f"{n} prompts do not fit pad_to={pad_to}")
        args = prompts.pad_batch([enc], p, prompts.bucket(enc.n_points))
        args = {
            "points": args.get("input_points"),
            "labels": args.get("input_labels"),
            "prompt_mask": args.get("prompt_mask"),
            "boxes": args.get("input_boxes"),
            "masks": None,
        }
        if mask_input is not None:
            m = mask_input[:, 0]
            # one mask per prompt is padded with the prompts; a single mask for several prompts is broadcast
            args["masks"] = (np.pad(m, ((0, p - n), (0, 0), (0, 0))) if len(m) == n else m)[None]
        features = tuple(f[image_index : image_index + 1] for f in emb.features)
        low_res, scores = self._decode(self.params, self._image_pe, features, multimask_output=multimask_output, **args)
        return low_res[0], np.asarray(scores[0])[:n], n
