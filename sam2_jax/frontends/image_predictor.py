"""An image predictor in the shape of the official ``SAM2ImagePredictor``: embed an image once, answer many prompts.

``set_image(image)`` runs the jit-compiled image encoder once; ``predict(...)`` decodes prompts against the
stored embedding and returns NumPy arrays in the official shapes and order:

  masks            (C, H, W) at the original image size (bool, or float logits with ``return_logits``)
  scores           (C,) predicted IoU
  low_res_logits   (C, 256, 256), clamped to [-32, 32] like the official predictor

with C = 3 when ``multimask_output`` and 1 otherwise, and a leading (B,) axis when several prompts are given
at once (points (B, N, 2), boxes (B, 4), masks (B, 1, 256, 256)).

Static shapes on purpose: the number of points per prompt and the number of prompts are padded up to the
next bucket in ``PROMPT_BUCKETS``. Padded points are masked out of the decoder's attention and padded prompts
are dropped, so a padded call equals the unpadded one, and a new number of clicks does not recompile (it
compiles once per bucket, per prompt kind and per ``multimask_output``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..modeling.sam2_model import Sam2Model
from ..processing.processor import Sam2Processor

PROMPT_BUCKETS: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)  # one compile covers 2-4 clicks, 5-16...
LOW_RES_CLAMP = 32.0


def bucket(n: int) -> int:
    """The smallest bucket that holds ``n`` (the one padding rule for prompts)."""
    for b in PROMPT_BUCKETS:
        if n <= b:
            return b
    raise ValueError(f"{n} prompts or points exceed the largest bucket {PROMPT_BUCKETS[-1]}")


def _check_inside(xy: np.ndarray, w: int, h: int, name: str) -> None:
    """Raise if a coordinate (..., 2) lies outside the w x h image, naming the first one."""
    outside = (xy[..., 0] < 0) | (xy[..., 0] > w) | (xy[..., 1] < 0) | (xy[..., 1] > h)
    if np.any(outside):
        idx = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(f"{name}{list(idx)}: ({', '.join(f'{v:g}' for v in xy[idx])}) lies outside the {w}x{h} image")


def _pad_to(x: np.ndarray, size: int, axis: int, value=0) -> np.ndarray:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return np.pad(x, pad, constant_values=value)


class Sam2ImagePredictor:
    """Embed once, decode many prompts; see the module docstring."""

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
        self.trace_count = 0  # how often the decoder was traced (i.e. compiled); tests read it
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

        model, params = load(src, dtype=dtype)
        return cls(model, params, **kwargs)

    # ---- pure functions (params are arguments, the model is a closure constant) -------------------------------
    @staticmethod
    def _encode_fn(model, params, pixel_values):
        return model.apply({"params": params}, pixel_values, method=Sam2Model.get_image_embeddings)

    def _decode_fn(
        self, model, params, image_pe, embeddings, points, labels, prompt_mask, boxes, masks, multimask_output
    ):
        self.trace_count += 1  # runs at trace time only
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
        self._features = None
        self._orig_hw: list[tuple[int, int]] = []
        self._is_image_set = False
        self._is_batch = False

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
        pixel_values = np.asarray(pixel_values, np.float32)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"pixel_values must be (B, {self.image_size}, {self.image_size}, 3), got {pixel_values.shape}"
            )
        self._features = self._encode(self.params, pixel_values)
        self._orig_hw = [tuple(int(v) for v in hw) for hw in np.asarray(original_sizes).reshape(-1, 2)]
        if len(self._orig_hw) != pixel_values.shape[0]:
            raise ValueError(f"{len(self._orig_hw)} original sizes for {pixel_values.shape[0]} images")
        self._is_image_set = True
        self._is_batch = pixel_values.shape[0] > 1 if batch is None else batch

    def get_image_embedding(self) -> jax.Array:
        """(B, 64, 64, 256) embedding of the current image(s)."""
        self._require_image()
        return self._features[-1]

    def _require_image(self):
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

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
        h, w = self._orig_hw[img_idx]
        scale = (
            np.array([self.image_size / w, self.image_size / h], np.float32) if normalize else np.ones(2, np.float32)
        )
        n_prompts = None
        if points is not None:
            if labels is None:
                raise ValueError("point_labels must be supplied if point_coords is supplied.")
            points = np.asarray(points, np.float32)
            labels = np.asarray(labels)
            if points.ndim == 2:
                points, labels = points[None], labels[None]
            if points.ndim != 3 or points.shape[-1] != 2:
                raise ValueError(f"point_coords must be (N, 2) or (B, N, 2), got {points.shape}")
            if labels.shape != points.shape[:2]:
                raise ValueError(f"point_labels shape {labels.shape} does not match point_coords {points.shape}")
            if not np.all(np.isfinite(points)):
                raise ValueError("point_coords contain a non-finite number")
            if normalize:
                _check_inside(points, w, h, "point_coords")
            points = points * scale
            n_prompts = points.shape[0]
        if box is not None:
            box = np.asarray(box, np.float32)
            if box.shape[-1] != 4 or box.ndim > 2:
                raise ValueError(f"box must be (4,) or (B, 4), got {box.shape}")
            box = box.reshape(-1, 4)
            if not np.all(np.isfinite(box)):
                raise ValueError("box contains a non-finite number")
            if np.any(box[:, 2:] < box[:, :2]):
                raise ValueError(f"box {int(np.argmax(np.any(box[:, 2:] < box[:, :2], -1)))} has x2 < x1 or y2 < y1")
            if normalize:
                _check_inside(box.reshape(-1, 2, 2), w, h, "box")
            box = box * np.tile(scale, 2)
            if n_prompts is not None and box.shape[0] != n_prompts:
                if box.shape[0] == 1:
                    box = np.repeat(box, n_prompts, axis=0)
                elif n_prompts == 1:
                    points, labels = np.repeat(points, box.shape[0], 0), np.repeat(labels, box.shape[0], 0)
                    n_prompts = box.shape[0]
                else:
                    raise ValueError(f"{box.shape[0]} boxes for {n_prompts} point prompts")
            n_prompts = box.shape[0]
        if mask_input is not None:
            mask_input = np.asarray(mask_input, np.float32)
            if mask_input.ndim == 3:
                mask_input = mask_input[None]
            if mask_input.ndim != 4 or mask_input.shape[1] != 1:
                raise ValueError(f"mask_input must be (1, 256, 256) or (B, 1, 256, 256), got {mask_input.shape}")
            if n_prompts is None:
                n_prompts = mask_input.shape[0]
            elif mask_input.shape[0] not in (1, n_prompts):
                raise ValueError(f"{mask_input.shape[0]} mask inputs for {n_prompts} prompts")
        if n_prompts is None:
            n_prompts = 1

        low_res, scores = self._decode_padded(img_idx, points, labels, box, mask_input, n_prompts, multimask_output)
        masks = self.processor.post_process_masks(
            low_res[None],
            [(h, w)],
            mask_threshold=self.mask_threshold,
            binarize=not return_logits,
            max_hole_area=self.max_hole_area,
            max_sprinkle_area=self.max_sprinkle_area,
        )[0]
        low_res = np.clip(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP)
        if n_prompts == 1:  # the official predictor squeezes a batch of one
            return masks[0], scores[0], low_res[0]
        return masks, scores, low_res

    def _decode_padded(self, img_idx, points, labels, box, mask_input, n_prompts, multimask_output):
        """Pad prompts to buckets, decode under jit, drop the padding: (P, M, 256, 256), (P, M) NumPy."""
        p = bucket(n_prompts)
        args = dict(points=None, labels=None, prompt_mask=None, boxes=None, masks=None)
        if points is not None:
            n = bucket(points.shape[1])
            mask = np.ones(points.shape[:2], bool)
            args["points"] = _pad_to(_pad_to(points, n, 1), p, 0)[None]
            args["labels"] = _pad_to(_pad_to(labels.astype(np.int32), n, 1, -1), p, 0, -1)[None]
            args["prompt_mask"] = _pad_to(_pad_to(mask, n, 1, False), p, 0, False)[None]
        if box is not None:
            args["boxes"] = _pad_to(box, p, 0)[None]
        if mask_input is not None:
            m = mask_input[:, 0]
            args["masks"] = (m if m.shape[0] == 1 else _pad_to(m, p, 0))[None]
        if points is None and box is None:  # mask only (or nothing): no sparse token, as the official predictor
            args["points"] = np.zeros((1, p, 1, 2), np.float32)
            args["labels"] = np.full((1, p, 1), -1, np.int32)
            args["prompt_mask"] = np.zeros((1, p, 1), bool)
        embeddings = tuple(f[img_idx : img_idx + 1] for f in self._features)
        low_res, scores = self._decode(
            self.params, self._image_pe, embeddings, multimask_output=multimask_output, **args
        )
        return np.asarray(low_res[0, :n_prompts]), np.asarray(scores[0, :n_prompts])
