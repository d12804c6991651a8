"""The same user-facing calls timed on this working tree and on an earlier git revision, in one run.

    python benchmarks/bench_revisions.py --base REV [--rounds 3] [--size tiny] [--image examples/truck.jpg]

For refactors that must not cost speed. ``REV`` is checked out into a temporary git worktree; each round runs
one subprocess per tree (base first, then this tree, alternating, so that slow phases of a noisy machine hit
both), each timing after a warm-up call: ``set_image`` (preprocessing + encoder), ``predict`` with one click
and with 64 boxes (full-size masks returned), the model's decoder on 64 one-point prompts from a precomputed
embedding, and automatic mask generation of the photo (32x32 points, batches of 64). Both trees get the same
randomised params (speed does not depend on their values, and equal results keep the work equal). Prints the
median over rounds of each case and the ratio base / this tree (> 1: this tree is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _child(args) -> None:
    """In the subprocess (``PYTHONPATH`` = the tree under test): time each case, print one JSON line."""
    import jax
    import numpy as np
    from PIL import Image

    import sam2_jax
    from sam2_jax import Sam2AutomaticMaskGenerator, Sam2ImagePredictor, get_config, init_params

    config = get_config(args.size)
    params = init_params(config, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda p: p + 0.02 * jax.random.normal(jax.random.PRNGKey(1), p.shape, p.dtype), params)
    model = sam2_jax.Sam2Model(config)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 1, (64, 2, 2)) * [w, h], axis=1).reshape(64, 4)

    predictor = Sam2ImagePredictor(model, params)

    def set_image():
        predictor.set_image(image)
        jax.block_until_ready(predictor.get_image_embedding())  # set_image returns before the encoder finishes

    out = {"set_image": _time(set_image, 3)}
    out["predict, one click"] = _time(lambda: predictor.predict(point_coords=[[w / 3, h / 2]], point_labels=[1]), 10)
    out["predict, 64 boxes"] = _time(lambda: predictor.predict(box=corners, multimask_output=False), 3)

    feats = jax.jit(lambda p, x: model.apply({"params": p}, x, method=sam2_jax.Sam2Model.get_image_embeddings))(
        params, np.zeros((1, 1024, 1024, 3), np.float32)
    )
    decode = jax.jit(lambda p, e, pts: model.apply({"params": p}, image_embeddings=e, input_points=pts).pred_masks)
    points = rng.uniform(0, 1024, (1, 64, 1, 2)).astype(np.float32)
    out["decoder, 64 points"] = _time(lambda: jax.block_until_ready(decode(params, feats, points)), 3)

    generator = Sam2AutomaticMaskGenerator(model, params, points_per_batch=64)
    out["mask generation"] = _time(lambda: generator.generate(image), 1)
    print(json.dumps(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", help="git revision to compare against (required)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--image", default=os.path.join(ROOT, "examples", "truck.jpg"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    if not args.base:
        parser.error("--base REV is required")

    with tempfile.TemporaryDirectory() as tmp:
        base_tree = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", base_tree, args.base], check=True)
        try:
            results = {"base": [], "this tree": []}
            for r in range(args.rounds):
                for name, tree in (("base", base_tree), ("this tree", ROOT)):
                    env = dict(os.environ, PYTHONPATH=tree)
                    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--size", args.size]
                    proc = subprocess.run(
                        cmd + ["--image", args.image], env=env, cwd=tree, capture_output=True, text=True, check=True
                    )
                    results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                    print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base_tree], check=False)

    print(f"\n{'case':24s} {'base s':>9s} {'this tree s':>12s} {'ratio':>7s}")
    for case in results["base"][0]:
        base = statistics.median(r[case] for r in results["base"])
        this = statistics.median(r[case] for r in results["this tree"])
        print(f"{case:24s} {base:9.4f} {this:12.4f} {base / this:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
