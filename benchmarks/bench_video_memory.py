"""Host memory, disk and device memory of ``Sam2VideoPredictor`` against the number of frames tracked.

    python benchmarks/bench_video_memory.py [--frames 10000] [--size 256] [--objects 1] [--modes history,flat]

A randomised model of the official tiny architecture at ``--size`` px (``Sam2Config.at_image_size``: every module
as at 1024 px, the grids smaller), ``--objects`` objects clicked on frame 0 of a video of ``--frames`` frames (the
48 bundled bedroom frames, 960 x 540, in a loop, decoded lazily), one ``propagate_in_video`` over all of it, for
each mode:
  history   ``keep_history=True`` (the default): every tracked frame's output kept, the mask logits and memories
            in the state's history file
  flat      ``keep_history=False``: what the bank holds only
At frames 1, 10, 100, 1000, 2500, 5000, 10000 (those reached): the process's RSS, the history file's bytes, the
bytes of arrays the state holds in memory, and the device bytes (``memory_stats()`` where the device has them, else
the memory bank the predictor puts on the device, which is all the device state between frames besides one
frame's features). Prints one table; the per-frame cost is (value at the last row - value at frame 100) / frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

BEDROOM = ROOT / "tests" / "data" / "videos" / "bedroom"
MARKS = (1, 10, 100, 1000, 2500, 5000, 10000)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def state_bytes(state) -> int:
    return sum(
        rec.memory_nbytes()
        for track in state.objects
        for d in (track.cond, track.non_cond, track.temp_cond, track.temp_non_cond)
        for rec in d.values()
    )


def device_bytes(pred, state) -> int:
    import jax

    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_in_use" in stats:
        return int(stats["bytes_in_use"])
    bank = pred._bank(state, list(range(len(state.objects))), state.num_frames - 1, False)
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(bank))


def run(pred, objects: int, n: int):
    from PIL import Image

    from sam2_jax.processing.video.frames import VideoFrames

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(BEDROOM.glob("*.jpg"))]
    video = VideoFrames(num_frames=n, video_height=540, video_width=960, image_size=pred.image_size,
                        read=lambda i: images[i % len(images)])  # fmt: skip
    state = pred.init_state(video)
    for k in range(objects):
        pred.add_new_points_or_box(state, 0, k + 1, points=[[200 + 150 * k, 250]], labels=[1])
    rows = []
    start = time.perf_counter()
    for t, _, _ in pred.propagate_in_video(state):
        if t + 1 in MARKS or t + 1 == n:
            rows.append((t + 1, rss_bytes(), state.history.disk_bytes(), state_bytes(state),
                         device_bytes(pred, state), time.perf_counter() - start))  # fmt: skip
            print(f"  {rows[-1][0]} frames: RSS {rows[-1][1] / 2**20:.0f} MiB, file {rows[-1][2] / 2**20:.0f} MiB",
                  flush=True)  # fmt: skip
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--objects", type=int, default=1)
    ap.add_argument("--modes", default="history,flat")
    args = ap.parse_args()

    import sam2_jax
    from sam2_jax.frontends.video.predictor import Sam2VideoPredictor
    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel
    from tests.reference import random_params

    config = sam2_jax.get_config("facebook/sam2.1-hiera-tiny").at_image_size(args.size)
    params = random_params(config, seed=0, score_shift=2.0)
    print(f"tiny at {args.size} px, {args.objects} object(s), {args.frames} frames")
    table = {}
    for mode in args.modes.split(","):
        pred = Sam2VideoPredictor(Sam2VideoModel(config), params, keep_history=(mode == "history"))
        print(mode)
        table[mode] = run(pred, args.objects, args.frames)
    print()
    print("| mode | frames | RSS (MiB) | history file (MiB) | arrays in memory (KiB) | device (KiB) | s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, rows in table.items():
        for n, rss, disk, mem, dev, s in rows:
            print(f"| {mode} | {n} | {rss / 2**20:.0f} | {disk / 2**20:.1f} | {mem / 2**10:.0f} | {dev / 2**10:.0f} "
                  f"| {s:.0f} |")  # fmt: skip
    for mode, rows in table.items():
        base = next((r for r in rows if r[0] == 100), None)
        last = rows[-1]
        if base is not None and last[0] > base[0]:
            d = last[0] - base[0]
            per = [(last[i] - base[i]) / d / args.objects for i in (1, 2, 3)]
            print(f"{mode}: per object and frame, RSS {per[0] / 1024:+.1f} KiB, file {per[1] / 1024:+.1f} KiB, "
                  f"arrays in memory {per[2]:+.0f} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
