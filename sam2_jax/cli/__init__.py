"""The ``sam2-jax`` command: segment an image from clicks or boxes, or generate every mask automatically.

    sam2-jax segment IMAGE --point X,Y [--point X,Y --label 0 ...] [--box X1,Y1,X2,Y2] \
        [--model MODEL_OR_DIR] --out mask.png [--overlay overlay.png] [--multimask]
    sam2-jax generate IMAGE --out DIR [--model MODEL_OR_DIR] [--points-per-side 32] [--points-per-batch 64]

``--model`` is anything ``sam2_jax.load`` accepts: a Hub id (default ``facebook/sam2.1-hiera-tiny``), a
converted directory, a transformers directory or an original ``.pt``. Coordinates are in image pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..frontends.visualize import overlay

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _load_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read image {path}: {e}") from None


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write atomically: a temporary sibling renamed into place."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


def cmd_segment(args) -> int:
    from ..frontends.image_predictor import Sam2ImagePredictor

    image = _load_image(args.image)
    labels = args.label or [1] * len(args.point or [])
    if args.point and len(labels) != len(args.point):
        raise SystemExit(f"error: {len(labels)} --label values for {len(args.point)} --point values")
    if not args.point and args.box is None:
        raise SystemExit("error: give at least one --point X,Y or a --box X1,Y1,X2,Y2")
    predictor = Sam2ImagePredictor.from_pretrained(args.model)
    predictor.set_image(image)
    points = np.asarray(args.point, np.float32) if args.point else None
    masks, scores, _ = predictor.predict(
        point_coords=points,
        point_labels=np.asarray(labels) if args.point else None,
        box=np.asarray(args.box, np.float32) if args.box is not None else None,
        multimask_output=args.multimask,
    )
    order = np.argsort(-scores)
    best = masks[order[0]]
    out = Path(args.out)
    _save_png(out, best.astype(np.uint8) * 255)
    print(f"mask: {out} ({int(best.sum())} pixels, predicted IoU {scores[order[0]]:.3f})")
    if args.overlay:
        pts = list(zip(args.point or [], labels, strict=True))
        _save_png(Path(args.overlay), overlay(image, best[None], points=pts, box=args.box))
        print(f"overlay: {args.overlay}")
    return 0


def cmd_generate(args) -> int:
    from ..frontends.automatic_mask_generator import Sam2AutomaticMaskGenerator

    image = _load_image(args.image)
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
        _save_png(out / f"mask_{i:04d}.png", rec["segmentation"].astype(np.uint8) * 255)
    meta = [{k: v for k, v in rec.items() if k != "segmentation"} for rec in records]
    tmp = out / ".masks.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / "masks.json")
    _save_png(
        out / "overlay.png",
        overlay(image, np.array([r["segmentation"] for r in records]).reshape(-1, *image.shape[:2])),
    )
    print(f"{len(records)} masks written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam2-jax", description="SAM 2 segmentation in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment an image from clicks and/or a box")
    seg.add_argument("image")
    seg.add_argument("--point", action="append", type=lambda t: _floats(t, 2, "--point"), help="X,Y (repeatable)")
    seg.add_argument("--label", action="append", type=int, choices=[0, 1], help="1 positive (default), 0 negative")
    seg.add_argument("--box", type=lambda t: _floats(t, 4, "--box"), help="X1,Y1,X2,Y2")
    seg.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint or Hub id (default {DEFAULT_MODEL})")
    seg.add_argument("--out", required=True, help="output mask PNG")
    seg.add_argument("--overlay", help="also write the mask drawn over the image")
    seg.add_argument("--multimask", action="store_true", help="predict 3 masks and keep the best-scored one")
    seg.set_defaults(func=cmd_segment)

    gen = sub.add_parser("generate", help="automatic mask generation over a point grid")
    gen.add_argument("image")
    gen.add_argument("--out", required=True, help="output directory (mask PNGs, masks.json, overlay.png)")
    gen.add_argument("--model", default=DEFAULT_MODEL)
    gen.add_argument("--points-per-side", type=int, default=32)
    gen.add_argument("--points-per-batch", type=int, default=64)
    gen.add_argument("--pred-iou-thresh", type=float, default=0.8)
    gen.add_argument("--stability-score-thresh", type=float, default=0.95)
    gen.set_defaults(func=cmd_generate)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
