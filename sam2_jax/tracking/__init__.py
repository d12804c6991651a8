"""The video tracker: a fixed-size memory bank (``memory_bank``) and the pure, jit-compiled steps over it
(``steps``); the host-side per-object records (``records``: ``ObjectTrack``, ``FrameRecord``) and transformers'
inference sessions (``session_state``: ``Sam2VideoInferenceSession``), shared by ``frontends.video`` and
``processing.video``. ``sam2_jax.frontends.video.predictor`` puts the official predictor's interface on top."""

from .memory_bank import MemoryBank, Selection, bucket_of, empty_bank, select, write
from .steps import Tracker, TrackOutput, track_step

__all__ = [
    "MemoryBank",
    "Selection",
    "Tracker",
    "TrackOutput",
    "bucket_of",
    "empty_bank",
    "select",
    "write",
    "track_step",
]
