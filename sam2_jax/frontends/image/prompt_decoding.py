"""The stateless half of ``Sam2ImagePredictor``: prompts against an embedded image in, masks out.

``ImageEmbedding`` holds what the encoder made of B images. ``PromptDecoding`` is the predictor's mixin for
everything that decodes prompts against an ``ImageEmbedding`` passed in (nothing stored): padding prompts to their
bucket once (``_prompt_args``), the jitted decoder call (``_decode_prompts``), the full-size post-processing
(``postprocess_masks``, on the device), the automatic mask generator's batch forms ``predict_batched`` and
``predict_survivors``, and ``predict_embedded``, which ``predict``, ``predict_batch`` and ``warm_up`` share. Shapes
are given in each method's docstring and in ``image_predictor``'s module docstring. The predictor supplies
``params``, ``image_size``, ``mask_threshold``, ``max_hole_area``, ``max_sprinkle_area`` and the jitted
``_decode`` / ``_survivors`` / ``_image_pe``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from ...processing import prompts
from ...processing.components import fill_holes_and_remove_sprinkles
from ...processing.masks import LOW_RES_CLAMP, masks_to_size
from . import mask_survivors
from .mask_survivors import Survivors


@dataclass(frozen=True)
class ImageEmbedding:
    """What the image encoder made of B images: ``features`` (the encoder outputs, each (B, ...), the last the
    (B, 64, 64, 256) embedding) and their ``original_sizes`` ((height, width) per image)."""

    features: tuple[jax.Array, ...]
    original_sizes: tuple[tuple[int, int], ...]


class PromptDecoding:
    """Mixin of ``Sam2ImagePredictor``: see the module docstring."""

    def predict_embedded(
        self,
        embedding: ImageEmbedding,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        image_index: int = 0,
    ):
        """``predict`` against an ``ImageEmbedding`` passed in (image ``image_index`` of it) instead of the one
        stored by ``set_image``: the same arguments, checks and (masks, scores, low-res logits); nothing stored,
        so threads may call it with embeddings of their own (the annotation server keeps one per photo)."""
        emb, img_idx, normalize = embedding, image_index, normalize_coords
        points, labels = point_coords, point_labels
        if not 0 <= img_idx < len(emb.original_sizes):
            raise ValueError(f"image_index {img_idx} is outside the {len(emb.original_sizes)} embedded images")
        low_res_dev, scores, n = self._decode_prompts(
            points, labels, box, mask_input, multimask_output, emb, img_idx, normalize, None
        )
        h, w = emb.original_sizes[img_idx]
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

    def predict_survivors(
        self,
        points,
        *,
        embedding: ImageEmbedding,
        iou_thresh: float,
        pad_to: int | None = None,
        stats: tuple[float, float] | None = None,
        image_index: int = 0,
    ) -> Survivors:
        """Decode P single positive point prompts (points (P, 2) in original pixels) of ``embedding``'s image,
        three masks each, making masks only for prompts with a predicted IoU above ``iou_thresh`` (in float32),
        padded once to ``pad_to`` prompts (else the next bucket): the automatic mask generator's batch.
        ``stats`` = (mask_threshold, stability_offset) also computes the passing masks' stability scores and
        boxes at the image's size on the device. Returns a ``mask_survivors.Survivors``; the batch crosses to
        the host once. See ``frontends.image.mask_survivors``."""
        return mask_survivors.predict(self, points, embedding, iou_thresh, pad_to, stats, image_index)

    def _prompt_args(self, points, labels, boxes, mask_input, emb, image_index, normalize, pad_to):
        """The padded model inputs (dict of ``points``, ``labels``, ``prompt_mask``, ``boxes``, ``masks``) of n
        prompts, n, and the padded count p."""
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
        return args, n, p

    def _decode_prompts(self, points, labels, boxes, mask_input, multimask_output, emb, image_index, normalize, pad_to):
        """Pad and decode: low-res logits (p, M, 256, 256) of the p >= n padded prompts, left on the device, the
        scores (n, M) NumPy, and n."""
        args, n, _ = self._prompt_args(points, labels, boxes, mask_input, emb, image_index, normalize, pad_to)
        features = tuple(f[image_index : image_index + 1] for f in emb.features)
        low_res, scores = self._decode(self.params, self._image_pe, features, multimask_output=multimask_output, **args)
        return low_res[0], np.asarray(scores[0])[:n], n
