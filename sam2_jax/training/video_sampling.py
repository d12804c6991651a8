"""Training clips of a ``VideoDataset``, sampled as the official training samples them (facebookresearch/sam2
``training/dataset/vos_sampler.py`` ``RandomUniformSampler.sample`` and ``vos_dataset.py`` ``VOSDataset``).

sample_clip(ds, i, num_frames=8, max_num_objects=3, reverse_time_prob=0.0, *, rng) -> ClipSample(frame_indices,
    obj_ids, retries, absent): ``num_frames`` consecutive training frames of video i (``ds.annotated(i)``: every
    annotated frame, so every 4th frame of an SA-V video) from a uniformly random start, reversed with probability
    ``reverse_time_prob``; the objects visible (non-empty) in the first of them (after the reversal), a random
    subset of at most ``max_num_objects`` in random order (the official ``random.sample``). A first frame without a
    visible object is drawn again (start and reversal), up to 1000 times (the official ``MAX_RETRIES``), counted in
    ``retries``; ``absent``: how many of the video's objects were not visible in the first frame (not candidates).
    Fewer training frames than ``num_frames``, or no visible object in 1000 draws: ``NoClip`` (a ``ValueError``;
    the official sampler raises too). ``rng``: a ``numpy.random.Generator``, the only randomness.
VideoClipSource(ds, num_frames=8, max_num_objects=3, reverse_time_prob=0.0, seed=0, epoch=0): random access,
    ``src[index] -> VideoClip`` (``ds.clip`` of a ``sample_clip``, frames (T, H, W, 3) uint8, masks (T, K, H, W)
    bool), the same for the same (seed, epoch, index) in any process and order; an index past ``len(src)`` is of
    epoch ``epoch + index // len(src)``. Videos with fewer than ``num_frames`` training frames are left out at
    construction (the official sampler raises on them and ``VOSDataset._get_datapoint`` draws another video, in
    training) and counted; a video whose draws fail is replaced by one drawn from the same generator, up to 100
    times (``_get_datapoint``'s ``MAX_RETRIES``), counted. ``src.sample(index) -> (video, ClipSample)`` without
    decoding; ``len(src)``, ``src.videos`` (dataset indices), ``src.skipped`` (a Counter of this process's skips),
    ``src.report()``. Picklable, for loader workers (e.g. ``grain.MapDataset.source(src)``).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

MAX_RETRIES = 1000  # vos_sampler.MAX_RETRIES: draws for a first frame with a visible object
MAX_VIDEO_RETRIES = 100  # vos_dataset.MAX_RETRIES: videos tried for one training example
__all__ = ["ClipSample", "NoClip", "VideoClipSource", "sample_clip"]


class NoClip(ValueError):
    """No clip can be sampled from a video (too few training frames, no visible object in a first frame)."""


@dataclass
class ClipSample:
    frame_indices: list[int]
    obj_ids: list[int]
    retries: int = 0
    absent: int = 0


def sample_clip(ds, i: int, num_frames: int = 8, max_num_objects: int = 3, reverse_time_prob: float = 0.0, *, rng):
    """See the module docstring."""
    frames = ds.annotated(i)
    if num_frames < 1 or max_num_objects < 1:
        raise ValueError(f"num_frames and max_num_objects must be >= 1, got {num_frames} and {max_num_objects}")
    if len(frames) < num_frames:
        raise NoClip(f"{ds.videos[i]}: cannot sample {num_frames} frames, it has {len(frames)} annotated frames")
    for retries in range(MAX_RETRIES):  # noqa: B007 (the count is returned)
        start = int(rng.integers(0, len(frames) - num_frames + 1))
        clip = frames[start : start + num_frames]
        if rng.random() < reverse_time_prob:
            clip = clip[::-1]
        visible = sorted(ds.present(i, clip[0]))
        if visible:
            break
    else:
        raise NoClip(f"{ds.videos[i]}: no visible object in the first frame of {MAX_RETRIES} sampled clips")
    picked = rng.permutation(len(visible))[: min(len(visible), max_num_objects)]
    objects = ds.objects(i)
    absent = len(set(objects) - set(visible)) if objects is not None else 0
    return ClipSample([int(t) for t in clip], [visible[j] for j in picked], retries, absent)


class VideoClipSource:
    """See the module docstring."""

    def __init__(self, ds, num_frames=8, max_num_objects=3, reverse_time_prob=0.0, seed: int = 0, epoch: int = 0):
        self.ds, self.seed, self.epoch = ds, int(seed), int(epoch)
        self.options = {"num_frames": num_frames, "max_num_objects": max_num_objects,
                        "reverse_time_prob": reverse_time_prob}  # fmt: skip
        self.videos = [i for i in range(len(ds)) if len(ds.annotated(i)) >= num_frames]
        self.skipped: collections.Counter = collections.Counter()
        self.skipped[f"videos with fewer than {num_frames} annotated frames"] += len(ds) - len(self.videos)
        self._lock = threading.Lock()
        if not self.videos:
            raise ValueError(f"{ds.source}: no video has {num_frames} annotated frames ({len(ds)} videos)")

    def __len__(self) -> int:
        return len(self.videos)

    def sample(self, index: int) -> tuple[int, ClipSample]:
        """(dataset index of the video, ClipSample) for ``index``, without decoding frames."""
        if index < 0:
            raise IndexError(f"index {index} < 0")
        epoch, j = divmod(int(index), len(self))
        rng = np.random.default_rng([self.seed, self.epoch + epoch, j])
        video, counts = self.videos[j], collections.Counter()
        for attempt in range(MAX_VIDEO_RETRIES):
            try:
                s = sample_clip(self.ds, video, **self.options, rng=rng)
                break
            except NoClip:
                if attempt == MAX_VIDEO_RETRIES - 1:
                    raise
                counts["clips drawn from another video (no visible object in a first frame)"] += 1
                video = self.videos[int(rng.integers(len(self)))]
        counts["first frames drawn again (no visible object)"] += s.retries
        counts["objects not visible in a first frame"] += s.absent
        with self._lock:
            self.skipped += counts
        return video, s

    def __getitem__(self, index: int):
        video, s = self.sample(index)
        return self.ds.clip(video, s.frame_indices, s.obj_ids)

    def report(self) -> str:
        detail = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()) if n) or "none"
        return f"{len(self)} of {len(self.ds)} videos, clips of {self.options['num_frames']} frames; skipped: {detail}"

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())
