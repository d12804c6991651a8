"""A video predictor's tracking state saved in a directory incrementally, for states that keep every tracked frame.

``checkpoint.save_tracking_state`` rewrites every record into one file: right for a ``keep_history=False`` run,
whose state is a few records, not for a state that keeps every tracked frame (~0.8 MB per object and frame at
1024 px) and is saved every second while it tracks. ``TrackingStateDir(path)`` writes each record's arrays once:

  save(state, info)        the low-resolution mask logits (S/4, S/4) and memory features (h, w, M) of every record
                           not saved yet go to ``r<n>.npz`` (one per record; bfloat16 as its bits), then
                           ``head.npz`` is rewritten atomically: per object its id, ``tracked`` (num_frames,),
                           prompts (points, masks) and, for every record of ``cond`` / ``non_cond`` / ``temp_cond``
                           / ``temp_non_cond``, its frame, object score, pointer (C,), file number and the dtypes of
                           the arrays in it (so that a load opens no record file); ``info`` is
                           any JSON-able dict of the caller's. Then the files no record names any more are deleted.
                           A record's files are written before the head that names them, so a kill -9 at any point
                           leaves the last head and every file it names.
  load(state) -> info | None  replaces ``state``'s objects by the saved ones (the state must be of a video of as
                           many frames); their arrays are read from their files when used, as ``FrameHistory``'s
                           are. None when nothing was saved; a damaged head raises ``ValueError`` naming it.

A re-tracked frame's new record is a new file and the old one is deleted after the next head. Disk use is the
records the state holds, as in the state's own ``FrameHistory`` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ...tracking.records import FrameRecord, ObjectTrack
from ...utils.atomic import atomic_write

FORMAT = "sam2-jax tracking state dir 1"
HEAD = "head.npz"
_KINDS = ("cond", "non_cond", "temp_cond", "temp_non_cond")
_ARRAYS = ("low_res_mask", "features")


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.dtype.name in np.sctypeDict else a.view(f"u{a.dtype.itemsize}")  # bfloat16: its bits


def _typed(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype.name == name:
        return a
    import ml_dtypes

    return a.view(getattr(ml_dtypes, name))


class _Saved:
    """One array of a record file, read when used (a fresh array each time)."""

    __slots__ = ("path", "key", "dtype")

    def __init__(self, path: Path, key: str, dtype: str):
        self.path, self.key, self.dtype = path, key, dtype

    def load(self) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as data:
            return _typed(data[self.key], self.dtype)


class TrackingStateDir:
    """See the module docstring."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # id(record) -> (the record, kept alive so that the id stays its own; file number; {array: dtype name})
        self._saved: dict[int, tuple[FrameRecord, int, dict]] = {}
        self._next = 0

    def _file(self, n: int) -> Path:
        return self.path / f"r{n}.npz"

    def _write_record(self, rec: FrameRecord) -> tuple[int, dict]:
        """The record's file number and its arrays' dtype names, its file written unless it is already (with
        the features, once they are encoded)."""
        done = self._saved.get(id(rec))
        if done is not None and ("features" in done[2] or not rec.has_features):
            return done[1], done[2]
        n, self._next = self._next, self._next + 1
        arrays = {name: np.asarray(getattr(rec, name)) for name in _ARRAYS if rec.stored(name) is not None}
        with open(self._file(n), "wb") as f:
            np.savez(f, **{name: _bits(a) for name, a in arrays.items()})
        dtypes = {name: a.dtype.name for name, a in arrays.items()}
        self._saved[id(rec)] = (rec, n, dtypes)
        return n, dtypes

    def save(self, state, info: dict | None = None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        objects = []
        used: set[int] = set()
        for o, (obj_id, track) in enumerate(zip(state.obj_ids, state.objects, strict=True)):
            arrays[f"{o}/tracked"] = track.tracked
            kinds = {}
            for kind in _KINDS:
                rows = []
                for t, rec in getattr(track, kind).items():
                    n, dtypes = self._write_record(rec)
                    used.add(n)
                    score = None if rec.object_score is None else float(rec.object_score)
                    rows.append([int(t), score, n, rec.pointer is not None, dtypes])
                    if rec.pointer is not None:
                        arrays[f"{o}/{kind}/{t}/pointer"] = _bits(rec.pointer)
                kinds[kind] = rows
            for t, (coords, labels) in track.points.items():
                arrays[f"{o}/points/{t}/coords"], arrays[f"{o}/points/{t}/labels"] = coords, labels
            for t, mask in track.masks.items():
                arrays[f"{o}/masks/{t}"] = np.asarray(mask)
            objects.append({"obj_id": obj_id, "records": kinds, "points": sorted(track.points),
                            "masks": sorted(track.masks)})  # fmt: skip
        pointer_dtype = next((str(a.dtype) for k, a in arrays.items() if k.endswith("/pointer")), "float32")
        meta = {"format": FORMAT, "num_frames": state.num_frames, "info": info or {}, "objects": objects,
                "pointer_dtype": pointer_dtype}  # fmt: skip
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        atomic_write(self.path / HEAD, lambda f: np.savez(f, **arrays))
        for key, (_, n, _) in list(self._saved.items()):
            if n not in used:
                self._file(n).unlink(missing_ok=True)
                del self._saved[key]

    def load(self, state) -> dict | None:
        head = self.path / HEAD
        if not head.is_file():
            return None
        try:
            with np.load(head, allow_pickle=False) as data:
                meta = json.loads(bytes(data["__meta__"]).decode())
                if meta.get("format") != FORMAT:
                    raise ValueError(f"unknown format {meta.get('format')!r}")
                if meta["num_frames"] != state.num_frames:
                    raise ValueError(f"saved for {meta['num_frames']} frames, the video has {state.num_frames}")
                objects = [self._object(data, o, desc, meta) for o, desc in enumerate(meta["objects"])]
        except (ValueError, KeyError, OSError) as e:
            raise ValueError(f"{head} is not a readable tracking state: {e}") from None
        state.obj_ids = [desc["obj_id"] for desc in meta["objects"]]
        state.objects = objects
        used = {row[2] for desc in meta["objects"] for rows in desc["records"].values() for row in rows}
        for p in self.path.glob("r*.npz"):  # files of records written after the head, by a killed run
            if p.stem[1:].isdigit() and int(p.stem[1:]) not in used:
                p.unlink(missing_ok=True)
        self._next = max(used, default=-1) + 1
        return meta["info"]

    def _object(self, data, o: int, desc: dict, meta: dict) -> ObjectTrack:
        track = ObjectTrack(meta["num_frames"], tracked=data[f"{o}/tracked"].copy())
        for kind, rows in desc["records"].items():
            for t, score, n, has_pointer, dtypes in rows:
                handles = {name: _Saved(self._file(n), name, dtypes[name]) if name in dtypes else None
                           for name in _ARRAYS}  # fmt: skip
                pointer = _typed(data[f"{o}/{kind}/{t}/pointer"], meta["pointer_dtype"]) if has_pointer else None
                record = FrameRecord(handles["low_res_mask"], pointer, score, handles["features"])
                getattr(track, kind)[t] = record
                self._saved[id(record)] = (record, n, dtypes)
        for t in desc["points"]:
            track.points[t] = (data[f"{o}/points/{t}/coords"], data[f"{o}/points/{t}/labels"])
        for t in desc["masks"]:
            track.masks[t] = data[f"{o}/masks/{t}"]
        return track


__all__ = ["TrackingStateDir"]
