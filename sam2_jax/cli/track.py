"""``sam2-jax track VIDEO --point FRAME:X,Y[:OBJ] ... --out DIR``: track objects through a video, resumably.

In: VIDEO, a video file (mp4, webm, avi... read through PyAV: ``pip install 'sam2-jax[video]'``) or a directory of
``<int>.jpg`` frames; prompts, each on one frame for one object (OBJ, default 1, an integer 1..65535), in the
video's pixels: ``--point FRAME:X,Y[:OBJ]`` (positive click), ``--negative FRAME:X,Y[:OBJ]``, ``--box
FRAME:X1,Y1,X2,Y2[:OBJ]``; ``--frames START:END`` tracks only frames START..END-1.
Out, in DIR: ``<frame>.png`` for every frame, the frame index zero-padded to 5 digits: a label image, 0 background,
else the id of the object whose mask logit is highest there (among those > 0; ties to the object prompted first),
8-bit, or 16-bit when an id is above 255; ``--palette``: DAVIS / YouTube-VOS palette PNGs (the same values, ids up
to 255, drawn in the DAVIS colours: ``processing.palette``). With ``--overlay``: ``overlay/<frame>.jpg``, the
masks drawn over the frames, and ``preview.gif`` (or ``.webp``, ``--preview``), an animation of them at the
video's frame rate.

Tracking starts at the earliest prompted frame and goes forward to the end, then backward from it to the first
frame, in chunks of ``--checkpoint-every`` frames (``Sam2VideoPredictor`` with ``keep_history=False``). After each
chunk the tracker's state is saved atomically to ``DIR/track_state.npz`` with a manifest of the job (video,
prompts, frames, model, outputs); a rerun of the same job continues after the last saved chunk and writes the
same files an uninterrupted run writes, bit for bit (the chunks are the same, and a chunk continues exactly from
the saved state). A rerun with different arguments is refused unless ``--restart``. Every file is written
atomically; bad input is reported in one line before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .common import add_model_argument, floats

STATE_FILE = "track_state.npz"


def prompt_type(n: int, what: str):
    """An argparse type for ``FRAME:numbers[:OBJ]`` -> (frame, [n floats], obj)."""
    numbers = floats(n, what)

    def parse(text: str):
        parts = text.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            frame, obj = int(parts[0]), int(parts[2]) if len(parts) == 3 else 1
            values = numbers(parts[1])
        except (ValueError, argparse.ArgumentTypeError):
            shape = ",".join(["X", "Y"] if n == 2 else ["X1", "Y1", "X2", "Y2"])
            raise argparse.ArgumentTypeError(f"{what} must be FRAME:{shape}[:OBJ], got {text!r}") from None
        if frame < 0 or not 1 <= obj <= 65535:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: FRAME must be >= 0 and OBJ in 1..65535")
        return frame, values, obj

    return parse


def frames_type(text: str):
    try:
        start, end = (int(v) if v else None for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--frames must be START:END (END excluded), got {text!r}") from None
    return start, end


def register(sub) -> None:
    parser = sub.add_parser("track", help="track objects through a video from clicks and boxes")
    parser.add_argument("video", help="a video file or a directory of <int>.jpg frames")
    for flag, n, what in (("--point", 2, "positive click"), ("--negative", 2, "negative click"), ("--box", 4, "box")):
        shape = "X,Y" if n == 2 else "X1,Y1,X2,Y2"
        parser.add_argument(
            flag,
            action="append",
            default=[],
            type=prompt_type(n, flag),
            metavar=f"FRAME:{shape}[:OBJ]",
            help=f"a {what} for object OBJ (default 1); repeatable",
        )
    parser.add_argument("--out", required=True, help="output directory (label PNGs, overlays, state)")
    add_model_argument(parser)
    parser.add_argument("--overlay", action="store_true", help="also write overlays and an animated preview")
    parser.add_argument("--palette", action="store_true", help="DAVIS / YouTube-VOS palette PNGs (ids up to 255)")
    parser.add_argument("--preview", choices=["gif", "webp"], default="gif", help="preview format (default gif)")
    parser.add_argument("--frames", type=frames_type, metavar="START:END", help="track frames START..END-1 only")
    parser.add_argument("--checkpoint-every", type=int, default=16, metavar="N", help="save the state every N frames")
    parser.add_argument("--restart", action="store_true", help="discard a saved state of a different job in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _prompts(args, num_frames: int, start: int, end: int, width: int, height: int) -> dict:
    """(frame, obj) -> {"points": [[x, y]...], "labels": [...], "box": [..] or None}, checked against the video."""
    prompts: dict = {}
    given = [("--point", p, 1) for p in args.point] + [("--negative", p, 0) for p in args.negative]
    given += [("--box", p, None) for p in args.box]
    if not any(label != 0 for _, _, label in given):
        raise ValueError("give at least one --point FRAME:X,Y or --box FRAME:X1,Y1,X2,Y2")
    for flag, (frame, values, obj), label in given:
        text = f"{flag} {frame}:{','.join(f'{v:g}' for v in values)}:{obj}"
        if frame >= num_frames:
            raise ValueError(f"{text}: frame {frame} is past the end of the video (frames 0..{num_frames - 1})")
        if not start <= frame < end:
            raise ValueError(f"{text}: frame {frame} is outside --frames {start}:{end}")
        xs, ys = values[0::2], values[1::2]
        if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
            raise ValueError(f"{text}: outside the {width}x{height} frame")
        entry = prompts.setdefault((frame, obj), {"points": [], "labels": [], "box": None})
        if label is None:
            if entry["box"] is not None:
                raise ValueError(f"{text}: object {obj} already has a box on frame {frame}")
            if values[0] > values[2] or values[1] > values[3]:
                raise ValueError(f"{text}: the box must be X1,Y1,X2,Y2 with X1 <= X2 and Y1 <= Y2")
            entry["box"] = values
        else:
            entry["points"].append(values)
            entry["labels"].append(label)
    return prompts


def _fingerprint(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        return {"name": path}
    st = p.stat()
    listing = sorted(os.listdir(p)) if p.is_dir() else None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "listing": listing}


def labels_from_logits(masks: np.ndarray, obj_ids: list, dtype) -> np.ndarray:
    """(O, 1, H, W) logits -> (H, W) label image: the id of the highest logit where it is > 0, else 0."""
    logits = masks[:, 0]
    best = np.argmax(logits, axis=0)
    ids = np.asarray(obj_ids, dtype)
    return np.where(np.take_along_axis(logits, best[None], 0)[0] > 0, ids[best], 0).astype(dtype)


def _open_video(path: str, frames_arg):
    """The video at the model's size later: (base VideoFrames, start, end)."""
    from ..processing.video.frames import VideoFrames

    base = VideoFrames.open(path, image_size=16)  # size unused: frames are re-read through ``image``
    n = base.num_frames
    start, end = frames_arg or (None, None)
    start, end = 0 if start is None else start, n if end is None else end
    if not 0 <= start < end <= n:
        raise ValueError(f"--frames {start}:{end} is not a range of the video's frames 0..{n - 1} (END excluded)")
    return base, start, end


def _plan(last: int, p0: int, every: int):
    """The chunks (reverse, start frame, max_frame_num_to_track), frames counted in the tracked range: forward
    p0..last, then backward p0-1..0. A backward chunk never starts at frame 0 (the predictor tracks nothing in
    reverse from 0): a lone frame 0 joins the chunk before it."""
    chunks = []
    t = p0
    while t <= last:
        chunks.append((False, t, every - 1))
        t += every
    t = p0 - 1
    while t >= 0:
        m = every - 1
        if t - m - 1 == 0:  # frame 0 would be left alone
            m += 1
        if t == 0:  # p0 - 1 == 0: start at p0 (its conditioning output, not written again)
            chunks.append((True, p0, 1))
            break
        chunks.append((True, t, m))
        t -= m + 1
    return chunks


def run(args) -> int:
    from ..frontends.image.visualize import overlay
    from ..frontends.video.checkpoint import load_tracking_state, save_tracking_state
    from ..frontends.video.predictor import Sam2VideoPredictor
    from ..processing.video.frames import VideoFrames
    from ..utils.progress import progress_bar
    from .common import save_png

    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    try:
        base, start, end = _open_video(args.video, args.frames)
    except ImportError as e:  # PyAV missing: how to install it
        print(f"error: {e}", file=sys.stderr)
        return 1
    width, height = base.video_width, base.video_height
    prompts = _prompts(args, base.num_frames, start, end, width, height)
    obj_order = sorted({obj for _, obj in prompts})
    if args.palette and obj_order[-1] > 255:
        raise ValueError(f"--palette: a palette PNG holds object ids up to 255, got object {obj_order[-1]}")
    dtype = np.uint8 if obj_order[-1] <= 255 else np.uint16
    manifest = {
        "video": _fingerprint(args.video), "num_frames": base.num_frames, "size": [width, height],
        "frames": [start, end], "model": _fingerprint(args.model),
        "prompts": [[f, o, p["points"], p["labels"], p["box"]] for (f, o), p in sorted(prompts.items())],
        "checkpoint_every": args.checkpoint_every, "overlay": args.overlay, "preview": args.preview,
    }  # fmt: skip
    if args.palette:
        manifest["palette"] = True
    out = Path(args.out)
    state_file = out / STATE_FILE
    saved = None
    if state_file.exists():
        try:
            saved = load_tracking_state(state_file)
        except ValueError as e:
            if not args.restart:
                raise ValueError(f"{e}; pass --restart to start over") from None
        if saved is not None and saved.info.get("manifest") != json.loads(json.dumps(manifest)):
            if not args.restart:
                raise ValueError(
                    f"{out} holds the state of a different tracking job (other video, prompts, frames, model or "
                    "outputs): pass --restart to start over, or choose another --out"
                )
            saved = None
    elif out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out} exists and is not the output of sam2-jax track (no {STATE_FILE}): choose another --out"
        )

    predictor = Sam2VideoPredictor.from_pretrained(args.model, keep_history=False)  # no corrections here
    size = predictor.image_size
    frames = VideoFrames(num_frames=end - start, video_height=height, video_width=width, image_size=size,
                         read=lambda i: base.image(start + i), fps=base.fps)  # fmt: skip
    state = predictor.init_state(frames)
    p0 = min(f for f, _ in prompts) - start
    plan = _plan(end - start - 1, p0, args.checkpoint_every)
    if saved is None:
        for (f, obj), p in sorted(prompts.items()):
            predictor.add_new_points_or_box(state, f - start, obj, points=p["points"] or None,
                                            labels=p["labels"] or None, box=p["box"])  # fmt: skip
        predictor.propagate_in_video_preflight(state)
        if args.restart and out.exists():
            _clear_outputs(out)
        out.mkdir(parents=True, exist_ok=True)
        save_tracking_state(state_file, state, {"manifest": manifest, "next_chunk": 0, "frames_done": 0})
        next_chunk, done = 0, 0
    else:
        saved.restore(state)
        next_chunk, done = saved.info["next_chunk"], saved.info["frames_done"]
        print(f"resuming {out}: {done} of {end - start} frames were done", file=sys.stderr)
    _remove_partials(out)
    digits = max(5, len(str(base.num_frames - 1)))
    bar = progress_bar(end - start, enabled=not args.no_progress, desc="tracking", unit="frame")
    bar.update(done)
    with bar:
        for k in range(next_chunk, len(plan)):
            reverse, t0, m = plan[k]
            for t, obj_ids, masks in predictor.propagate_in_video(state, t0, m, reverse=reverse):
                if reverse and t == p0:
                    continue  # written going forward
                label = labels_from_logits(masks, obj_ids, dtype)
                name = f"{start + t:0{digits}d}"
                save_png(out / f"{name}.png", label, palette=args.palette)
                if args.overlay:
                    drawn = overlay(frames.image(t), np.stack([label == i for i in obj_ids]))
                    _save_image(out / "overlay" / f"{name}.jpg", drawn, "JPEG", quality=90)
                done += 1
                bar.update(1)
            info = {"manifest": manifest, "next_chunk": k + 1, "frames_done": done}
            save_tracking_state(state_file, state, info)
    if args.overlay:
        _write_preview(out, start, end, digits, args.preview, base.fps)
    print(f"{done} label images of objects {', '.join(map(str, obj_order))} in {out}")
    return 0


def _save_image(path: Path, array: np.ndarray, fmt: str, **options) -> None:
    from PIL import Image

    from ..utils.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format=fmt, **options))


def _write_preview(out: Path, start: int, end: int, digits: int, fmt: str, fps) -> None:
    """An animation of the overlays, at most 480 px wide and 300 frames (every k-th frame of a longer video), at
    the video's pace (10 fps when unknown)."""
    from PIL import Image

    from ..utils.atomic import atomic_write

    images = []
    step = -(-(end - start) // 300)
    for i in range(start, end, step):
        with Image.open(out / "overlay" / f"{i:0{digits}d}.jpg") as im:
            scale = min(1.0, 480 / im.width)
            images.append(im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale)))))
    duration = round(1000 * step / (fps or 10))
    options = {"save_all": True, "append_images": images[1:], "duration": duration, "loop": 0}
    if fmt == "webp":
        options["quality"] = 80
    atomic_write(out / f"preview.{fmt}", lambda f: images[0].save(f, format=fmt.upper(), **options))


def _remove_partials(out: Path) -> None:
    from ..utils.atomic import is_partial

    for d in (out, out / "overlay"):
        if d.is_dir():
            for p in d.iterdir():
                if is_partial(p):
                    p.unlink(missing_ok=True)


def _clear_outputs(out: Path) -> None:
    """--restart: remove what a previous job wrote (label PNGs, overlays, preview, state)."""
    for p in list(out.glob("[0-9]*.png")) + list(out.glob("overlay/*.jpg")) + list(out.glob("preview.*")):
        p.unlink(missing_ok=True)
    (out / STATE_FILE).unlink(missing_ok=True)
