"""Fine-tuning data for the video model: videos with object masks on some or all frames, read lazily from disk.

A frame index is the number in a frame file's name (00005.jpg -> 5), or the decode position in a video file and in
what ``annotate`` tracked. Training frames are the annotated ones (as the official training, which samples only
annotated frames: YouTube-VOS every 5th, SA-V every 4th). Layouts:
  VideoDataset.from_davis(root, split_file=None, check_empty=True)
        DAVIS / YouTube-VOS: root/JPEGImages/<video>/<int>.jpg and root/Annotations/<video>/<int>.png label images
        (palette P or L: 0 background, every other value one object, that value its id; the official
        ``PalettisedPNGSegmentLoader``); JPEGImages/480p and Annotations/480p when both exist (DAVIS 2017).
        split_file: one video name a line (e.g. ImageSets/2017/train.txt); videos in sorted name order
  VideoDataset.from_sav(root, ann_every=4, frames_dir=None)
        SA-V: root/<video>_manual.json, whose "masklet" holds per annotated frame a list over objects of COCO RLEs
        ({"size": [H, W], "counts": str}), for frames 0, ann_every, 2 * ann_every... (the official ``ann_every=4``;
        24 // "fps" where the JSON has "fps", as ``JSONSegmentLoader``); object ids are masklet indices. Frames from
        frames_dir/<video>/<int>.jpg (default root/JPEGImages_24fps, the official training layout: frames named
        by their index, maybe every 4th only) or, without that folder, root/<video>.mp4 (PyAV). A frame with a
        null masklet is no training frame (the official ``rm_unannotated``)
  VideoDataset.from_annotate(video, out_dir)
        what ``sam2-jax annotate VIDEO --out OUT`` writes: OUT/video.json ("sam2-jax video annotations 1", see
        ``app/video_tracking.py``; its tracked frames are the training frames) with VIDEO's frames (a file or a
        folder, read through ``VideoFrames``)

  ds.clip(i, frame_indices, obj_ids=None) -> VideoClip(name, frames (T, H, W, 3) uint8 RGB, masks (T, K, H, W)
        bool, obj_ids (K,) int64, frame_indices (T,) int64), decoding only those frames (and masks of those
        objects); an object absent from a frame has an all-False mask there (the official ``always_target``);
        obj_ids None: all the video's objects (DAVIS with check_empty=False: those in the clip's frames)
  len(ds); ds.videos (names); ds.num_frames(i) (all frames); ds.frame_indices(i); ds.annotated(i) (training frames,
  ascending); ds.objects(i) (ids; None if not known yet); ds.size(i) -> (H, W); ds.present(i, t) -> ids of the
  objects non-empty in training frame t; ds.skipped: [(file, reason)]; ds.report() -> a one-line summary

Bad input. ``ValueError``, one line naming the file, at construction from file names, image and video file headers
and JSON (no pixel decoded): a video without frames; a frames folder without annotations, or annotations without
frames; a frame or mask not named by its number, two frames of one number; an annotation for a frame that does not
exist; a mask (PNG header, RLE size) whose size differs from its frame's; a label image that is not single-channel;
SA-V masklet counts that differ between frames or from "masklet_num" / "masklet_id", video_height / video_width
other than the frames'; an annotate record of another video (frame count, size) or with masks of objects not in
its "objects". Counted skips (``skipped``, ``report()``): a video without annotated frames, an object empty in
every annotated frame (SA-V, annotate), a video left without objects, an SA-V frame with a null masklet.
``check_empty`` (DAVIS) decodes every label PNG once at construction (on a few threads) to know each frame's
objects; without it a frame's objects are decoded when first asked for. The readers of frames and masks are
``video_sources.py``; sampling clips as the official training does (``RandomUniformSampler``), ``video_sampling.py``.
"""

from __future__ import annotations

import collections
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import LABEL_MODES
from .image_headers import header_size
from .video_sources import LabelMasks, RleMasks, check_rle, frame_files, frame_number, read_sav, rle_empty, video_header

__all__ = ["VideoClip", "VideoDataset"]


@dataclass
class VideoClip:
    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, K, H, W) bool
    obj_ids: np.ndarray  # (K,) int64
    frame_indices: np.ndarray  # (T,) int64


@dataclass
class _Video:
    name: str
    source: Path  # a frames folder or a video file
    frames: list[int]  # frame index by decode position
    size: tuple[int, int]
    annotated: list[int]  # training frames, ascending
    objects: list[int] | None
    masks: LabelMasks | RleMasks


class VideoDataset:
    """See the module docstring."""

    def __init__(self, videos: list[_Video], skipped: list[tuple[str, str]] | None = None, source: str = ""):
        self._videos, self.skipped, self.source = list(videos), list(skipped or []), source
        if not self._videos:
            raise ValueError(f"{source}: no video with an annotated object ({self._skips()})")

    @classmethod
    def from_davis(cls, root, split_file=None, check_empty: bool = True) -> VideoDataset:
        root = Path(root)
        images, labels = root / "JPEGImages", root / "Annotations"
        if (images / "480p").is_dir() and (labels / "480p").is_dir():
            images, labels = images / "480p", labels / "480p"
        if not images.is_dir():
            raise ValueError(f"{images}: no frames folder (JPEGImages/<video>/<frame>.jpg)")
        dirs = lambda d: sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))  # noqa: E731
        found = dirs(images)
        for name in dirs(labels) if labels.is_dir() else []:
            if name not in found:
                raise ValueError(f"{labels / name}: annotations without a frames folder {images / name}")
        names = found
        if split_file is not None:
            lines = Path(split_file).read_text().splitlines()
            names = sorted({os.path.splitext(s.strip())[0] for s in lines if s.strip()})
            for name in names:
                if name not in found:
                    raise ValueError(f"{split_file}: lists {name!r}, which has no frames folder {images / name}")
        videos, skipped = [], []
        for name in names:
            frames, folder = frame_files(images / name), labels / name
            if not folder.is_dir():
                raise ValueError(f"{images / name}: frames without an annotation folder {folder}")
            size, pngs = header_size(next(iter(frames.values()))), {}
            for p in sorted(q for q in folder.iterdir() if q.suffix.lower() == ".png" and not q.name.startswith(".")):
                t = frame_number(p)
                if t not in frames:
                    raise ValueError(
                        f"{p}: an annotation for a frame that does not exist (no {images / name}/{p.stem}.jpg)"
                    )
                m_size, mode = header_size(p, mode=True)
                if m_size != size:
                    raise ValueError(f"{p}: mask (height, width) {m_size} differs from its frame's {size}")
                if mode not in LABEL_MODES:
                    raise ValueError(f"{p}: a label image must be single-channel ({'/'.join(LABEL_MODES)}), not {mode}")
                pngs[t] = p
            if not pngs:
                skipped.append((str(folder), "no annotated frames"))
                continue
            videos.append(_Video(name, images / name, list(frames), size, sorted(pngs), None, LabelMasks(pngs)))
        if check_empty:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # PNG decoding releases the GIL
                list(pool.map(lambda vt: vt[0].masks.present(vt[1]), [(v, t) for v in videos for t in v.annotated]))
            kept: list[_Video] = []
            for v in videos:
                cls._objects(kept, skipped, v, labels / v.name)
            videos = kept
        return cls(videos, skipped, str(root))

    @classmethod
    def from_sav(cls, root, ann_every: int = 4, frames_dir=None) -> VideoDataset:
        root = Path(root)
        frames_dir = root / "JPEGImages_24fps" if frames_dir is None else Path(frames_dir)
        jsons = {p.name[: -len("_manual.json")]: p for p in sorted(root.glob("*_manual.json"))}
        folders = {p.name: p for p in sorted(frames_dir.iterdir()) if p.is_dir()} if frames_dir.is_dir() else {}
        mp4s = {p.stem: p for p in sorted(root.glob("*.mp4"))}
        for name, p in [*folders.items(), *mp4s.items()]:
            if name not in jsons:
                raise ValueError(f"{p}: frames without an annotation {root / (name + '_manual.json')}")
        if not jsons:
            raise ValueError(f"{root}: no SA-V annotations (<video>_manual.json)")
        videos, skipped = [], []
        for name, path in jsons.items():
            if name in folders:
                files = frame_files(folders[name])
                source, frames, size = folders[name], list(files), header_size(next(iter(files.values())))
            elif name in mp4s:
                count, size = video_header(mp4s[name])
                source, frames = mp4s[name], list(range(count))
            else:
                raise ValueError(f"{path}: an annotation without frames (no {frames_dir / name}/ nor {name}.mp4)")
            data, masklets, every = read_sav(path, ann_every)
            n = len(masklets[0]) if masklets and isinstance(masklets[0], list) else 0
            for key in ("masklet_num", "masklet_id"):
                value = data.get(key)
                if value is not None and (len(value) if isinstance(value, list) else int(value)) != n:
                    raise ValueError(f'{path}: "{key}" ({value}) does not match the {n} masklets of frame 0')
            v_size = (int(data.get("video_height", size[0])), int(data.get("video_width", size[1])))
            if v_size != size:
                raise ValueError(f"{path}: video_height x video_width {v_size} differ from {source}'s {size}")
            present, have = {}, set(frames)
            for k, frame in enumerate(masklets):
                t = k * every
                if not isinstance(frame, list) or len(frame) != n:
                    got = len(frame) if isinstance(frame, list) else type(frame).__name__
                    raise ValueError(f"{path}: frame {t} has {got} masklets, frame 0 has {n}")
                if t not in have:
                    raise ValueError(f"{path}: an annotation for frame {t}, which {source} does not have")
                for j, rle in enumerate(frame):
                    if rle is not None:
                        check_rle(rle, size, f"{path}: frame {t} masklet {j}")
                if None in frame:
                    skipped.append((f"{path} frame {t}", "frame with a null masklet"))
                else:
                    present[t] = tuple(j for j, rle in enumerate(frame) if not rle_empty(rle))
            record = _Video(name, source, frames, size, sorted(present), None, RleMasks(None, present, path, ann_every))
            objects = cls._objects(videos, skipped, record, path)
            skipped += [(f"{path} masklet {j}", "empty object") for j in range(n) if objects and j not in objects]
        return cls(videos, skipped, str(root))

    @classmethod
    def from_annotate(cls, video, out_dir) -> VideoDataset:
        from ..app.video_tracking import FORMAT, RECORD
        from ..processing.video.frames import VideoFrames

        path = Path(out_dir) / RECORD
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the annotate record: {e}") from None
        if not isinstance(rec, dict) or rec.get("format") != FORMAT:
            raise ValueError(f"{path}: not a sam2-jax video record (format {FORMAT!r})")
        frames = VideoFrames.open(os.fspath(video), cache_size=0)
        n, size = frames.num_frames, (frames.video_height, frames.video_width)
        if (rec.get("frames"), rec.get("height"), rec.get("width")) != (n, *size):
            theirs = f"{rec.get('frames')} frames of {rec.get('width')} x {rec.get('height')}"
            raise ValueError(f"{path}: the record of another video ({theirs}; {video}: {n} of {size[1]} x {size[0]})")
        ids, rles, present = [int(o) for o in rec.get("objects", [])], {}, {}
        for key, masks in (rec.get("masks") or {}).items():
            t = int(key) if str(key).isdigit() else -1
            if not 0 <= t < n:
                raise ValueError(f"{path}: masks for frame {key!r}, which {video} ({n} frames) does not have")
            for obj, rle in masks.items() if isinstance(masks, dict) else [(masks, None)]:
                if not str(obj).lstrip("-").isdigit() or int(obj) not in ids:
                    raise ValueError(f"{path}: frame {t} has a mask of object {obj}, not one of its objects {ids}")
                check_rle(rle, size, f"{path}: frame {t} object {obj}")
            rles[t] = {int(o): r for o, r in masks.items()}
            present[t] = tuple(sorted(o for o, r in rles[t].items() if not rle_empty(r)))
        videos, skipped = [], []
        record = _Video(
            Path(video).name, Path(video), list(range(n)), size, sorted(present), None, RleMasks(rles, present)
        )
        objects = cls._objects(videos, skipped, record, path)
        skipped += [(f"{path} object {o}", "empty object") for o in ids if objects and o not in objects]
        return cls(videos, skipped, str(path))

    @staticmethod
    def _objects(videos: list, skipped: list, v: _Video, where) -> list[int]:
        """Keeps ``v`` (in ``videos``) with the objects non-empty in some training frame, or counts its skip."""
        v.objects = sorted(set().union(*(v.masks.present(t) for t in v.annotated)))
        if not v.annotated:
            skipped.append((str(where), "no annotated frames"))
        elif not v.objects:
            skipped.append((str(where), "no objects"))
        else:
            videos.append(v)
        return v.objects

    def __len__(self) -> int:
        return len(self._videos)

    @property
    def videos(self) -> list[str]:
        return [v.name for v in self._videos]

    def num_frames(self, i: int) -> int:
        return len(self._videos[i].frames)

    def frame_indices(self, i: int) -> list[int]:
        return list(self._videos[i].frames)

    def annotated(self, i: int) -> list[int]:
        return list(self._videos[i].annotated)

    def objects(self, i: int) -> list[int] | None:
        return self._videos[i].objects

    def size(self, i: int) -> tuple[int, int]:
        return self._videos[i].size

    def present(self, i: int, t: int) -> tuple[int, ...]:
        return self._videos[i].masks.present(t)

    def clip(self, i: int, frame_indices, obj_ids=None) -> VideoClip:
        """Frames ``frame_indices`` (training frames of video ``i``, in that order), with the masks of ``obj_ids``."""
        from ..processing.video.frames import VideoFrames

        v = self._videos[i]
        ts, annotated = [int(t) for t in frame_indices], set(v.annotated)
        for t in ts:
            if t not in annotated:
                raise ValueError(f"{v.source}: frame {t} of {v.name} is not a training (annotated) frame")
        if obj_ids is None:
            ids = v.objects if v.objects is not None else sorted(set().union(*(v.masks.present(t) for t in ts)))
        else:
            ids = [int(o) for o in obj_ids]
            unknown = [o for o in ids if v.objects is not None and o not in v.objects]
            if unknown:
                raise ValueError(f"{v.source}: {v.name} has no objects {unknown} (its objects: {v.objects})")
        reader = VideoFrames.open(os.fspath(v.source), cache_size=0)
        position = {t: p for p, t in enumerate(v.frames)}
        if (reader.video_height, reader.video_width) != v.size or max(map(position.get, ts), default=0) >= len(reader):
            raise ValueError(f"{v.source}: {len(reader)} frames of {reader.video_height} x {reader.video_width} now, "
                             f"{len(v.frames)} of {v.size[0]} x {v.size[1]} at construction")  # fmt: skip
        frames = [reader.image(position[t]) for t in ts]
        out = np.stack(frames) if frames else np.zeros((0, *v.size, 3), np.uint8)
        masks = v.masks.load(ts, ids, v.size)
        return VideoClip(v.name, out, masks, np.asarray(ids, np.int64), np.asarray(ts, np.int64))

    def _skips(self) -> str:
        reasons = collections.Counter(reason for _, reason in self.skipped)
        return ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"

    def report(self) -> str:
        frames = sum(len(v.annotated) for v in self._videos)
        return f"{len(self)} videos ({frames} annotated frames) from {self.source}; skipped: {self._skips()}"
