"""Generated videos of shapes moving over real (or textured) backgrounds, for video fine-tuning tests (no download).

make_shapes_video(seed, index, num_frames=8, size=(96, 128), max_objects=1, backgrounds=None) -> ShapesVideo(name,
      frames (T, H, W, 3) uint8, masks (T, K, H, W) bool): 1..max_objects shapes (``synthetic``'s kinds, random
      colours, lightly shaded), each gliding in a straight line between two random positions (up to about a third
      of the frame over the clip) while turning slowly; later shapes are drawn over earlier ones (a mask is what is
      visible of its shape, maybe empty on some frames). Backgrounds: ``backgrounds`` (N, H, W, 3) uint8, frames
      of a real video, the clip over a random window of consecutive ones (the camera moves as it did), or None:
      one textured background (``synthetic``'s noise, stripes or gradient) for every frame. Deterministic from
      (seed, index) (and ``backgrounds``).
write_shapes_videos(root, num_videos, num_frames=8, size=(96, 128), seed=0, max_objects=1, backgrounds=None) ->
      root (Path) in the DAVIS layout ``VideoDataset.from_davis`` reads: root/JPEGImages/<video>/<00000>.jpg and
      root/Annotations/<video>/<00000>.png (mode L labels: 0 background, k the k-th shape), videos video_0000...
load_backgrounds(folder, size=(96, 128)) -> (N, H, W, 3) uint8: the frames of a folder (sorted), resized.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synthetic import KINDS, _background, _polygon, _rasterise

__all__ = ["ShapesVideo", "load_backgrounds", "make_shapes_video", "write_shapes_videos"]


@dataclass
class ShapesVideo:
    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, K, H, W) bool


def load_backgrounds(folder, size=(96, 128)) -> np.ndarray:
    """(N, H, W, 3) uint8: ``folder``'s .jpg / .png frames in name order, resized to ``size`` (H, W)."""
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"{folder}: no frames")
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize(size[::-1], Image.BILINEAR)) for p in files])


def make_shapes_video(seed: int, index: int, num_frames: int = 8, size=(96, 128), max_objects: int = 1,
                      backgrounds=None) -> ShapesVideo:  # fmt: skip
    """See the module docstring."""
    h, w = size
    rng = np.random.default_rng([seed, index, 1])
    if backgrounds is None:
        frames = np.repeat(_background(rng, h, w)[None], num_frames, axis=0)
    else:
        bg = np.asarray(backgrounds, np.float64)
        if bg.shape[1:3] != (h, w):
            raise ValueError(f"backgrounds are {bg.shape[1:3]}, the videos {size}")
        start = int(rng.integers(0, max(len(bg) - num_frames, 0) + 1))
        frames = bg[[min(start + t, len(bg) - 1) for t in range(num_frames)]].copy()
    count = int(rng.integers(1, max_objects + 1))
    masks = np.zeros((num_frames, count, h, w), bool)
    for k in range(count):
        pts = _polygon(rng, KINDS[rng.integers(len(KINDS))], h, w)
        centre = pts.mean(0)
        r = np.abs(pts - centre).max()
        end = centre + rng.uniform(-0.3, 0.3, 2) * [w, h]
        end = np.clip(end, [r, r], [max(w - r, r), max(h - r, r)])
        turn = rng.uniform(-0.15, 0.15)
        colour = rng.uniform(0, 255, 3)
        for t in range(num_frames):
            a = turn * t
            rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
            at = centre + (end - centre) * t / max(num_frames - 1, 1)
            m = _rasterise(np.clip((pts - centre) @ rot + at, 0, [w, h]), h, w)
            masks[t, :k] &= ~m  # occluded by this shape
            masks[t, k] = m
            shade = colour + rng.normal(0, 6, (h, w, 3))
            frames[t] = np.where(m[..., None], shade, frames[t])
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    return ShapesVideo(f"video_{index:04d}", frames, masks)


def write_shapes_videos(root: str | os.PathLike, num_videos: int, num_frames: int = 8, size=(96, 128),
                        seed: int = 0, max_objects: int = 1, backgrounds=None) -> Path:  # fmt: skip
    """See the module docstring."""
    from PIL import Image

    root = Path(root)
    for i in range(num_videos):
        v = make_shapes_video(seed, i, num_frames, size, max_objects, backgrounds)
        images, labels = root / "JPEGImages" / v.name, root / "Annotations" / v.name
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for t in range(num_frames):
            Image.fromarray(v.frames[t]).save(images / f"{t:05d}.jpg", quality=95)
            label = (np.arange(1, v.masks.shape[1] + 1)[:, None, None] * v.masks[t]).max(0)
            Image.fromarray(label.astype(np.uint8)).save(labels / f"{t:05d}.png")
    return root
