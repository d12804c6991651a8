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
generator uses them). ``predict_survivors(points (P, 2), embedding=..., iou_thresh=...)`` is the generator's
batch: masks made only where a predicted IoU passes the threshold (``frontends.image.mask_survivors``).
These stateless methods are the ``PromptDecoding`` mixin (``frontends.image.prompt_decoding``).

``warm_up(original_size, **predict's arguments)`` compiles what that ``predict`` will need before the image is
encoded, in a thread by default, so that the compiling overlaps ``set_image`` (``frontends.image.warm_up``; the command
line does this).

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ...modeling.sam2_model import Sam2Model
from ...processing.processor import Sam2Processor
from . import mask_survivors
from .prompt_decoding import ImageEmbedding, PromptDecoding
from .warm_up import warm_up

__all__ = ["ImageEmbedding", "Sam2ImagePredictor"]


class Sam2ImagePredictor(PromptDecoding):
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
        self._survivors = jax.jit(functools.partial(mask_survivors.decode_survivors, model))
        self.reset_predictor()

    @classmethod
    def from_pretrained(cls, src, dtype=jnp.float32, config=None, image_size=None, **kwargs) -> Sam2ImagePredictor:
        """Load a checkpoint (any source ``sam2_jax.load`` accepts, with its ``config`` and ``image_size``: a ``.pt``
        trained at another size than 1024 px needs one) and wrap it."""
        from ...checkpoints.loading import load
        from ...utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype=dtype, config=config, image_size=image_size)
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

    def embed_images(self, images: Sequence) -> list[ImageEmbedding]:
        """Run the encoder once on several images (each resized to the model's square input, so any sizes mix)
        and return one single-image embedding per image, storing nothing (thread-safe). The encoder compiles
        once per number of images."""
        inputs = self.processor(images=list(images))
        batch = self.embed_pixel_values(inputs["pixel_values"], inputs["original_sizes"])
        return [
            ImageEmbedding(tuple(f[i : i + 1] for f in batch.features), (hw,))
            for i, hw in enumerate(batch.original_sizes)
        ]

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
        return self.predict_embedded(
            self._embedding,
            point_coords,
            point_labels,
            box,
            mask_input,
            multimask_output,
            return_logits,
            normalize_coords,
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
            res = self.predict_embedded(
                self._embedding,
                item(point_coords_batch, i, "point_coords_batch"),
                item(point_labels_batch, i, "point_labels_batch"),
                item(box_batch, i, "box_batch"),
                item(mask_input_batch, i, "mask_input_batch"),
                multimask_output,
                return_logits,
                normalize_coords,
                image_index=i,
            )
            for acc, r in zip(outs, res, strict=True):
                acc.append(r)
        return outs

    def warm_up(
        self,
        original_size: tuple[int, int],
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        background: bool = True,
    ):
        """Compile what ``predict`` will need for prompts shaped like these (the values do not matter) on an
        image of ``original_size`` = (H, W), by running it once on a zero embedding: the decoder's bucket and the
        post-processing at that size. With ``background`` (default) it runs in a thread and returns a
        ``concurrent.futures.Future`` to wait on, so that it overlaps ``set_image`` (the command line starts it
        before encoding); otherwise it returns None when done. Stores nothing on the predictor."""
        args = (point_coords, point_labels, box, mask_input, multimask_output, return_logits, normalize_coords)
        return warm_up(self, tuple(int(v) for v in original_size), args, background)
