"""Saving and restoring a video predictor's tracking state, so that a long propagation can stop and resume exactly.

``save_tracking_state(path, state, info)`` writes one ``.npz`` file atomically (``utils.atomic``): every object's
id, prompts (``points`` / ``masks``), conditioning and tracked records (``cond`` / ``non_cond``: low-resolution
mask (S/4, S/4), pointer (C,), object score, memory features (h, w, M), each possibly absent) and ``tracked``
(num_frames,) int8, bit for bit (bfloat16 memories stay bfloat16), plus ``info``: any JSON-able dict the caller
wants back (a job description, where tracking stopped). Prompts not yet propagated (``temp_*`` records) are
refused: run ``propagate_in_video_preflight`` first. No pickles.

``load_tracking_state(path)`` -> ``TrackingCheckpoint(info, obj_ids, objects)``; ``checkpoint.restore(state)``
puts the objects into a ``VideoInferenceState`` of the same video (frames and feature cache are not saved: they
are recomputed the same way). With ``keep_history=False`` the state after a propagation is its conditioning
frames and its memory bank, so a propagation restored from a checkpoint continues exactly as it would have.
A file that is not such a checkpoint raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...tracking.records import FrameRecord, ObjectTrack
from ...utils.atomic import atomic_write
from .state import VideoInferenceState

FORMAT = "sam2-jax tracking state 1"
_FIELDS = ("low_res_mask", "pointer", "features")


def _store(arrays: dict, dtypes: dict, key: str, value) -> None:
    a = np.ascontiguousarray(np.asarray(value))
    dtypes[key] = a.dtype.name
    if a.dtype.kind not in "biuf" or a.dtype.name not in np.sctypeDict:  # bfloat16 & co: their bits
        a = a.view(f"u{a.dtype.itemsize}")
    arrays[key] = a


def _fetch(data, dtypes: dict, key: str) -> np.ndarray:
    a = data[key]
    name = dtypes[key]
    if a.dtype.name != name:
        import ml_dtypes

        a = a.view(getattr(ml_dtypes, name))
    return a


def save_tracking_state(path: str | os.PathLike, state: VideoInferenceState, info: dict | None = None) -> Path:
    """Write the state's objects and ``info`` to ``path`` (an ``.npz``) atomically; returns the path."""
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    objects = []
    for o, (obj_id, track) in enumerate(zip(state.obj_ids, state.objects, strict=True)):
        if track.temp_cond or track.temp_non_cond:
            raise ValueError(
                f"object {obj_id!r} has prompts that were not propagated yet: call "
                "propagate_in_video_preflight(state) before saving"
            )
        _store(arrays, dtypes, f"{o}/tracked", track.tracked)
        scores = {}
        for kind in ("cond", "non_cond"):
            scores[kind] = {}
            for t, rec in getattr(track, kind).items():
                scores[kind][str(t)] = rec.object_score
                for name in _FIELDS:
                    if getattr(rec, name) is not None:
                        _store(arrays, dtypes, f"{o}/{kind}/{t}/{name}", getattr(rec, name))
        for t, (coords, labels) in track.points.items():
            _store(arrays, dtypes, f"{o}/points/{t}/coords", coords)
            _store(arrays, dtypes, f"{o}/points/{t}/labels", labels)
        for t, mask in track.masks.items():
            _store(arrays, dtypes, f"{o}/masks/{t}", mask)
        objects.append({"obj_id": obj_id, "scores": scores, "points": sorted(track.points),
                        "masks": sorted(track.masks)})  # fmt: skip
    meta = {"format": FORMAT, "num_frames": state.num_frames, "info": info or {}, "objects": objects,
            "dtypes": dtypes}  # fmt: skip
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


@dataclass
class TrackingCheckpoint:
    """What ``load_tracking_state`` read: the caller's ``info``, the object ids and their ``ObjectTrack`` s."""

    info: dict
    num_frames: int
    obj_ids: list
    objects: list[ObjectTrack]

    def restore(self, state: VideoInferenceState) -> None:
        """Replace the state's objects by the checkpoint's (the state must be of a video of as many frames)."""
        if state.num_frames != self.num_frames:
            raise ValueError(
                f"the checkpoint is of a {self.num_frames}-frame video, the state's has {state.num_frames}"
            )
        state.obj_ids = list(self.obj_ids)
        state.objects = [o.copy() for o in self.objects]


def load_tracking_state(path: str | os.PathLike) -> TrackingCheckpoint:
    """Read a file written by ``save_tracking_state``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            if meta.get("format") != FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            dtypes, n = meta["dtypes"], int(meta["num_frames"])
            obj_ids, objects = [], []
            for o, desc in enumerate(meta["objects"]):
                track = ObjectTrack(n, tracked=_fetch(data, dtypes, f"{o}/tracked").copy())
                for kind, scores in desc["scores"].items():
                    records = getattr(track, kind)
                    for t, score in scores.items():
                        fields = {
                            name: _fetch(data, dtypes, key) if (key := f"{o}/{kind}/{t}/{name}") in dtypes else None
                            for name in _FIELDS
                        }
                        records[int(t)] = FrameRecord(object_score=score, **fields)
                for t in desc["points"]:
                    track.points[t] = tuple(_fetch(data, dtypes, f"{o}/points/{t}/{k}") for k in ("coords", "labels"))
                for t in desc["masks"]:
                    track.masks[t] = _fetch(data, dtypes, f"{o}/masks/{t}")
                obj_ids.append(desc["obj_id"])
                objects.append(track)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable tracking checkpoint: {e}") from e
    return TrackingCheckpoint(meta["info"], n, obj_ids, objects)
