"""Outputs of ``segment_stream``: one PNG or COCO-RLE JSON file per image, written atomically.

write_result(path, fmt, name, size (H, W), low_res (P', M, h, w), iou (P', M), object_scores (P', 1),
             n_objects P, threshold)  keeps the best of the M masks per object (highest IoU), upsamples it
             to (H, W), thresholds it and writes ``path`` (``fmt`` "png" or "rle")
read_png_scores(path) -> {"scores": [P floats], "object_scores": [P floats]} from a PNG output
remove_partials(out_dir)  deletes the temporary files a killed run left
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ....processing.masks import upsample_bilinear
from ....processing.rle import mask_to_rle
from ....utils.atomic import atomic_write, is_partial

FORMATS = {"png": ".png", "rle": ".json"}
PNG_TEXT_KEY = "sam2"


def read_png_scores(path: str | os.PathLike) -> dict[str, Any]:
    """The scores ``segment_stream`` stored in a PNG output: ``{"scores": [...], "object_scores": [...]}``."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.text[PNG_TEXT_KEY])


def remove_partials(out_dir: Path) -> None:
    """Delete the leftovers of ``atomic_write`` from a killed run (one run per ``out_dir`` at a time)."""
    for stale in out_dir.iterdir():
        if is_partial(stale):
            stale.unlink(missing_ok=True)


def write_result(
    path: Path, fmt: str, name: str, size: tuple[int, int], low_res, iou, obj_score, n_objects: int, threshold: float
) -> None:
    """Upsample the kept mask of every object to the image size, threshold, and write the output atomically."""
    p = n_objects
    best = np.argmax(iou[:p], axis=-1)  # (P,): the mask kept per object (the only one without multimask)
    rows = np.arange(p)
    logits = np.asarray(upsample_bilinear(np.asarray(low_res[rows, best], np.float32), size))  # (P, H, W)
    masks = logits > threshold
    scores = [float(v) for v in iou[rows, best]]
    obj_scores = [float(v) for v in obj_score[:p, 0]]
    if fmt == "rle":
        h, w = size
        doc = {
            "name": name,
            "height": h,
            "width": w,
            "objects": [
                {"segmentation": r, "score": s, "object_score": o}
                for r, s, o in zip(mask_to_rle(masks), scores, obj_scores, strict=True)
            ],
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        atomic_write(path, lambda f: f.write(data))
        return
    from PIL import Image, PngImagePlugin

    if p == 1:
        image = Image.fromarray(masks[0].astype(np.uint8) * 255, mode="L")
    else:
        winner = np.argmax(np.where(masks, logits, -np.inf), axis=0)
        label = np.where(masks.any(axis=0), winner + 1, 0)
        if p <= 255:
            image = Image.fromarray(label.astype(np.uint8), mode="L")
        else:
            image = Image.fromarray(label.astype(np.uint16))
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_TEXT_KEY, json.dumps({"scores": scores, "object_scores": obj_scores}))
    atomic_write(path, lambda f: image.save(f, format="PNG", pnginfo=info))
