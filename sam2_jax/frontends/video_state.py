"""The video predictor's inference state: the official ``inference_state`` dict as typed, host-side records.

``VideoInferenceState`` (made by ``Sam2VideoPredictor.init_state``) holds the frames (``VideoFrames``, decoded
lazily), the objects in the order they were added (``obj_ids``), one ``ObjectTrack`` per object and a small cache
of frame features. It also answers the official keys
``state["num_frames"]``, ``["video_height"]``, ``["video_width"]`` and ``["obj_ids"]``.

``ObjectTrack`` mirrors the official per-object dicts:
  points / masks        frame -> the prompt given there (``point_inputs_per_obj`` / ``mask_inputs_per_obj``)
  cond / non_cond       frame -> ``FrameRecord`` (``output_dict_per_obj``); ``non_cond`` holds every tracked
                        frame with ``keep_history``, else only what the last run's bank held
  temp_cond / temp_non_cond  prompted frames whose memory is not encoded yet (``temp_output_dict_per_obj``)
  tracked               (num_frames,) int8: -1 not tracked, 0 tracked forward, 1 in reverse
                        (``frames_tracked_per_obj``), fixed-size so that it does not grow with use
A ``FrameRecord`` is the official ``compact_current_out``: the low-resolution mask logits (S/4, S/4), the object
pointer (C,), the object-score logit and, once encoded, the memory features (h, w, M).
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..processing.video_frames import VideoFrames

NOT_TRACKED = -1


@dataclass
class FrameRecord:
    low_res_mask: np.ndarray  # (S/4, S/4) float32 logits, hole-filled as returned
    pointer: np.ndarray  # (C,) float32
    object_score: float
    features: np.ndarray | None = None  # (h, w, M) memory features; None until encoded


@dataclass
class ObjectTrack:
    num_frames: int
    points: dict = field(default_factory=dict)  # frame -> (coords (N, 2) model frame, labels (N,))
    masks: dict = field(default_factory=dict)  # frame -> (S, S) float32 binary mask
    cond: dict = field(default_factory=dict)
    non_cond: dict = field(default_factory=dict)
    temp_cond: dict = field(default_factory=dict)
    temp_non_cond: dict = field(default_factory=dict)
    tracked: np.ndarray = None

    def __post_init__(self):
        if self.tracked is None:
            self.tracked = np.full(self.num_frames, NOT_TRACKED, np.int8)

    def output_at(self, frame_idx: int, is_cond: bool) -> FrameRecord | None:
        """Official lookup order: the temporary output of that kind, then cond, then non-cond outputs."""
        temp = self.temp_cond if is_cond else self.temp_non_cond
        for d in (temp, self.cond, self.non_cond):
            if frame_idx in d:
                return d[frame_idx]
        return None

    def copy(self) -> ObjectTrack:
        return dataclasses.replace(
            self,
            points=dict(self.points),
            masks=dict(self.masks),
            cond=dict(self.cond),
            non_cond=dict(self.non_cond),
            temp_cond=dict(self.temp_cond),
            temp_non_cond=dict(self.temp_non_cond),
            tracked=self.tracked.copy(),
        )


class VideoInferenceState:
    """One video's tracking session; see the module docstring. Not thread-safe (as the official's)."""

    def __init__(self, frames: VideoFrames, feature_cache_size: int = 2):
        self.frames = frames
        self.obj_ids: list = []
        self.objects: list[ObjectTrack] = []
        self.features = collections.OrderedDict()  # frame -> FrameFeatures, least recently used first
        self.feature_cache_size = feature_cache_size
        self.warned_history = False  # a prompt on a tracked frame whose outputs were not kept warns once

    @property
    def num_frames(self) -> int:
        return self.frames.num_frames

    @property
    def video_height(self) -> int:
        return self.frames.video_height

    @property
    def video_width(self) -> int:
        return self.frames.video_width

    _KEYS = ("num_frames", "video_height", "video_width", "obj_ids")

    def __getitem__(self, key: str):
        if key not in self._KEYS:
            raise KeyError(f"{key!r}: the state answers {', '.join(self._KEYS)} (other official keys are internal)")
        return getattr(self, key)

    def obj_idx(self, obj_id) -> int | None:
        try:
            return self.obj_ids.index(obj_id)
        except ValueError:
            return None

    def snapshot(self):
        """What a failed call must restore: object ids and per-object records (frames and features are shared)."""
        return list(self.obj_ids), [o.copy() for o in self.objects]

    def restore(self, snap) -> None:
        self.obj_ids, self.objects = snap
