"""``sam2-jax segment IMAGE --point X,Y [--box X1,Y1,X2,Y2] --out mask.png [--overlay overlay.png]``.

In: an image, clicks (positive unless ``--label 0``) and/or a box, in image pixels. Out: the best-scored mask
as a 0/255 PNG, optionally drawn over the image, and one line with its size and predicted IoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import add_model_argument, floats, load_image, save_png


def register(sub) -> None:
    parser = sub.add_parser("segment", help="segment an image from clicks and/or a box")
    parser.add_argument("image")
    parser.add_argument("--point", action="append", type=floats(2, "--point"), help="X,Y (repeatable)")
    parser.add_argument("--label", action="append", type=int, choices=[0, 1], help="1 positive (default), 0 negative")
    parser.add_argument("--box", type=floats(4, "--box"), help="X1,Y1,X2,Y2")
    add_model_argument(parser)
    parser.add_argument("--out", required=True, help="output mask PNG")
    parser.add_argument("--overlay", help="also write the mask drawn over the image")
    parser.add_argument("--multimask", action="store_true", help="predict 3 masks and keep the best-scored one")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..frontends.image.image_predictor import Sam2ImagePredictor
    from ..frontends.image.visualize import overlay

    image = load_image(args.image)
    labels = args.label or [1] * len(args.point or [])
    if args.point and len(labels) != len(args.point):
        raise SystemExit(f"error: {len(labels)} --label values for {len(args.point)} --point values")
    if not args.point and args.box is None:
        raise SystemExit("error: give at least one --point X,Y or a --box X1,Y1,X2,Y2")
    predictor = Sam2ImagePredictor.from_pretrained(args.model)
    points = np.asarray(args.point, np.float32) if args.point else None
    prompt = dict(
        point_coords=points,
        point_labels=np.asarray(labels) if args.point else None,
        box=np.asarray(args.box, np.float32) if args.box is not None else None,
        multimask_output=args.multimask,
    )
    warm = predictor.warm_up(image.shape[:2], **prompt)  # the decoder compiles while the encoder runs
    predictor.set_image(image)
    warm.result()
    masks, scores, _ = predictor.predict(**prompt)
    order = np.argsort(-scores)
    best = masks[order[0]]
    out = Path(args.out)
    save_png(out, best.astype(np.uint8) * 255)
    print(f"mask: {out} ({int(best.sum())} pixels, predicted IoU {scores[order[0]]:.3f})")
    if args.overlay:
        pts = list(zip(args.point or [], labels, strict=True))
        save_png(args.overlay, overlay(image, best[None], points=pts, box=args.box))
        print(f"overlay: {args.overlay}")
    return 0
