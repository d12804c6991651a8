"""``Sam2Processor``: NumPy + Pillow pre- and post-processing with transformers' ``Sam2Processor`` semantics.

``processor(images=..., input_points=..., input_labels=..., input_boxes=..., original_sizes=...)`` returns a
dict of NumPy arrays with transformers' names and shapes, pixels channels-last:

  pixel_values    (B, 1024, 1024, 3) float32: RGB, resized with antialiased bilinear (Pillow's, in
                  torchvision's pass order: within one 8-bit level of transformers' pixels, most of
                  them equal), then (x - 255 mean) / (255 std)
  original_sizes  (B, 2) int64, (height, width)
  input_points    (B, P, N, 2) float32 in the 1024 frame; ragged lists padded with -10 (coordinates and labels)
  input_labels    (B, P, N) int64
  input_boxes     (B, P, 4) float32 in the 1024 frame (every image must have the same number of boxes)

Prompts nest like transformers': points [image][object][point][x, y], labels [image][object][point],
boxes [image][box][x1, y1, x2, y2], in original image pixels. Bad prompts raise a ``ValueError`` naming the
image/object/point at fault. ``post_process_masks`` upsamples low-resolution logits to the original size
(bilinear, ``align_corners=False``) and, unlike transformers, really fills holes and removes sprinkles.
Validation and scaling of prompts are ``processing.prompts``' (shared by every front end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import prompts
from .components import fill_holes_and_remove_sprinkles
from .images import IMAGENET_MEAN, IMAGENET_STD, resize_square, to_rgb_uint8
from .masks import apply_non_overlapping, upsample_bilinear

POINT_PAD_VALUE = prompts.PAD_LABEL


def size_pairs(original_sizes) -> np.ndarray:
    """(height, width) pairs -> (B, 2) int64; one pair alone is a batch of one."""
    sizes = np.asarray(np.asarray(original_sizes).tolist(), np.float64)
    if sizes.ndim == 1:
        sizes = sizes[None]
    if sizes.ndim != 2 or sizes.shape[1] != 2 or len(sizes) == 0:
        raise ValueError(f"original_sizes must be (height, width) pairs, got shape {sizes.shape}")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0) or np.any(sizes != np.round(sizes)):
        raise ValueError(f"original_sizes must be positive integer (height, width) pairs, got {sizes.tolist()}")
    return sizes.astype(np.int64)


_FORMATS = {
    "input_points": "[image][object][point][x, y]",
    "input_labels": "[image][object][point]",
    "input_boxes": "[image][box][x1, y1, x2, y2]",
}


def _nested(data: Any, depth: int, name: str, coord_size: int | None) -> list | None:
    """Check the nesting depth of a prompt list (or array, tensor, or lists of them) and return nested lists.

    Errors name the offending entry by its index path, e.g. ``input_points[1][0][2]``."""
    if data is None:
        return None
    fmt = _FORMATS.get(name, f"{depth} levels")

    def walk(x, level, path):
        if hasattr(x, "tolist") and not isinstance(x, (list, tuple)):  # NumPy/JAX arrays, torch tensors, scalars
            x = np.asarray(x).tolist()
        if level == depth:
            if isinstance(x, (list, tuple)):
                raise ValueError(f"{name}{path}: nested one level too deep; {name} nests as {fmt}")
            if isinstance(x, (str, bytes)):
                raise ValueError(f"{name}{path}: {x!r} is not a number")
            try:
                v = float(x)
            except (TypeError, ValueError):
                raise ValueError(f"{name}{path}: {x!r} is not a number") from None
            if not math.isfinite(v):
                raise ValueError(f"{name}{path}: non-finite number {x!r}")
            return v
        if not isinstance(x, (list, tuple)):
            raise ValueError(
                f"{name}{path}: expected a list at nesting level {level + 1} of {depth}, got {x!r}; "
                f"{name} nests as {fmt}"
            )
        if level == depth - 1:
            if any(isinstance(v, (list, tuple)) or np.ndim(v) > 0 for v in x):
                raise ValueError(f"{name}{path}: nested one level too deep; {name} nests as {fmt}")
            if coord_size is not None and len(x) != coord_size:
                raise ValueError(f"{name}{path}: expected {coord_size} numbers, got {len(x)}; {name} nests as {fmt}")
        return [walk(v, level + 1, f"{path}[{i}]") for i, v in enumerate(x)]

    return walk(data, 0, "")


class Sam2Processor:
    """See the module docstring."""

    def __init__(
        self,
        image_size: int = 1024,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        point_pad_value: int = POINT_PAD_VALUE,
    ):
        self.image_size = image_size
        # transformers folds the 1/255 rescale into mean and std, in float32
        self.mean255 = np.asarray(image_mean, np.float32) * np.float32(255.0)
        self.std255 = np.asarray(image_std, np.float32) * np.float32(255.0)
        self.point_pad_value = point_pad_value

    # ---- images -------------------------------------------------------------------------------------------------
    def preprocess_image(self, image: Any, where: str = "images[0]") -> tuple[np.ndarray, tuple[int, int]]:
        """One image -> ((S, S, 3) float32 normalised pixels, (height, width))."""
        rgb = to_rgb_uint8(image, where)
        return (resize_square(rgb, self.image_size) - self.mean255) / self.std255, rgb.shape[:2]

    def __call__(self, images=None, input_points=None, input_labels=None, input_boxes=None, original_sizes=None):
        out: dict[str, np.ndarray] = {}
        if images is not None:
            batch = list(images) if isinstance(images, (list, tuple)) else [images]
            if not batch:
                raise ValueError("images is an empty list")
            pixels, sizes = zip(*(self.preprocess_image(im, f"images[{i}]") for i, im in enumerate(batch)), strict=True)
            out["pixel_values"] = np.stack(pixels)
            out["original_sizes"] = np.asarray(sizes, np.int64)
        elif original_sizes is not None:
            out["original_sizes"] = size_pairs(original_sizes)
        else:
            raise ValueError("Either images or original_sizes must be provided")
        out.update(self.process_prompts(out["original_sizes"], input_points, input_labels, input_boxes))
        return out

    # ---- prompts ------------------------------------------------------------------------------------------------
    def process_prompts(self, original_sizes, input_points=None, input_labels=None, input_boxes=None) -> dict:
        """Validate, pad (points and labels with -10) and rescale prompts to the model's input frame.

        Every prompt list must cover exactly one entry per image (``len(original_sizes)``). Coordinates are scaled
        in float32 (x * float32(S / W), y * float32(S / H)), bit for bit as transformers does
        (``prompts.to_model_frame``, the one scaling of every front end).
        """
        sizes = size_pairs(original_sizes)
        points = _nested(input_points, 4, "input_points", 2)
        labels = _nested(input_labels, 3, "input_labels", None)
        boxes = _nested(input_boxes, 3, "input_boxes", 4)
        out = {}
        n_images = len(sizes)
        for name, data in (("input_points", points), ("input_labels", labels), ("input_boxes", boxes)):
            if data is not None and len(data) != n_images:
                raise ValueError(
                    f"{name} has prompts for {len(data)} images but {n_images} images (original sizes) were given; "
                    "prompts nest per image first"
                )
        if points is not None and labels is not None:
            self._check_points_match_labels(points, labels)
        if points is not None:
            if not any(obj for img in points for obj in img):
                raise ValueError("input_points contains no point")
            for i, img in enumerate(points):
                for j, obj in enumerate(img):
                    prompts.check_points(np.reshape(obj, (-1, 2)), sizes[i], f"input_points[{i}][{j}]")
            n_obj = max(len(img) for img in points)
            n_pts = max(len(obj) for img in points for obj in img)
            arr = np.full((len(points), n_obj, n_pts, 2), float(self.point_pad_value), np.float32)
            for i, img in enumerate(points):
                for j, obj in enumerate(img):
                    if obj:
                        arr[i, j, : len(obj)] = prompts.to_model_frame(obj, sizes[i], self.image_size)
            out["input_points"] = arr
        if labels is not None:
            if not any(obj for img in labels for obj in img):
                raise ValueError("input_labels contains no label")
            n_obj = max(len(img) for img in labels)
            n_pts = max(len(obj) for img in labels for obj in img)
            arr = np.full((len(labels), n_obj, n_pts), self.point_pad_value, np.int64)
            for i, img in enumerate(labels):
                for j, obj in enumerate(img):
                    for k, v in enumerate(obj):
                        if v != int(v):
                            raise ValueError(f"input_labels[{i}][{j}][{k}]: label {v} is not an integer")
                    arr[i, j, : len(obj)] = np.asarray(obj, np.int64)
            out["input_labels"] = arr
        if boxes is not None:
            counts = [len(img) for img in boxes]
            if len(set(counts)) > 1:
                raise ValueError(
                    f"input_boxes: every image needs the same number of boxes (got {counts}); boxes cannot be padded"
                )
            if counts[0] == 0:
                raise ValueError("input_boxes contains no box")
            for i, img in enumerate(boxes):
                prompts.check_boxes(np.reshape(img, (-1, 4)), sizes[i], f"input_boxes[{i}]")
            if "input_points" in out and out["input_points"].shape[1] != counts[0]:
                raise ValueError(
                    f"input_points have {out['input_points'].shape[1]} objects per image (after padding) but "
                    f"input_boxes {counts[0]} boxes; points and boxes of one object share its index"
                )
            arr = np.asarray(boxes, np.float32).reshape(len(boxes), -1, 4)
            out["input_boxes"] = np.stack(
                [prompts.to_model_frame(b, sz, self.image_size) for b, sz in zip(arr, sizes, strict=True)]
            )
        return out

    @staticmethod
    def _check_points_match_labels(points, labels):
        if len(points) != len(labels):
            raise ValueError(f"input_points cover {len(points)} images but input_labels {len(labels)}")
        for i, (pi, li) in enumerate(zip(points, labels, strict=True)):
            if len(pi) != len(li):
                raise ValueError(f"input_points[{i}] has {len(pi)} objects but input_labels[{i}] has {len(li)}")
            for j, (po, lo) in enumerate(zip(pi, li, strict=True)):
                if len(po) != len(lo):
                    raise ValueError(
                        f"input_points[{i}][{j}] has {len(po)} points but input_labels[{i}][{j}] has {len(lo)} labels"
                    )

    # ---- masks --------------------------------------------------------------------------------------------------
    def post_process_masks(
        self,
        masks,
        original_sizes,
        mask_threshold: float = 0.0,
        binarize: bool = True,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        apply_non_overlapping_constraints: bool = False,
    ) -> list[np.ndarray]:
        """Low-res logits (B, P, M, h, w) (or a list of per-image (P, M, h, w)) -> per-image (P, M, H, W)."""
        sizes = size_pairs(original_sizes)
        if len(masks) != len(sizes):
            raise ValueError(f"{len(masks)} images of masks for {len(sizes)} original sizes")
        out = []
        for i, (m, (h, w)) in enumerate(zip(masks, sizes, strict=True)):
            m = np.asarray(m, np.float32)
            if m.ndim != 4:
                raise ValueError(f"masks[{i}] must be (objects, masks, height, width) logits, got shape {m.shape}")
            if max_hole_area > 0 or max_sprinkle_area > 0:
                m = fill_holes_and_remove_sprinkles(m, max_hole_area, max_sprinkle_area, mask_threshold)
            up = np.asarray(upsample_bilinear(m, (int(h), int(w))))
            if apply_non_overlapping_constraints:
                up = apply_non_overlapping(up)
            out.append(up > mask_threshold if binarize else up)
        return out
