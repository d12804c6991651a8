"""What users of the image predictor wait for: sam2-jax ``Sam2ImagePredictor`` against the official
``SAM2ImagePredictor``, measured in the same run, on a large photograph.

    python benchmarks/bench_predictor.py [--size tiny] [--image examples/truck.jpg] [--height 1500 --width 2250]
        [--repeats 3] [--boxes 64] [--skip-host-path] [--dtype float32|bfloat16]

Both predictors carry the same randomised official weights (one ``.pt``; speed does not depend on their
values). The photo is resized to (height, width) (default 1500 x 2250, an H x W = 1500 x 2250 landscape) so
the full-size masks are large. Each predictor runs in its own process (so its peak RSS is its own) and is timed
on:

  set_image          embed the photo (PIL image in, as users call it)
  predict 1 click    one positive click, ``multimask_output=True``: 3 bool masks (3, H, W)
  predict N boxes    N boxes, ``multimask_output=False``: bool masks (N, 1, H, W)

medians over ``--repeats`` after a warm-up call (sam2-jax's first call, compiles included, printed apart).
``sam2-jax host path`` (unless ``--skip-host-path``) times the former post-processing for comparison: decode
with ``predict_batched``, then the processor's NumPy ``post_process_masks`` and the clamp of the low-res
logits. Prints the ratio official / sam2-jax (> 1: sam2-jax is faster) and each process's peak RSS.
``--dtype bfloat16``: the official predictor under ``torch.autocast("cpu", torch.bfloat16)`` (as its README
runs it on GPU), sam2-jax with ``dtype=jnp.bfloat16`` (bf16 params and activations, float32 accumulation where
the CPU has bf16 instructions: ``sam2_jax.modeling.mixed_precision``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("set_image", "predict 1 click", "predict boxes")


def _photo(args):
    from PIL import Image

    return Image.open(args.image).convert("RGB").resize((args.width, args.height), Image.BILINEAR)


def _prompts(args):
    rng = np.random.default_rng(0)
    h, w = args.height, args.width
    click = dict(point_coords=np.array([[w * 0.5, h * 0.4]]), point_labels=np.array([1]), multimask_output=True)
    xy = rng.uniform([0, 0], [w * 0.6, h * 0.6], (args.boxes, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, [w * 0.4, h * 0.4], (args.boxes, 2))], 1)
    return click, dict(box=boxes, multimask_output=False)


def _time(fn, repeats):
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), first


def _run_one(args) -> None:
    """In a child process: time one predictor, print ``RESULT {json}``."""
    from common import peak_rss_mb

    photo = _photo(args)
    click, boxes = _prompts(args)
    if args.only == "official":
        import torch
        from reference import build_official_model
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        torch.set_num_threads(os.cpu_count() or 1)
        model = build_official_model(args.size, seed=0)
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True)["model"])
        predictor = SAM2ImagePredictor(model)

        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

        def call(fn):
            def run():
                with torch.inference_mode(), autocast:
                    return fn()

            return run
    else:
        import jax.numpy as jnp

        from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor
        from sam2_jax.modeling.mixed_precision import cpu_bf16_mode

        predictor = Sam2ImagePredictor.from_pretrained(args.checkpoint, dtype=jnp.dtype(args.dtype))

        def call(fn):
            return fn

    if args.only == "sam2-jax-host":  # the former post-processing, for comparison
        from sam2_jax.processing.masks import LOW_RES_CLAMP

        def predict(point_coords=None, point_labels=None, box=None, multimask_output=True):
            low, scores = predictor.predict_batched(point_coords, point_labels, box, multimask_output=multimask_output)
            size = predictor.embedding.original_sizes[0]
            masks = predictor.processor.post_process_masks(low[None], [size], predictor.mask_threshold)[0]
            return masks, scores, np.clip(low, -LOW_RES_CLAMP, LOW_RES_CLAMP)
    else:
        predict = predictor.predict

    def set_image():
        predictor.set_image(photo)
        if args.only != "official":  # set_image dispatches asynchronously: wait for the embedding
            predictor.get_image_embedding().block_until_ready()

    result = {}
    result["set_image"] = _time(call(set_image), args.repeats)
    result["predict 1 click"] = _time(call(lambda: predict(**click)), 3 * args.repeats)
    result["predict boxes"] = _time(call(lambda: predict(**boxes)), args.repeats)
    masks = call(lambda: predict(**boxes))()[0]
    result["masks"] = [list(masks.shape), str(masks.dtype)]
    result["rss"] = peak_rss_mb()
    if args.only != "official":
        result["cpu_bf16"] = cpu_bf16_mode()
    print("RESULT " + json.dumps(result))


def _spawn(args, only: str, checkpoint: str) -> dict:
    cmd = [sys.executable, __file__, "--only", only, "--checkpoint", checkpoint]
    for key in ("size", "image", "height", "width", "repeats", "boxes", "dtype"):
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{only} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image", default=os.path.join(ROOT, "examples", "truck.jpg"))
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--width", type=int, default=2250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--boxes", type=int, default=64)
    parser.add_argument("--skip-host-path", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--only", choices=["sam2-jax", "sam2-jax-host", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        _run_one(args)
        return

    import torch
    from common import machine
    from reference import build_official_model

    print(f"# {machine()}")
    print(
        f"# {args.size}, {os.path.basename(args.image)} resized to {args.width}x{args.height} (W x H), "
        f"{args.boxes} boxes, {args.dtype}; medians of {args.repeats} (1 click: {3 * args.repeats}) after a "
        "warm-up call"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pt = os.path.join(tmp, f"sam2.1_hiera_{args.size}.pt")
        torch.save({"model": build_official_model(args.size, seed=0).state_dict()}, pt)
        runs = {"official": _spawn(args, "official", pt), "sam2-jax": _spawn(args, "sam2-jax", pt)}
        if not args.skip_host_path:
            runs["sam2-jax host path"] = _spawn(args, "sam2-jax-host", pt)
    ref = runs["official"]
    print(f"{'case':18s} {'predictor':20s} {'median s':>9s} {'first s':>8s} {'official/this':>14s}")
    for case in CASES:
        name = case.replace("boxes", f"{args.boxes} boxes")
        for who, res in runs.items():
            median, first = res[case]
            print(f"{name:18s} {who:20s} {median:9.4f} {first:8.2f} {ref[case][0] / median:14.2f}")
    for who, res in runs.items():
        bf16 = f", CPU bf16 products: {res['cpu_bf16']}" if "cpu_bf16" in res else ""
        print(f"# {who}: peak RSS {res['rss']:.0f} MiB, box masks {res['masks'][0]} {res['masks'][1]}{bf16}")


if __name__ == "__main__":
    main()
