"""The annotation server's video mode: its JSON API over ``video_tracking.VideoTracking`` (``docs/annotate_api.md``).

Handlers take (state, path parameters, body) as ``api``'s do; ``ROUTES`` lists them. ``VideoAnnotateState``
holds the tracking, OUT's lock and the token. Masks are COCO RLE (column-major counts) per object id; frames are
indices 0..frames-1; points and boxes are in the video's pixels. A prompt or removal while tracking runs is
answered 409; a frame outside the video, an unknown object, malformed values 4xx with a one-line reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from . import validation as v
from .masks import color_of, encode_masks
from .video_tracking import TrackingBusy, VideoTracking

LONG_POLL_S = 5.0  # how long ``GET /api/video/track/next/{k}`` waits for a frame


@dataclass
class VideoAnnotateState:
    tracking: VideoTracking
    lock_file: object
    model_name: str
    token: str | None = None

    def close(self) -> None:
        self.tracking.cancel()
        if self.tracking.job is not None:
            self.tracking.job.wait(30)
        f, self.lock_file = self.lock_file, None
        if f is not None and not f.closed:
            f.close()


def _frame(state, value) -> int:
    n = state.tracking.num_frames
    if isinstance(value, bool) or not isinstance(value, int):
        raise v.ApiError(400, f"'frame' must be an integer frame index, got {value!r}")
    if not 0 <= value < n:
        raise v.ApiError(404, f"frame {value} is outside the video (frames 0..{n - 1})")
    return value


def _size(state) -> tuple[int, int]:
    f = state.tracking.frames
    return f.video_height, f.video_width


def _masks(state, label: np.ndarray | None) -> dict:
    if label is None:
        return {}
    ids = state.tracking.obj_ids
    rles = encode_masks(np.stack([label == i for i in ids])) if ids else []
    return {str(i): r["segmentation"] for i, r in zip(ids, rles, strict=True) if r["area"] > 0}


def _busy(call):
    try:
        return call()
    except TrackingBusy as e:
        raise v.ApiError(409, str(e)) from None


def info(state, params, body):
    import sam2_jax

    f = state.tracking.frames
    tracked = [t for t in range(f.num_frames) if state.tracking.labels(t) is not None]
    ids = state.tracking.obj_ids
    return {
        "mode": "video",
        "model": state.model_name,
        "out": str(state.tracking.out),
        "frames": f.num_frames,
        "width": f.video_width,
        "height": f.video_height,
        "fps": f.fps,
        "objects": ids,
        "colors": {str(i): color_of(int(i)) for i in ids},
        "tracked": tracked,
        "version": sam2_jax.__version__,
    }


def frame_file(state, params, body):
    """The frame as JPEG bytes (served by ``server`` as image/jpeg)."""
    from PIL import Image

    t = _frame(state, int(params["t"]))
    buf = io.BytesIO()
    Image.fromarray(np.asarray(state.tracking.frames.image(t))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def overlay(state, params, body):
    """The frame's objects as an RGBA PNG (each in its ``color_of`` colour, alpha 0.45; clear where none; all clear
    for a frame never tracked), the size of the video."""
    from PIL import Image

    t = _frame(state, int(params["t"]))
    h, w = _size(state)
    rgba = np.zeros((h, w, 4), np.uint8)
    label = state.tracking.labels(t)
    if label is not None:
        for i in state.tracking.obj_ids:
            c = color_of(int(i))
            rgba[label == i] = (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 115)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def frame_masks(state, params, body):
    t = _frame(state, int(params["t"]))
    label = state.tracking.labels(t)
    return {"frame": t, "tracked": label is not None, "masks": _masks(state, label)}


def prompt(state, params, body):
    t = _frame(state, body.get("frame"))
    obj = v.integer(body, "obj_id", 1, 65535)
    size = _size(state)
    points, labels = v.points(body, size)
    box = v.box(body, size)
    if points is None and box is None:
        raise v.ApiError(400, "give 'points' (with 'labels') or a 'box'")
    clear = v.boolean(body, "clear_old_points", default=True)
    try:
        label = _busy(lambda: state.tracking.prompt(t, obj, points=points, labels=labels, box=box,
                                                    clear_old_points=clear))  # fmt: skip
    except ValueError as e:  # what the predictor refuses (an id a palette PNG cannot hold, ...)
        raise v.ApiError(400, str(e)) from None
    colors = {str(i): color_of(int(i)) for i in state.tracking.obj_ids}
    return {"frame": t, "objects": state.tracking.obj_ids, "colors": colors, "masks": _masks(state, label)}


def undo(state, params, body):
    try:
        t, label = _busy(state.tracking.undo)
    except ValueError as e:
        raise v.ApiError(400, str(e)) from None
    colors = {str(i): color_of(int(i)) for i in state.tracking.obj_ids}
    return {"frame": t, "objects": state.tracking.obj_ids, "colors": colors, "masks": _masks(state, label)}


def remove(state, params, body):
    obj = int(params["obj_id"])
    if obj not in state.tracking.obj_ids:
        raise v.ApiError(404, f"no object {obj}; objects: {state.tracking.obj_ids}")
    _busy(lambda: state.tracking.remove(obj))
    return {"objects": state.tracking.obj_ids}


def _job_row(job, since: int = 0) -> dict:
    return {"running": job.running, "done": job.done, "total": job.total, "fps": round(job.fps, 2),
            "cancelled": job.cancelled, "error": job.error, "frames": job.frames[since:]}  # fmt: skip


def track(state, params, body):
    try:
        job = _busy(state.tracking.start_tracking)
    except ValueError as e:
        raise v.ApiError(400, str(e)) from None
    return 202, _job_row(job)


def track_state(state, params, body):
    job = state.tracking.job
    if job is None:
        return {"running": False, "done": 0, "total": 0, "fps": 0.0, "cancelled": False, "error": None, "frames": []}
    return _job_row(job, int(params.get("since", 0)))


def track_next(state, params, body):
    """The long poll the page streams with: the job's row once a frame past the ``since`` first is done or the job
    ends (at most ``LONG_POLL_S``; then the row as it is)."""
    since, job = int(params["since"]), state.tracking.job
    if job is not None:
        job.wait_past(since, LONG_POLL_S)
    return track_state(state, params, body)


def cancel(state, params, body):
    state.tracking.cancel()
    return {"cancelled": True}


ROUTES = [
    ("GET", "/api/info", info, False),
    ("GET", "/api/video/frames/{t:int}/masks", frame_masks, False),
    ("POST", "/api/video/prompts", prompt, True),
    ("POST", "/api/video/undo", undo, False),
    ("DELETE", "/api/video/objects/{obj_id:int}", remove, False),
    ("POST", "/api/video/track", track, False),
    ("GET", "/api/video/track", track_state, False),
    ("GET", "/api/video/track/since/{since:int}", track_state, False),
    ("GET", "/api/video/track/next/{since:int}", track_next, False),
    ("POST", "/api/video/track/cancel", cancel, False),
]
