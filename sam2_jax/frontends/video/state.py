"""The video predictor's inference state: the official ``inference_state`` dict as typed, host-side records.

``VideoInferenceState`` (made by ``Sam2VideoPredictor.init_state``) holds the frames (``VideoFrames``, decoded
lazily), the objects in the order they were added (``obj_ids``), one ``ObjectTrack`` per object, a small cache
of frame features and the ``FrameHistory`` file where tracked frames' mask logits and memories are kept. It
also answers the official keys
``state["num_frames"]``, ``["video_height"]``, ``["video_width"]`` and ``["obj_ids"]``.

The per-object records (``ObjectTrack``, ``FrameRecord``, ``NOT_TRACKED``) are in ``tracking.records``,
shared with the transformers-style session (``tracking.session_state``).
"""

from __future__ import annotations

import collections

from ...processing.video.frames import VideoFrames
from ...tracking.history import FrameHistory
from ...tracking.records import ObjectTrack


class VideoInferenceState:
    """One video's tracking session; see the module docstring. Not thread-safe (as the official's)."""

    def __init__(self, frames: VideoFrames, feature_cache_size: int = 2, history_dir=None):
        self.frames = frames
        self.history = FrameHistory(history_dir)  # tracked frames' masks and memories (files made when used)
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
