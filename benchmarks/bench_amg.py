"""Automatic mask generation of one real photograph: sam2-jax against transformers' ``mask-generation``
pipeline and the official ``SAM2AutomaticMaskGenerator``, with the same thresholds for all.

    python benchmarks/bench_amg.py [--size tiny] [--image examples/truck.jpg] [--points-per-side 32]
        [--points-per-batch 64] [--pred-iou-thresh 0.88] [--stability-score-thresh 0.95] [--repeats 3]
        [--skip-pipeline] [--skip-official]

Each contender runs in its own subprocess (so that peak host memory is its own) on randomised weights: the
transformers pipeline and sam2-jax share one randomised transformers checkpoint, the official generator and
sam2-jax share one randomised official ``.pt`` (sam2-jax runs once per checkpoint, since how many masks
survive the thresholds depends on the weights, and the post-processing cost with it). Prints medians over
repeats after a warm-up run (sam2-jax's warm-up includes compiling, reported apart), the number of masks,
peak RSS, and the ratio other / sam2-jax (> 1: sam2-jax is faster). ``--skip-pipeline`` / ``--skip-official``
leave a contender out; with both, sam2-jax runs alone on the official ``.pt`` (for before / after timings).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)


def _run_one(args) -> dict:
    """In the subprocess: time one contender and print a JSON line."""
    import numpy as np
    from common import peak_rss_mb
    from PIL import Image

    image = Image.open(args.image).convert("RGB")
    thresholds = dict(pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh)
    if args.only == "sam2-jax":
        from sam2_jax.frontends.image.automatic_mask_generator import Sam2AutomaticMaskGenerator

        gen = Sam2AutomaticMaskGenerator.from_pretrained(
            args.checkpoint, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch, **thresholds
        )
        array = np.asarray(image)

        def run():
            return len(gen.generate(array))
    elif args.only == "pipeline":
        import torch
        from transformers import Sam2ImageProcessor, Sam2Model, pipeline

        torch.set_num_threads(os.cpu_count() or 1)
        model = Sam2Model.from_pretrained(args.checkpoint).eval()
        pipe = pipeline("mask-generation", model=model, image_processor=Sam2ImageProcessor(), device="cpu")

        def run():
            out = pipe(
                image, points_per_batch=args.points_per_batch, points_per_crop=args.points_per_side, **thresholds
            )
            return len(out["masks"])
    else:
        import torch
        from reference import build_official_model
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        torch.set_num_threads(os.cpu_count() or 1)
        model = build_official_model(args.size, seed=0)
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True)["model"])
        gen = SAM2AutomaticMaskGenerator(
            model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch, **thresholds
        )
        array = np.asarray(image)

        def run():
            with torch.inference_mode():
                return len(gen.generate(array))

    t0 = time.perf_counter()
    n_masks = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times.sort()
    result = dict(median=times[len(times) // 2], first=first, masks=n_masks, rss=peak_rss_mb())
    print("RESULT " + json.dumps(result))
    return result


def _spawn(args, only: str, checkpoint: str) -> dict:
    cmd = [sys.executable, __file__, "--only", only, "--checkpoint", checkpoint]
    for key in ("size", "image", "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{only} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image", default=os.path.join(ROOT, "examples", "truck.jpg"))
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--only", choices=["sam2-jax", "pipeline", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        _run_one(args)
        return

    import torch
    from common import machine
    from reference import build_official_model, build_transformers_model

    from sam2_jax import get_config

    print(f"# {machine()}")
    print(
        f"# {args.size}, {os.path.basename(args.image)}, {args.points_per_side}x{args.points_per_side} points, "
        f"points_per_batch {args.points_per_batch}, pred_iou_thresh {args.pred_iou_thresh}, "
        f"stability_score_thresh {args.stability_score_thresh}, median of {args.repeats} after a warm-up run"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = os.path.join(tmp, "transformers")
        build_transformers_model(get_config(args.size), seed=0).save_pretrained(hf_dir)
        if not args.skip_pipeline:
            ours = _spawn(args, "sam2-jax", hf_dir)
            rows.append(("transformers pipeline", _spawn(args, "pipeline", hf_dir), ours))
        pt = os.path.join(tmp, "official.pt")
        if not args.skip_official or args.skip_pipeline:  # the official .pt serves both
            torch.save({"model": build_official_model(args.size, seed=5).state_dict()}, pt)
        if not args.skip_official:
            rows.append(("official generator", _spawn(args, "official", pt), _spawn(args, "sam2-jax", pt)))
        elif args.skip_pipeline:
            rows.append(("(none: sam2-jax alone)", None, _spawn(args, "sam2-jax", pt)))
    head = ("against", "other s", "sam2-jax s", "ratio", "masks", "peak MiB", "jax first s")
    print("{:22s} {:>9s} {:>11s} {:>6s} {:>11s} {:>15s} {:>12s}".format(*head))
    for name, other, mine in rows:
        if other is None:
            print(f"{name:22s} {'-':>9s} {mine['median']:11.2f} {'-':>6s} {'-':>5s}/{mine['masks']:<5d} ", end="")
            print(f"{'-':>7s}/{mine['rss']:<7.0f} {mine['first']:12.2f}")
            continue
        print(
            f"{name:22s} {other['median']:9.2f} {mine['median']:11.2f} {other['median'] / mine['median']:6.2f} "
            f"{other['masks']:5d}/{mine['masks']:<5d} {other['rss']:7.0f}/{mine['rss']:<7.0f} {mine['first']:12.2f}"
        )


if __name__ == "__main__":
    main()
