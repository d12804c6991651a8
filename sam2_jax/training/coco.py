"""COCO instance annotations for ``SegmentationDataset.from_coco``, decoded with ``pycocotools.mask``.

  load_coco(annotation_file, images_dir, include_crowd=False) -> (records, skipped)
        records: one ``CocoMasks`` per image that keeps at least one object, in ascending image id order, as
        (name = the image's ``file_name``, image path, (H, W), masks source); skipped: (file, reason) pairs
  CocoMasks(segmentations, (H, W), where).load(select=None) -> ((K, H, W) bool, []): one mask per annotation,
        in file order; ``select(K) -> indices`` decodes only those

Segmentations may be polygons (lists of [x1, y1, x2, y2, ...]), uncompressed RLE (``counts`` a list) or COCO's
compressed RLE (``counts`` a string); polygons are rasterised by pycocotools (``frPyObjects`` + ``merge``), as
``COCO.annToMask`` does; RLEs decode with ``processing.rle.rle_to_mask``. Checked at construction, from the JSON and
the image headers only: a missing or unreadable file, an annotation whose ``image_id`` is not an image of the file,
a duplicate image id, an image whose size on disk differs from its ``width``/``height`` entry, an RLE whose ``size``
differs from its image: ``ValueError`` naming the file (and the annotation id). Counted skips: crowd annotations
(``iscrowd=1``: one RLE covering several instances, no single object to prompt; ``include_crowd=True`` keeps them as
objects), annotations with an empty mask (zero area after rasterisation, or polygons with fewer than 3 points), and
images left with no object (the usual COCO images without annotations).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..processing.rle import rle_to_mask
from .image_headers import header_size

__all__ = ["CocoMasks", "load_coco"]


def _mask_api():
    try:
        from pycocotools import mask
    except ImportError as e:  # pragma: no cover - pycocotools is in the train and dev extras
        raise ImportError("COCO annotations need pycocotools: pip install 'sam2-jax[train]'") from e
    return mask


def _to_rle(segm: Any, h: int, w: int, where: str):
    """One annotation's segmentation -> a compressed pycocotools RLE, or None when it has no polygon left."""
    mask = _mask_api()
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return None
        return mask.merge(mask.frPyObjects([[float(v) for v in p] for p in polys], h, w))
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise ValueError(f"{where}: segmentation is neither polygons nor an RLE dict")
    if [int(v) for v in segm["size"]] != [h, w]:
        raise ValueError(f"{where}: RLE size {list(segm['size'])} differs from its image's (height, width) {[h, w]}")
    if isinstance(segm["counts"], list):
        return mask.frPyObjects(segm, h, w)
    counts = segm["counts"]
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


class CocoMasks:
    """The annotations of one image, decoded on demand."""

    def __init__(self, segmentations: list, size: tuple[int, int], where: str):
        self.segmentations, self.size, self.where = segmentations, size, where

    def load(self, select=None) -> tuple[np.ndarray, list[tuple[str, str]]]:
        h, w = self.size
        segms = (
            self.segmentations if select is None else [self.segmentations[j] for j in select(len(self.segmentations))]
        )
        rles = [_to_rle(s, h, w, self.where) for s in segms]
        masks = [rle_to_mask(r) for r in rles if r is not None]  # pycocotools' decode warns under NumPy 2
        return (np.stack(masks) if masks else np.zeros((0, h, w), bool)), []


def load_coco(annotation_file: str | os.PathLike, images_dir: str | os.PathLike, include_crowd: bool = False):
    """See the module docstring."""
    annotation_file, images_dir = Path(annotation_file), Path(images_dir)
    try:
        data = json.loads(annotation_file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{annotation_file}: cannot read COCO annotations: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{annotation_file}: not a COCO annotation file (no 'images' list)")
    if not data["images"]:
        raise ValueError(f"{annotation_file}: no images")
    images: dict[int, dict] = {}
    for im in data["images"]:
        if im["id"] in images:
            raise ValueError(f"{annotation_file}: duplicate image id {im['id']}")
        images[im["id"]] = im
    for image_id, im in images.items():
        path = images_dir / im["file_name"]
        if not path.is_file():
            raise ValueError(f"{path}: image {image_id} of {annotation_file} is missing")
        size = (int(im["height"]), int(im["width"]))
        if header_size(path) != size:
            raise ValueError(
                f"{path}: (height, width) {header_size(path)} differs from {size} in {annotation_file} "
                f"(image {image_id}), the size of its masks"
            )
    per_image: dict[int, list] = {i: [] for i in images}
    skipped: list[tuple[str, str]] = []
    mask = _mask_api()
    for ann in data.get("annotations", []):
        where = f"{annotation_file}: annotation {ann.get('id')}"
        if ann.get("image_id") not in images:
            raise ValueError(f"{where} refers to unknown image id {ann.get('image_id')!r}")
        im = images[ann["image_id"]]
        if ann.get("iscrowd", 0) and not include_crowd:
            skipped.append((where, "crowd annotation"))
            continue
        rle = _to_rle(ann.get("segmentation"), int(im["height"]), int(im["width"]), where)
        if rle is None or int(mask.area(rle)) == 0:
            skipped.append((where, "empty mask"))
            continue
        per_image[ann["image_id"]].append(ann["segmentation"])
    records = []
    for image_id in sorted(images):
        im = images[image_id]
        path, size = images_dir / im["file_name"], (int(im["height"]), int(im["width"]))
        if not per_image[image_id]:
            skipped.append((str(path), "no objects"))
            continue
        records.append((im["file_name"], path, size, CocoMasks(per_image[image_id], size, f"{annotation_file}")))
    return records, skipped
