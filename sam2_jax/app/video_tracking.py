"""The video mode's tracking, without HTTP: prompts on any frame, a tracking job that streams, cancels and resumes.

``VideoTracking(predictor, video, out_dir, palette=False)`` owns one ``Sam2VideoPredictor`` state of ``video``
(a video file, a directory of frames or a ``VideoFrames``; decoded lazily) and writes ``out_dir/<frame:05d>.png``
label images, the same files ``sam2-jax track`` writes (``cli.track.labels_from_logits``: 0 background, else the
id of the object with the highest logit > 0; ``palette``: DAVIS / YouTube-VOS palette PNGs, ids up to 255, as
``track --palette``), as frames are computed.

  prompt(frame, obj_id, points=None, labels=None, box=None, clear_old_points=True) -> (H, W) label image of that
      frame (``add_new_points_or_box``; points / box in the video's pixels)
  undo() -> (frame, label or None)  takes back the last prompt since the last tracking run (up to 100): the state
                                    before it, that frame's label image
  remove(obj_id)                    the official ``remove_object``; the frames already written keep their labels
                                    until they are tracked again
  start_tracking() -> TrackJob      tracks on a thread of its own: forward from the earliest frame prompted since
                                    the last complete run to the last frame, then backward from it to frame 0
                                    (``propagate_in_video(start_frame_idx=s)`` then ``(..., reverse=True)``: the
                                    calls a script makes; with the predictor's default ``keep_history`` their
                                    results are the official's)
  cancel()                          stops the job at the next frame and keeps what was done; ``start_tracking()``
                                    without a new prompt then goes on where it stopped, and the frames it writes
                                    are those an uninterrupted run writes, to rounding (the memory bank is rebuilt
                                    from the host records in another slot order: ~1e-6)
  labels(frame) -> (H, W) or None   the last label image computed for a frame (None: never tracked)
``TrackJob``: ``done`` / ``total`` frames, ``fps``, ``running``, ``error``, ``frames`` (in the order computed) and
``times`` (``perf_counter()`` at each),
``wait(timeout)``, ``wait_past(seen, timeout)`` (until a frame past the ``seen`` first is done, or the end).
Prompts and removals while a job runs raise ``TrackingBusy``. Thread-safe.

``out_dir/video.json`` (``FORMAT``), rewritten atomically after each prompt and removal and at most once a second
while tracking: the video's frame count and size, every call made (prompts and removals, in order) and, per
tracked frame, each object's mask as COCO RLE (each label image encoded once; while tracking, saves take at
most a tenth of the time). Just after it, the tracking state goes to ``out_dir/.tracking/``
(``frontends.video.state_dir``: each tracked frame's records written once, a small head rewritten), with what is
left of the tracking plan. A restart on the same OUT (also after kill -9 mid-track) shows the tracked frames'
saved masks and restores that state, so ``start_tracking()`` carries on from the last frame saved, as ``sam2-jax
track`` does; corrections on tracked frames have what they need. Without a state of the same calls (an older
OUT), the calls are replayed on a fresh state and the first ``start_tracking()`` re-tracks from the earliest
prompt. A ``video.json`` of another video is refused with a message naming it.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..frontends.video.state_dir import TrackingStateDir

FORMAT = "sam2-jax video annotations 1"
RECORD = "video.json"
UNDO_DEPTH = 100  # prompts that can be taken back
STATE_DIR = ".tracking"  # in OUT: the tracking state (``frontends.video.state_dir``)


class TrackingBusy(RuntimeError):
    """A prompt or removal while a tracking job runs."""


@dataclass
class TrackJob:
    total: int
    done: int = 0
    frames: list = field(default_factory=list)
    times: list = field(default_factory=list)  # perf_counter() as each frame was done
    running: bool = True
    cancelled: bool = False
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    finished: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)  # notified at each frame and the end

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def wait_past(self, seen: int, timeout: float) -> None:
        """Until more than ``seen`` frames are done or the job ends (at most ``timeout`` s): a long poll's wait."""
        with self.changed:
            self.changed.wait_for(lambda: self.done > seen or not self.running, timeout)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()


class VideoTracking:
    """See the module docstring."""

    def __init__(self, predictor, video, out_dir, palette: bool = False):
        from ..processing.video.frames import VideoFrames

        self.predictor = predictor
        self.palette = palette
        self.frames = VideoFrames.open(video, predictor.image_size)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = predictor.init_state(self.frames)
        self._lock = threading.RLock()
        self._labels: dict[int, np.ndarray] = {}
        self._dirty: set[int] = set()  # frames prompted since the last complete run
        self._plan: list[tuple[int, bool]] = []  # what is left of the last run: (start frame, reverse)
        self.job: TrackJob | None = None
        self._cancel = threading.Event()
        self._calls: list[dict] = []
        self._saved_at = 0.0
        self._save_s = 0.0  # how long the last save took
        self._rles: dict[int, tuple] = {}  # frame -> (label image, object ids, {id: RLE}) of the last save
        self._replaying = False
        self._undo: list[tuple] = []  # before each prompt since the last run: (snapshot, frame, label, dirty, plan)
        self._position: list | None = None  # while a job runs: what is left of its plan after the last frame
        self._state_dir = TrackingStateDir(self.out / STATE_DIR)
        self._resume()

    # ---- the record in OUT ------------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / RECORD
        if not path.is_file():
            return
        try:
            rec = json.loads(path.read_text())
            if rec.get("format") != FORMAT:
                raise ValueError(f"unknown format {rec.get('format')!r}")
        except (ValueError, OSError) as e:
            raise ValueError(f"{path} is not a sam2-jax video record: {e}") from None
        f = self.frames
        here = [f.num_frames, f.video_width, f.video_height]
        if [rec["frames"], rec["width"], rec["height"]] != here:
            theirs = f"{rec['frames']} frames of {rec['width']} x {rec['height']}"
            raise ValueError(
                f"{path} is of another video ({theirs}; this one: {here[0]} of {here[1]} x {here[2]}): choose "
                "another --out"
            )
        if bool(rec.get("palette", False)) != self.palette:
            written = "palette" if rec.get("palette") else "grey-level"
            raise ValueError(
                f"{path}: the label images in {self.out} are {written} PNGs: pass --palette "
                f"{'again' if rec.get('palette') else 'only for a new --out'}, or choose another --out"
            )
        try:
            info = self._state_dir.load(self.state)
        except ValueError as e:  # damaged: the calls are replayed instead
            warnings.warn(f"{e}; replaying the calls of {path.name} instead", stacklevel=2)
            info = None
        if info is not None and info.get("calls") == len(rec["calls"]):  # the tracking state of these calls
            self._calls = list(rec["calls"])
            self._plan = [(int(s), bool(r)) for s, r in info["plan"]]
            self._dirty = set(info["dirty"])
        else:  # none saved (or saved with another call): the calls again, on a fresh state
            self.state.obj_ids, self.state.objects = [], []
            self._replaying = True  # neither PNGs nor the record are rewritten while the calls are replayed
            try:
                self._replay(rec["calls"])
            finally:
                self._replaying = False
            self._dirty = {c["frame"] for c in rec["calls"] if c["call"] == "prompt"}
        from ..processing.rle import rle_to_mask

        for t, masks in rec["masks"].items():
            label = np.zeros((f.video_height, f.video_width), self._label_dtype())
            for obj, rle in masks.items():
                label[rle_to_mask(rle).astype(bool)] = int(obj)
            self._labels[int(t)] = label

    def _replay(self, calls: list) -> None:
        for call in calls:
            if call["call"] == "prompt":
                args = {k: call[k] for k in ("points", "labels", "box", "clear_old_points")}
                self.prompt(call["frame"], call["obj_id"], **args)
            else:
                self.remove(call["obj_id"])

    def _save(self, force: bool = True) -> None:
        from ..utils.atomic import atomic_write
        from .masks import encode_masks

        now = time.monotonic()
        # while tracking at most once a second, and at most a tenth of the time (a long video's record is long)
        if self._replaying or (not force and now - self._saved_at < max(1.0, 10 * self._save_s)):
            return
        self._saved_at = now
        ids = list(self.state.obj_ids)
        masks = {}
        for t in sorted(self._labels):
            label = self._labels[t]
            cached = self._rles.get(t)
            if cached is None or cached[0] is not label or cached[1] != ids:  # encoded once per label image
                rles = encode_masks(np.stack([label == i for i in ids])) if ids else []
                got = {str(i): r["segmentation"] for i, r in zip(ids, rles, strict=True) if r["area"] > 0}
                self._rles[t] = cached = (label, ids, got)
            masks[str(t)] = cached[2]
        plan = self._plan if self._position is None else self._position
        info = {"calls": len(self._calls), "plan": plan, "dirty": sorted(self._dirty)}
        f = self.frames
        rec = {"format": FORMAT, "frames": f.num_frames, "width": f.video_width, "height": f.video_height,
               "objects": ids, "calls": self._calls, "masks": masks, "palette": self.palette}  # fmt: skip
        atomic_write(self.out / RECORD, lambda fh: fh.write(json.dumps(rec).encode()))
        # the state after the record: a kill between the two leaves a state behind the record, whose frames are
        # tracked again (or, for a call the state lacks, the record's calls replayed), never a record behind
        # the state (frames the state has tracked that the record and the page would not show)
        self._state_dir.save(self.state, info)
        self._save_s = time.monotonic() - now

    @property
    def num_frames(self) -> int:
        return self.state.num_frames

    @property
    def obj_ids(self) -> list:
        return list(self.state.obj_ids)

    def _idle(self, what: str) -> None:
        if self.job is not None and self.job.running:
            raise TrackingBusy(f"tracking is running: cancel it before {what}")

    def _label_dtype(self):
        return np.uint16 if any(int(i) > 255 for i in self.state.obj_ids) else np.uint8

    def _write(self, t: int, obj_ids: list, masks: np.ndarray) -> np.ndarray:
        from ..cli.track import labels_from_logits

        return self._write_label(t, labels_from_logits(masks, obj_ids, self._label_dtype()))

    def _write_label(self, t: int, label: np.ndarray) -> np.ndarray:
        from ..cli.common import save_png

        if not self._replaying:
            save_png(self.out / f"{t:05d}.png", label, palette=self.palette)
        self._labels[t] = label
        return label

    # ---- prompts ---------------------------------------------------------------------------------------------
    def prompt(self, frame, obj_id, points=None, labels=None, box=None, clear_old_points=True) -> np.ndarray:
        with self._lock:
            self._idle("adding a prompt")
            if self.palette and int(obj_id) > 255:
                raise ValueError(f"a palette PNG holds object ids up to 255, got object {obj_id}")
            snap, dirty, plan = self.state.snapshot(), set(self._dirty), list(self._plan)
            t, ids, masks = self.predictor.add_new_points_or_box(
                self.state, frame, obj_id, points=points, labels=labels, box=box, clear_old_points=clear_old_points
            )
            self._undo = self._undo[-(UNDO_DEPTH - 1) :] + [(snap, t, self._labels.get(t), dirty, plan)]
            self._dirty.add(t)
            label = self._write(t, ids, masks)
            as_list = lambda a, kind: None if a is None else np.asarray(a, kind).tolist()  # noqa: E731
            call = {"call": "prompt", "frame": t, "obj_id": int(obj_id), "points": as_list(points, float),
                    "labels": as_list(labels, int), "box": as_list(box, float),
                    "clear_old_points": bool(clear_old_points)}  # fmt: skip
            self._calls.append(call)
            self._save()
            return label

    def undo(self) -> tuple[int, np.ndarray | None]:
        """Take back the last prompt made since the last tracking run or removal: the state before it (the
        predictor's own snapshot), that frame's label image (its PNG removed if it had none); -> (frame, label)."""
        with self._lock:
            self._idle("undoing")
            if not self._undo:
                raise ValueError("nothing to undo: no prompt since the last tracking run (a new click corrects)")
            snap, t, label, self._dirty, self._plan = self._undo.pop()
            self.state.restore(snap)
            if label is None:
                self._labels.pop(t, None)
                self._rles.pop(t, None)
                (self.out / f"{t:05d}.png").unlink(missing_ok=True)
            else:
                self._write_label(t, label)
            self._calls.pop()
            self._save()
            return t, label

    def remove(self, obj_id) -> None:
        with self._lock:
            self._idle("removing an object")
            self._undo = []
            if self.state.obj_idx(obj_id) is None:
                raise KeyError(f"no object {obj_id!r}; objects: {self.state.obj_ids}")
            self.predictor.remove_object(self.state, obj_id, need_output=False)
            self._plan = []
            self._dirty.update(t for track in self.state.objects for t in track.cond)
            self._calls.append({"call": "remove", "obj_id": obj_id})
            self._save()

    def labels(self, frame: int) -> np.ndarray | None:
        return self._labels.get(self.frames.check_index(frame))

    # ---- tracking --------------------------------------------------------------------------------------------
    def _new_plan(self) -> list[tuple[int, bool]]:
        if self._dirty or not self._plan:
            prompted = self._dirty or {t for track in self.state.objects for t in track.cond}
            if not prompted:
                raise ValueError("nothing to track: add a prompt first")
            s = min(prompted)
            self._plan = [(s, False)] + ([(s, True)] if s > 0 else [])
            self._dirty = set()
        return list(self._plan)

    def start_tracking(self) -> TrackJob:
        with self._lock:
            self._idle("starting another")
            plan = self._new_plan()
            self._undo = []
            n = self.num_frames
            total = sum((n - s) if not rev else s + 1 for s, rev in plan)
            self.predictor.propagate_in_video_preflight(self.state)  # bad state raises here, not on the thread
            self._cancel.clear()
            self.job = job = TrackJob(total)
            threading.Thread(target=self._run, args=(job, plan), name="sam2-annotate-track", daemon=True).start()
            return job

    def cancel(self) -> None:
        self._cancel.set()

    def _run(self, job: TrackJob, plan: list) -> None:
        try:
            while plan:
                start, reverse = plan[0]
                frames = self.predictor.propagate_in_video(self.state, start_frame_idx=start, reverse=reverse)
                try:
                    for t, ids, masks in frames:
                        with self._lock:
                            self._write(t, ids, masks)
                            self._position = _rest(plan, t, reverse, self.num_frames)
                            self._save(force=False)
                        job.frames.append(t)
                        job.times.append(time.perf_counter())
                        job.done += 1
                        job._notify()
                        if self._cancel.is_set():
                            plan[:] = self._position
                            job.cancelled = True
                            return
                finally:
                    frames.close()
                plan.pop(0)
        except Exception as e:  # noqa: BLE001 - reported in the job
            job.error = f"{type(e).__name__}: {e}"
        finally:
            with self._lock:
                self._plan, self._position = plan, None
                job.running = False
                try:
                    self._save()
                except Exception as e:  # noqa: BLE001 - reported in the job
                    job.error = job.error or f"saving {RECORD}: {type(e).__name__}: {e}"
            job.finished.set()
            job._notify()


def _rest(plan: list, t: int, reverse: bool, n: int) -> list:
    """What is left of ``plan`` once frame ``t`` of its first run is done."""
    nxt = t - 1 if reverse else t + 1
    if reverse and nxt == 0:  # reverse from frame 0 tracks nothing: redo frame 1 (the same result)
        return [(1, True)] + plan[1:]
    return ([(nxt, reverse)] if 0 <= nxt < n else []) + plan[1:]


__all__ = ["TrackJob", "TrackingBusy", "VideoTracking"]
