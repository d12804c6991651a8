"""Live (streaming) video tracking: sam2-jax's ``Sam2VideoSessionModel`` against transformers' ``Sam2VideoModel``
streaming mode, the same randomised weights, measured in one run.

    python benchmarks/bench_video_live.py [--image-size 1024] [--frames 24] [--objects 1 4] [--skip 8]
    python benchmarks/bench_video_live.py --image-size 256 --frames 12 --skip 4      # quick check

What is timed is what a live application calls for each arriving frame, as transformers' docs stream: the
processor on the raw (540, 960, 3) uint8 frame, the model call with ``frame=`` (the first frame with the clicks,
added with ``original_size``), and ``post_process_masks`` to masks at the frame's resolution. Latency per frame is
the wall time of those three; the median (and 90th percentile) is over the frames after ``--skip`` (once the memory
bank is full: ``num_maskmem`` = 7), frames per second = 1 / median. Each contender runs in its own phase, the
objects one click each on frame 0 at distinct points of a grid. Frames: the bedroom frames of ``tests/data``,
repeated cyclically. The model is the official tiny architecture at ``--image-size`` (``official_config_at``),
randomised by ``tests/reference.py`` in transformers and loaded by ours from its ``save_pretrained`` directory.
Ratios: transformers' latency / ours (> 1: ours is faster). Peak RSS of the process is printed after each phase.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

from bench_video import click_points, hwm_mb, log  # noqa: E402
from common import machine  # noqa: E402

BEDROOM = os.path.join(ROOT, "tests", "data", "videos", "bedroom")


def load_frames(n: int):
    import numpy as np
    from PIL import Image

    names = sorted(f for f in os.listdir(BEDROOM) if f.endswith(".jpg"))
    base = [np.asarray(Image.open(os.path.join(BEDROOM, f)).convert("RGB")) for f in names[: min(n, len(names))]]
    return [base[i % len(base)] for i in range(n)]


def stream(process, prompt, call, post, frames, n_objects) -> list[float]:
    """Per-frame latencies of a streamed video: process -> (prompt on frame 0) -> call -> post."""
    h, w = frames[0].shape[:2]
    points = click_points(n_objects, w, h)
    times = []
    for t, frame in enumerate(frames):
        t0 = time.perf_counter()
        inputs = process(frame)
        if t == 0:
            prompt(inputs, points)
        out = call(inputs)
        masks = post(out, inputs)
        assert masks.shape[0] == n_objects and tuple(masks.shape[-2:]) == (h, w), masks.shape
        times.append(time.perf_counter() - t0)
    return times


def ours(model_dir, size, frames, n_objects):
    import numpy as np

    from sam2_jax import Sam2VideoProcessor, Sam2VideoSessionModel

    model = Sam2VideoSessionModel.from_pretrained(model_dir)
    proc = Sam2VideoProcessor(image_size=size)
    session = proc.init_video_session()

    def prompt(inputs, points):
        ids = list(range(1, len(points) + 1))
        proc.add_inputs_to_inference_session(session, 0, ids, input_points=[[[list(p)] for p in points]],
                                             input_labels=[[[1] for _ in points]],
                                             original_size=inputs["original_sizes"][0])  # fmt: skip

    return stream(
        lambda f: proc(images=f),
        prompt,
        lambda inputs: model(session, frame=inputs["pixel_values"][0]),
        lambda out, inputs: np.asarray(proc.post_process_masks([out.pred_masks], inputs["original_sizes"])[0]),
        frames,
        n_objects,
    )


def transformers_side(tm, size, frames, n_objects):
    import torch
    import transformers

    square = {"height": size, "width": size}
    proc = transformers.Sam2VideoProcessor(
        image_processor=transformers.Sam2ImageProcessor(size=square),
        video_processor=transformers.Sam2VideoVideoProcessor(size=square),
    )
    session = proc.init_video_session(inference_device="cpu")

    def prompt(inputs, points):
        ids = list(range(1, len(points) + 1))
        proc.add_inputs_to_inference_session(session, 0, ids, input_points=[[[list(p)] for p in points]],
                                             input_labels=[[[1] for _ in points]],
                                             original_size=inputs.original_sizes[0])  # fmt: skip

    with torch.inference_mode():
        return stream(
            lambda f: proc(images=f, return_tensors="pt"),
            prompt,
            lambda inputs: tm(inference_session=session, frame=inputs.pixel_values[0]),
            lambda out, inputs: proc.post_process_masks([out.pred_masks], inputs.original_sizes)[0],
            frames,
            n_objects,
        )


def summary(times, skip) -> tuple[float, float]:
    rest = sorted(times[skip:])
    return statistics.median(rest), rest[min(len(rest) - 1, int(0.9 * len(rest)))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--skip", type=int, default=8, help="frames left out of the statistics (warm-up, bank)")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args(argv)
    if args.frames <= args.skip:
        parser.error("--frames must exceed --skip")

    from reference import build_transformers_model, official_config_at

    log(machine())
    config = official_config_at(args.image_size)
    tm = build_transformers_model(config, seed=0, video=True)
    model_dir = os.path.join(tempfile.mkdtemp(), "model")
    tm.save_pretrained(model_dir)
    frames = load_frames(args.frames)
    log(f"tiny architecture at {args.image_size} px, {args.frames} streamed 960x540 frames, medians after {args.skip}")
    results = {}
    for n in args.objects:
        o = summary(ours(model_dir, args.image_size, frames, n), args.skip)
        log(f"sam2-jax      {n} objects: {o[0] * 1000:8.1f} ms/frame (p90 {o[1] * 1000:.1f}), {1 / o[0]:.2f} "
            f"frames/s; peak RSS {hwm_mb():.0f} MiB")  # fmt: skip
        results[n] = o
    if not args.skip_transformers:
        for n in args.objects:
            t = summary(transformers_side(tm, args.image_size, frames, n), args.skip)
            ratio = t[0] / results[n][0]
            log(f"transformers {n} objects: {t[0] * 1000:8.1f} ms/frame (p90 {t[1] * 1000:.1f}), {1 / t[0]:.2f} "
                f"frames/s; peak RSS {hwm_mb():.0f} MiB; ratio transformers / ours {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
