"""transformers' ``Sam2VideoInferenceSession`` for ``Sam2VideoSessionModel``: a video (or live stream), its objects.

Made by ``Sam2VideoProcessor.init_video_session(video=None | frames)``. It holds:
  frames           ``VideoFrames`` of a whole video (decoded lazily, (S, S, 3) float32 each), or None when frames
                   arrive one by one (streaming: ``model(session, frame=pixels)``); streamed frames are not kept
  num_frames       frames of the video, or frames received so far when streaming
  video_height / video_width   the original frame size (set by ``original_size=`` when streaming)
  obj_ids          object ids in the order they were added; ``objects`` one ``ObjectTrack`` each (points / masks
                   per frame, ``cond`` and ``non_cond`` ``FrameRecord``s as transformers' ``output_dict_per_obj``)
  tracked          per object, a ``FrameSet`` of the frames tracked for it (transformers' ``frames_tracked_per_obj``)
  obj_with_new_inputs  the objects whose inputs the next ``model(...)`` call consumes
  features         frame -> image features, the ``max_vision_features_cache_size`` most recent frames
  bank             the device memory bank kept between calls (see ``frontends.video.session``), or None
  stats            per-call latency: calls, last_s, mean_s, max_s (flat: running totals only)
Memory is flat in the number of frames: with ``keep_history=False`` (default) the tracked frames an object keeps
are those its bank holds; conditioning frames (frames with prompts) are kept, as transformers keeps them.
"""

from __future__ import annotations

import collections
import dataclasses
import numbers

import numpy as np

from ..processing.video.frames import VideoFrames
from .records import FrameRecord, ObjectTrack


class FrameSet:
    """A set of frame indices stored as sorted, merged [start, end] ranges: tracking adds neighbouring frames,
    so it stays a handful of ranges however long the video or stream."""

    def __init__(self):
        self.ranges: list[list[int]] = []

    def add(self, t: int) -> None:
        for r in self.ranges:
            if r[0] - 1 <= t <= r[1] + 1:
                r[0], r[1] = min(r[0], t), max(r[1], t)
                break
        else:
            self.ranges.append([t, t])
        self.ranges.sort()
        merged: list[list[int]] = []
        for r in self.ranges:
            if merged and r[0] <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], r[1])
            else:
                merged.append(r)
        self.ranges = merged

    def __contains__(self, t: int) -> bool:
        return any(a <= t <= b for a, b in self.ranges)

    def copy(self) -> FrameSet:
        out = FrameSet()
        out.ranges = [list(r) for r in self.ranges]
        return out


@dataclasses.dataclass
class Sam2VideoSegmentationOutput:
    """One frame's result (transformers' ``Sam2VideoSegmentationOutput``, NumPy)."""

    object_ids: list  # the session's object ids, in order
    pred_masks: np.ndarray  # (O, 1, S/4, S/4) float32 low-resolution logits; -1024 where an object is absent
    object_score_logits: np.ndarray  # (O,) float32: > 0 means present
    frame_idx: int
    latency_s: float  # wall time of the call, from the call to the outputs on the host


class Sam2VideoInferenceSession:
    """See the module docstring. Not thread-safe: give each thread its own session."""

    def __init__(self, frames: VideoFrames | None = None, max_vision_features_cache_size: int = 1):
        if isinstance(max_vision_features_cache_size, bool) or not isinstance(
            max_vision_features_cache_size, numbers.Integral
        ):
            raise TypeError(f"max_vision_features_cache_size must be an int, got {max_vision_features_cache_size!r}")
        self.frames = frames
        self.streaming = frames is None
        self.streamed_frames = 0
        self.video_height = None if frames is None else frames.video_height
        self.video_width = None if frames is None else frames.video_width
        self.image_size = None if frames is None else frames.image_size
        # at least 2: a prompt on the frame just streamed (after its call) still finds its features
        self.feature_cache_size = max(2, int(max_vision_features_cache_size))
        self.features = collections.OrderedDict()
        self.reset_inference_session()

    @property
    def num_frames(self) -> int | None:
        """Frames of the video; when streaming, frames received so far (None before the first, as transformers)."""
        if self.frames is not None:
            return self.frames.num_frames
        return self.streamed_frames or None

    # ---- objects ----------------------------------------------------------------------------------------------
    def reset_tracking_data(self) -> None:
        """Forget every object, input and output; keep the frames and cached features."""
        self.obj_ids: list = []
        self.objects: list[ObjectTrack] = []
        self.tracked: list[FrameSet] = []
        self.obj_with_new_inputs: list = []
        self.bank = None  # (key, last frame, MemoryBank) kept on the device between calls
        self.stats = {"calls": 0, "last_s": 0.0, "mean_s": 0.0, "max_s": 0.0}

    def reset_inference_session(self) -> None:
        """Forget every object, input and output, and the cached features (transformers' name)."""
        self.reset_tracking_data()
        self.features.clear()

    def obj_id_to_idx(self, obj_id) -> int:
        """The index of ``obj_id``, adding the object if it is new."""
        if obj_id in self.obj_ids:
            return self.obj_ids.index(obj_id)
        if isinstance(obj_id, bool) or not isinstance(obj_id, numbers.Integral):
            raise TypeError(f"object ids must be ints, got {obj_id!r}")
        self.obj_ids.append(obj_id)
        self.objects.append(ObjectTrack(0))
        self.tracked.append(FrameSet())
        return len(self.obj_ids) - 1

    def obj_idx_to_id(self, obj_idx: int):
        return self.obj_ids[obj_idx]

    def get_obj_num(self) -> int:
        return len(self.obj_ids)

    # ---- frames -----------------------------------------------------------------------------------------------
    def check_frame(self, frame_idx, what: str = "frame_idx") -> int:
        """A frame index the session can take a prompt or a call on."""
        if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, numbers.Integral):
            raise TypeError(f"{what} must be an int, got {frame_idx!r}")
        t = int(frame_idx)
        if self.frames is not None:
            return self.frames.check_index(t)
        if not 0 <= t <= self.streamed_frames:
            n = self.streamed_frames
            raise IndexError(f"{what} {t}: {n} frames streamed so far, the next one is {n}")
        return t

    # ---- size and latency -------------------------------------------------------------------------------------
    def record_latency(self, seconds: float) -> None:
        s = self.stats
        s["calls"] += 1
        s["last_s"] = seconds
        s["mean_s"] += (seconds - s["mean_s"]) / s["calls"]
        s["max_s"] = max(s["max_s"], seconds)

    def state_nbytes(self) -> int:
        """Bytes of everything the session holds per object and frame: records, prompts, cached features, bank."""
        import jax

        def size(x) -> int:
            return sum(int(getattr(a, "nbytes", 0)) for a in jax.tree_util.tree_leaves(x))

        total = 0
        for track in self.objects:
            for d in (track.cond, track.non_cond, track.temp_cond, track.temp_non_cond):
                for rec in d.values():
                    total += size([rec.low_res_mask, rec.pointer, rec.features])
            total += size(list(track.points.values())) + size(list(track.masks.values()))
        total += size(list(self.features.values()))
        if self.bank is not None:
            total += size(self.bank[2])
        return total + 16 * sum(len(s.ranges) for s in self.tracked)


def check_session(session) -> Sam2VideoInferenceSession:
    if not isinstance(session, Sam2VideoInferenceSession):
        raise TypeError(
            f"expected a session from Sam2VideoProcessor.init_video_session(), got {type(session).__name__}"
        )
    return session


def frame_pixels(frame, size: int) -> np.ndarray:
    px = np.asarray(frame, np.float32)
    if px.ndim == 4 and px.shape[0] == 1:
        px = px[0]
    if px.shape == (3, size, size) and size != 3:
        px = px.transpose(1, 2, 0)  # transformers' channels-first pixel values
    if px.shape != (size, size, 3):
        raise ValueError(f"frame must be ({size}, {size}, 3) pixel values (processor output), got {np.shape(frame)}")
    return px


__all__ = [
    "FrameRecord",
    "FrameSet",
    "Sam2VideoInferenceSession",
    "Sam2VideoSegmentationOutput",
    "check_session",
    "frame_pixels",
]
