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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .components import fill_holes_and_remove_sprinkles

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POINT_PAD_VALUE = -10


def _to_rgb_uint8(image: Any, where: str) -> np.ndarray:
    """A PIL image or an (H, W), (H, W, 1|3|4) array (uint8, or float in [0, 1]) -> (H, W, 3) uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return _flatten_alpha(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: image values must be finite numbers")
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return _flatten_alpha(Image.fromarray(arr))


def _flatten_alpha(image) -> np.ndarray:
    """RGB as transformers' ``convert_to_rgb`` makes it for PIL images: images with an alpha band or a
    transparency key are composited over white with PIL's ``alpha_composite``. (H, W, 4) arrays take the same
    path, so an image gives the same pixels as a PIL image or as an array; transformers composites arrays in
    float32 and truncates back to uint8, one level below PIL on about a quarter of the pixels."""
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _sizes(original_sizes) -> np.ndarray:
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
        from PIL import Image

        rgb = _to_rgb_uint8(image, where)
        s = self.image_size
        # Two passes, horizontal first, each rounded to uint8, as torchvision's antialiased uint8 resize does. A
        # single Pillow call picks its own pass order (vertical first for some shapes), which puts about a quarter
        # of the pixels of a noisy image one level off torchvision's; this way it is well under 1%.
        wide = Image.fromarray(rgb).resize((s, rgb.shape[0]), Image.BILINEAR)
        resized = np.asarray(wide.resize((s, s), Image.BILINEAR), np.float32)
        return (resized - self.mean255) / self.std255, rgb.shape[:2]

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
            out["original_sizes"] = _sizes(original_sizes)
        else:
            raise ValueError("Either images or original_sizes must be provided")
        out.update(self.process_prompts(out["original_sizes"], input_points, input_labels, input_boxes))
        return out

    # ---- prompts ------------------------------------------------------------------------------------------------
    def process_prompts(self, original_sizes, input_points=None, input_labels=None, input_boxes=None) -> dict:
        """Validate, pad (points and labels with -10) and rescale prompts to the model's input frame.

        Every prompt list must cover exactly one entry per image (``len(original_sizes)``). Coordinates are scaled
        in float32 (x * float32(S / W), y * float32(S / H)), bit for bit as transformers does.
        """
        sizes = _sizes(original_sizes)
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
                h, w = sizes[i]
                for j, obj in enumerate(img):
                    for k, (x, y) in enumerate(obj):
                        if not (0 <= x <= w and 0 <= y <= h):
                            raise ValueError(
                                f"input_points[{i}][{j}][{k}]: point ({x}, {y}) lies outside the {w}x{h} image"
                            )
            n_obj = max(len(img) for img in points)
            n_pts = max(len(obj) for img in points for obj in img)
            arr = np.full((len(points), n_obj, n_pts, 2), float(self.point_pad_value), np.float32)
            for i, img in enumerate(points):
                scale = self._scale(sizes[i])
                for j, obj in enumerate(img):
                    if obj:
                        arr[i, j, : len(obj)] = np.asarray(obj, np.float32) * scale
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
                h, w = sizes[i]
                for j, (x1, y1, x2, y2) in enumerate(img):
                    box = f"input_boxes[{i}][{j}]: box ({x1}, {y1}, {x2}, {y2})"
                    if x2 < x1:
                        raise ValueError(f"{box} has x2 < x1; boxes are [x1, y1, x2, y2]")
                    if y2 < y1:
                        raise ValueError(f"{box} has y2 < y1; boxes are [x1, y1, x2, y2]")
                    if min(x1, y1) < 0 or x2 > w or y2 > h:
                        raise ValueError(f"{box} lies outside the {w}x{h} image")
            if "input_points" in out and out["input_points"].shape[1] != counts[0]:
                raise ValueError(
                    f"input_points have {out['input_points'].shape[1]} objects per image (after padding) but "
                    f"input_boxes {counts[0]} boxes; points and boxes of one object share its index"
                )
            arr = np.asarray(boxes, np.float32).reshape(len(boxes), -1, 4)
            scales = np.stack([np.tile(self._scale(sizes[i]), 2) for i in range(len(boxes))])
            out["input_boxes"] = arr * scales[:, None, :]
        return out

    def _scale(self, size) -> np.ndarray:
        """(x, y) factors to the model frame, float32 like the python-float scalars torch multiplies float32 by."""
        h, w = int(size[0]), int(size[1])
        return np.array([self.image_size / w, self.image_size / h], np.float32)

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
        sizes = _sizes(original_sizes)
        if len(masks) != len(sizes):
            raise ValueError(f"{len(masks)} images of masks for {len(sizes)} original sizes")
        out = []
        for i, (m, (h, w)) in enumerate(zip(masks, sizes, strict=True)):
            m = np.asarray(m, np.float32)
            if m.ndim != 4:
                raise ValueError(f"masks[{i}] must be (objects, masks, height, width) logits, got shape {m.shape}")
            if max_hole_area > 0 or max_sprinkle_area > 0:
                m = fill_holes_and_remove_sprinkles(m, max_hole_area, max_sprinkle_area, mask_threshold)
            up = upsample_bilinear(m, (int(h), int(w)))
            if apply_non_overlapping_constraints:
                up = apply_non_overlapping(up)
            out.append(up > mask_threshold if binarize else up)
        return out


def _axis_taps(n_in: int, n_out: int):
    """Source indices and weights of one axis, with torch's float32 arithmetic (CPU ``upsample_bilinear2d``):
    scale = float32(n_in) / n_out; src = scale * (i + 0.5) - 0.5 rounded once to float32 (a fused multiply-add),
    clamped at 0; i0 = trunc(src); w1 = src - i0. Computing src in float64 instead is more exact, but moves the
    weights by up to ~1e-5 at 1000+ px and the logits by up to ~4e-4, enough to flip a few thresholded pixels."""
    scale = float(np.float32(n_in) / np.float32(n_out))
    src = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)  # exact in f64, one rounding
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return i0, i1, np.float32(1.0) - w1, w1


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) -> (..., H, W) bilinear with ``align_corners=False`` (torch's ``F.interpolate``), float32."""
    x = np.asarray(x, np.float32)
    r0, r1, rw0, rw1 = _axis_taps(x.shape[-2], size[0])
    c0, c1, cw0, cw1 = _axis_taps(x.shape[-1], size[1])
    # width first, then height, as torch's kernel nests them; in place, the same roundings as a * w0 + b * w1
    cols = np.take(x, c0, axis=-1)
    cols *= cw0
    tmp = np.take(x, c1, axis=-1)
    tmp *= cw1
    cols += tmp
    out = np.take(cols, r0, axis=-2)
    out *= rw0[:, None]
    tmp = np.take(cols, r1, axis=-2)
    tmp *= rw1[:, None]
    out += tmp
    return out


def apply_non_overlapping(masks: np.ndarray) -> np.ndarray:
    """transformers' ``_apply_non_overlapping_constraints`` on (P, M, H, W): keep, per pixel and mask slot, only
    the object with the highest logit; the others are clamped to at most -10."""
    if masks.shape[0] == 1:
        return masks
    keep = np.argmax(masks, axis=0)[None] == np.arange(masks.shape[0])[:, None, None, None]
    return np.where(keep, masks, np.minimum(masks, -10.0))
