"""``sam2-jax generate IMAGE --out DIR``: automatic mask generation over a point grid.

In: an image and the generator's grid and thresholds. Out: ``DIR/mask_NNNN.png`` (0/255, one per mask),
``DIR/masks.json`` (each mask's record without its segmentation: area, bbox, scores...) and ``DIR/overlay.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_write
from .common import add_model_argument, load_image, save_png


def register(sub) -> None:
    parser = sub.add_parser("generate", help="automatic mask generation over a point grid")
    parser.add_argument("image")
    parser.add_argument("--out", required=True, help="output directory (mask PNGs, masks.json, overlay.png)")
    add_model_argument(parser)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.8)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..frontends.image.automatic_mask_generator import Sam2AutomaticMaskGenerator
    from ..frontends.image.visualize import overlay

    image = load_image(args.image)
    generator = Sam2AutomaticMaskGenerator.from_pretrained(
        args.model,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
    )
    records = generator.generate(image, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, rec in enumerate(records):
        save_png(out / f"mask_{i:04d}.png", rec["segmentation"].astype(np.uint8) * 255)
    meta = [{k: v for k, v in rec.items() if k != "segmentation"} for rec in records]
    atomic_write(out / "masks.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    masks = np.array([r["segmentation"] for r in records]).reshape(-1, *image.shape[:2])
    save_png(out / "overlay.png", overlay(image, masks))
    print(f"{len(records)} masks written to {out}")
    return 0
