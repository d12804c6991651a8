"""Where the video datasets' frames and masks come from (``video_data.py``): frame folders, video file headers,
label PNGs, COCO RLEs (SA-V JSON, annotate records). Mask sources have ``present(t)`` (ids of the objects non-empty
in frame t) and ``load(frame indices, obj ids, (H, W)) -> (T, K, H, W) bool`` (an object absent: all False).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..processing.rle import area_from_rle, rle_to_mask

FRAME_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")  # the frames VideoFrames.from_directory reads


def frame_number(p: Path) -> int:
    try:
        return int(p.stem)
    except ValueError:
        raise ValueError(f"{p}: not named by its frame number (e.g. 00005{p.suffix})") from None


def frame_files(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix in FRAME_SUFFIXES:
            t = frame_number(p)
            if t in out:
                raise ValueError(f"{p}: two frames numbered {t} ({out[t].name} and {p.name})")
            out[t] = p
    if not out:
        raise ValueError(f"{folder}: a video without frames (no <int>.jpg)")
    return dict(sorted(out.items()))


def video_header(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (H, W)) of a video file from its container header (the demuxed count if the header has none)."""
    from ..processing.video.files import VideoFileReader, import_av

    av = import_av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            count, size = int(stream.frames), (stream.height, stream.width)
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise ValueError(f"{path}: cannot read video file: {e}") from e
    return count or VideoFileReader(path).num_frames, size


def check_rle(rle, size: tuple[int, int], where: str) -> None:
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, list)) or "size" not in rle:
        raise ValueError(f"{where}: not a COCO RLE ({{'size': [H, W], 'counts': ...}}): {str(rle)[:60]}")
    if tuple(rle["size"]) != size:
        raise ValueError(f"{where}: RLE size {rle['size']} differs from the frames' {list(size)}")


def rle_empty(rle: dict) -> bool:
    """An RLE without foreground. A COCO string over 8 characters holds two runs or more, hence foreground
    (pycocotools writes no empty run but the first), so only short ones are decoded."""
    counts = rle["counts"]
    return not (isinstance(counts, str) and len(counts) > 8) and area_from_rle(rle) == 0


class LabelMasks:
    """Label PNGs {frame index: path}; each frame's objects are decoded once and kept."""

    def __init__(self, paths: dict[int, Path]):
        self.paths, self._present = paths, {}

    def _read(self, t: int) -> np.ndarray:
        with Image.open(self.paths[t]) as im:
            label = np.asarray(im)
        if label.ndim != 2:
            raise ValueError(f"{self.paths[t]}: a label image must be single-channel, got shape {label.shape}")
        return label.view(np.uint8) if label.dtype == bool else label

    def present(self, t: int) -> tuple[int, ...]:
        if t not in self._present:
            label = self._read(t)
            small = label.dtype.kind == "u" and label.dtype.itemsize <= 2
            values = np.flatnonzero(np.bincount(label.ravel())) if small else np.unique(label)
            self._present[t] = tuple(int(v) for v in values if v != 0)
        return self._present[t]

    def load(self, ts: list[int], ids: list[int], size: tuple[int, int]) -> np.ndarray:
        out = np.zeros((len(ts), len(ids), *size), bool)
        for j, t in enumerate(ts):
            label = self._read(t)
            if label.shape != size:
                raise ValueError(f"{self.paths[t]}: mask {label.shape} differs in size from its frame's {size}")
            out[j] = label[None] == np.asarray(ids, np.int64)[:, None, None]
        return out


class RleMasks:
    """COCO RLEs {frame index: {object id: RLE or None}} (in memory, or re-read from an SA-V JSON: ``_read``) and
    {frame index: ids of the non-empty ones}."""

    def __init__(self, rles, present: dict[int, tuple[int, ...]], json_path=None, ann_every=1):
        self.rles, self._present, self.json_path, self.ann_every = rles, present, json_path, ann_every

    def present(self, t: int) -> tuple[int, ...]:
        return self._present[t]

    def _read(self) -> dict:
        if self.rles is not None:
            return self.rles
        _, masklets, every = read_sav(self.json_path, self.ann_every)
        return {k * every: dict(enumerate(frame)) for k, frame in enumerate(masklets)}

    def load(self, ts: list[int], ids: list[int], size: tuple[int, int]) -> np.ndarray:
        rles, out = self._read(), np.zeros((len(ts), len(ids), *size), bool)
        for j, t in enumerate(ts):
            for k, obj in enumerate(ids):
                if obj in self._present[t]:
                    out[j, k] = rle_to_mask(rles[t][obj])
        return out


def read_sav(path: Path, ann_every: int) -> tuple[dict, list, int]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read SA-V JSON: {e}") from None
    data = {"masklet": data} if isinstance(data, list) else data  # the official loader takes a bare list too
    masklets = data.get("masklet", data.get("masks")) if isinstance(data, dict) else None
    if not isinstance(masklets, list):
        raise ValueError(f'{path}: no "masklet" list (per annotated frame, a list of RLEs per object)')
    if "fps" in data:  # JSONSegmentLoader: frames at 24 fps, annotations at "fps"
        fps = int(data["fps"][0] if isinstance(data["fps"], list) else data["fps"])
        if fps <= 0 or 24 % fps:
            raise ValueError(f'{path}: "fps" {fps} does not divide the 24 fps of the frames')
        ann_every = 24 // fps
    return data, masklets, ann_every
