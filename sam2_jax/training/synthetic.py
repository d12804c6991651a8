"""A synthetic instance-segmentation dataset of shapes, for tests, the notebook and the README (no download).

make_shapes_example(seed, index, size=(192, 256), max_objects=3) -> ShapesExample(name, image (H, W, 3)
      uint8, masks (K, H, W) bool, polygons [K flat [x1, y1, x2, y2, ...] in pixels], kinds [K str]):
      1..max_objects shapes (ellipse, rectangle, triangle, polygon; rotated, random colours, lightly shaded)
      that neither overlap nor touch, on a textured background (noise, stripes or a gradient). Each mask is
      its polygon rasterised at pixel centres (COCO's convention). Deterministic from (seed, index).
write_shapes_dataset(root, num_images, size=(192, 256), seed=0, layout="label", max_objects=3,
      image_format="jpg", coco=False) -> root (Path): the layout of ``SegmentationDataset.from_directory``:
      root/images/shape_0000.jpg ..., and with layout "label" root/masks/<name>.png (0 background, k = the
      k-th object), with "per_object" root/masks/<name>/<k>.png (0/255, k from 1), with None no masks;
      ``coco=True`` also writes root/annotations.json (``COCO_FILE``) for the same objects, annotation ids
      from 1 cycling through polygons, compressed RLE (string counts) and uncompressed RLE (list counts)
write_coco(root, num_images, ...) -> root/annotations.json: images and COCO annotations only
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..processing.rle import coco_encode_rle, mask_to_rle

COCO_FILE = "annotations.json"
KINDS = ("ellipse", "rectangle", "triangle", "polygon")
__all__ = ["COCO_FILE", "ShapesExample", "make_shapes_example", "write_coco", "write_shapes_dataset"]


@dataclass
class ShapesExample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (K, H, W) bool
    polygons: list[list[float]]
    kinds: list[str]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    style = rng.integers(3)
    theta = rng.uniform(0, np.pi)
    along = x * np.cos(theta) + y * np.sin(theta)
    if style == 0:  # blotchy noise: coarse noise upsampled, plus fine grain
        coarse = rng.uniform(0, 1, (h // 8 + 1, w // 8 + 1))
        t = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:h, :w]
    elif style == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along / rng.uniform(6, 24))
    else:  # gradient
        t = (along - along.min()) / max(np.ptp(along), 1e-6)
    image = c1 * (1 - t[..., None]) + c2 * t[..., None] + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255)


def _polygon(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    r = rng.uniform(0.12, 0.28) * min(h, w)
    cx, cy = rng.uniform(r, w - 1 - r), rng.uniform(r, h - 1 - r)
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(a), rng.uniform(0.5, 1.0) * np.sin(a)], -1)
    elif kind == "rectangle":
        sx, sy = 0.8, rng.uniform(0.4, 0.8)
        pts = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
    else:
        n = 3 if kind == "triangle" else int(rng.integers(5, 8))
        a = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == "polygon" else np.array([0, 2.1, 4.2]) + rng.uniform(0, 1)
        pts = np.stack([np.cos(a), np.sin(a)], -1) * rng.uniform(0.7, 1.0, (n, 1))
    c, s = np.cos(rot), np.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]]) * r + [cx, cy]
    return np.clip(pts, 0, [w, h])


def _rasterise(pts: np.ndarray, h: int, w: int) -> np.ndarray:
    """The pixels whose centres (x + 0.5, y + 0.5) lie inside the polygon (even-odd rule): COCO's convention,
    so pycocotools rasterises the written polygons to nearly the same masks."""
    (xa, ya), (xb, yb) = np.floor(pts.min(0)).astype(int), np.ceil(pts.max(0)).astype(int)
    xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb + 1, w), min(yb + 1, h)  # the bounding box only
    y, x = np.mgrid[ya:yb, xa:xb].astype(np.float64) + 0.5
    inside = np.zeros(y.shape, bool)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1.0)
        inside ^= crosses & (x < x_cross)
    out = np.zeros((h, w), bool)
    out[ya:yb, xa:xb] = inside
    return out


def _grow(m: np.ndarray) -> np.ndarray:
    g = m.copy()
    g[1:] |= m[:-1]
    g[:-1] |= m[1:]
    g[:, 1:] |= m[:, :-1]
    g[:, :-1] |= m[:, 1:]
    return g


def make_shapes_example(seed: int, index: int, size=(192, 256), max_objects: int = 3) -> ShapesExample:
    """See the module docstring."""
    h, w = size
    rng = np.random.default_rng([seed, index])
    image = _background(rng, h, w)
    target = int(rng.integers(1, max_objects + 1))
    occupied = np.zeros((h, w), bool)
    masks, polygons, kinds = [], [], []
    for _ in range(50 * target):
        if len(masks) == target:
            break
        kind = KINDS[rng.integers(len(KINDS))]
        pts = _polygon(rng, kind, h, w)
        m = _rasterise(pts, h, w)
        if m.sum() < 0.005 * h * w or (_grow(m) & occupied).any():
            continue
        occupied |= _grow(m)
        colour = rng.uniform(0, 255, 3)
        shade = colour + rng.normal(0, 6, (h, w, 3))
        image = np.where(m[..., None], shade, image)
        masks.append(m)
        polygons.append([round(float(v), 2) for v in pts.reshape(-1)])
        kinds.append(kind)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return ShapesExample(f"shape_{index:04d}", image, np.stack(masks), polygons, kinds)


def _coco(examples: list[ShapesExample], image_format: str) -> dict:
    images, annotations = [], []
    for i, ex in enumerate(examples):
        h, w = ex.masks.shape[1:]
        images.append({"id": i + 1, "file_name": f"{ex.name}.{image_format}", "height": h, "width": w})
        for m, poly, kind in zip(ex.masks, ex.polygons, ex.kinds, strict=True):
            ann_id = len(annotations) + 1
            rle = mask_to_rle(m[None])[0]
            segm = [poly] if ann_id % 3 == 1 else coco_encode_rle(rle) if ann_id % 3 == 2 else rle
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": KINDS.index(kind) + 1,
                    "segmentation": segm,
                    "area": int(m.sum()),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(KINDS)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_shapes_dataset(
    root: str | os.PathLike,
    num_images: int,
    size=(192, 256),
    seed: int = 0,
    layout: str | None = "label",
    max_objects: int = 3,
    image_format: str = "jpg",
    coco: bool = False,
) -> Path:
    """See the module docstring."""
    from PIL import Image

    if layout not in ("label", "per_object", None):
        raise ValueError(f"layout must be 'label', 'per_object' or None, got {layout!r}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    examples = []
    for i in range(num_images):
        ex = make_shapes_example(seed, i, size, max_objects)
        examples.append(ex)
        Image.fromarray(ex.image).save(root / "images" / f"{ex.name}.{image_format}", quality=95)
        if layout == "label":
            label = (np.arange(1, len(ex.masks) + 1)[:, None, None] * ex.masks).sum(0)
            (root / "masks").mkdir(exist_ok=True)
            mode_array = label.astype(np.uint8) if len(ex.masks) < 256 else label.astype(np.uint16)
            Image.fromarray(mode_array).save(root / "masks" / f"{ex.name}.png")
        elif layout == "per_object":
            folder = root / "masks" / ex.name
            folder.mkdir(parents=True, exist_ok=True)
            for k, m in enumerate(ex.masks, 1):
                Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{k}.png")
    if coco:
        (root / COCO_FILE).write_text(json.dumps(_coco(examples, image_format)))
    return root


def write_coco(root: str | os.PathLike, num_images: int, size=(192, 256), seed: int = 0, **kwargs) -> Path:
    """Images and root/annotations.json only (no masks folder); returns the JSON's path."""
    write_shapes_dataset(root, num_images, size, seed, layout=None, coco=True, **kwargs)
    return Path(root) / COCO_FILE
