"""Host-side tracking records, shared by the video predictor's state (``frontends.video.state``) and the
transformers-style session (``tracking.session_state``).

``ObjectTrack`` mirrors the official per-object dicts:
  points / masks        frame -> the prompt given there (``point_inputs_per_obj`` / ``mask_inputs_per_obj``)
  cond / non_cond       frame -> ``FrameRecord`` (``output_dict_per_obj``); ``non_cond`` holds every tracked
                        frame with ``keep_history``, else only what the last run's bank held
  temp_cond / temp_non_cond  prompted frames whose memory is not encoded yet (``temp_output_dict_per_obj``)
  tracked               (num_frames,) int8: ``NOT_TRACKED`` (-1) not tracked, 0 tracked forward, 1 in reverse
                        (``frames_tracked_per_obj``), fixed-size so that it does not grow with use
A ``FrameRecord`` is the official ``compact_current_out``: the low-resolution mask logits (S/4, S/4), the object
pointer (C,), the object-score logit and, once encoded, the memory features (h, w, M).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

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
