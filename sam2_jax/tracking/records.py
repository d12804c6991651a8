"""Host-side tracking records, shared by the video predictor's state (``frontends.video.state``) and the
transformers-style session (``tracking.session_state``).

``ObjectTrack`` mirrors the official per-object dicts:
  points / masks        frame -> the prompt given there (``point_inputs_per_obj`` / ``mask_inputs_per_obj``)
  cond / non_cond       frame -> ``FrameRecord`` (``output_dict_per_obj``); ``non_cond`` holds every tracked
                        frame with ``keep_history`` (the predictor's default: their mask logits and memory
                        features in the state's ``tracking.history.FrameHistory`` file), else only what the
                        last run's bank held
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


class FrameRecord:
    """One frame's output for one object; the mask logits and memory features may live in a ``FrameHistory``
    file (``tracking.history``), and reading them loads them back."""

    __slots__ = ("_low_res_mask", "pointer", "object_score", "_features")

    def __init__(self, low_res_mask=None, pointer=None, object_score=None, features=None):
        self._low_res_mask = low_res_mask  # (S/4, S/4) float32 logits, hole-filled as returned
        self.pointer = pointer  # (C,) float32
        self.object_score = object_score
        self._features = features  # (h, w, M) memory features; None until encoded

    @property
    def low_res_mask(self) -> np.ndarray | None:
        return _loaded(self._low_res_mask)

    @low_res_mask.setter
    def low_res_mask(self, value) -> None:
        self._low_res_mask = value

    @property
    def features(self) -> np.ndarray | None:
        return _loaded(self._features)

    @features.setter
    def features(self, value) -> None:
        self._features = value

    @property
    def has_features(self) -> bool:
        return self._features is not None

    def stored(self, name: str):
        """The array, or its ``Spilled`` handle, as held."""
        return getattr(self, "_" + name)

    def set_stored(self, name: str, value) -> None:
        setattr(self, "_" + name, value)

    def memory_nbytes(self) -> int:
        """Bytes held in memory (a spilled array counts as its handle: 0 here)."""
        return sum(x.nbytes for x in (self._low_res_mask, self.pointer, self._features) if isinstance(x, np.ndarray))


def _loaded(x):
    return x if x is None or isinstance(x, np.ndarray) else x.load()


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
