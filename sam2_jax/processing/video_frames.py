"""Video frames in, model pixels out, one frame at a time: a lazy, LRU-cached frame source.

``VideoFrames`` preprocesses frames exactly as the official ``sam2.utils.misc.load_video_frames`` does for a
directory of JPEG frames: the files ``<int>.jpg`` / ``.jpeg`` (``.JPG`` / ``.JPEG`` too) ordered by the integer
in their names, each converted to RGB and resized straight to (S, S) with PIL's ``resize`` called as the official
calls it (Pillow's default resampling, bicubic for RGB), scaled to [0, 1] and normalised with the ImageNet
mean / std in float32. Output is channels-last.

    VideoFrames.open(video, image_size=S)      a directory path, a (N, H, W, 3) uint8 array, a sequence of
                                               (H, W, 3) uint8 arrays / PIL images, or a VideoFrames
    VideoFrames.from_pixel_values(px, H, W)    already preprocessed (N, S, S, 3) float32 pixels
    frames.pixel_values(i)                     -> (S, S, 3) float32, read-only; decoded on first use
    frames.num_frames, len(frames), frames.video_height, frames.video_width, frames.image_size, frames.frame_names

Frames are decoded only when asked for and at most ``cache_size`` of them are kept (least recently used out),
so a long video never sits in memory at model resolution. In-memory frames are kept by reference, not copied.
Only NumPy and PIL are used here.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .images import IMAGENET_MEAN, IMAGENET_STD

_MEAN = np.asarray(IMAGENET_MEAN, np.float32)
_STD = np.asarray(IMAGENET_STD, np.float32)
_JPEG_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG")  # the official filter, exactly


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (S, S, 3) float32: /255 in float64, then float32 mean / std, in the official order."""
    out = (rgb / 255.0).astype(np.float32)
    out -= _MEAN
    out /= _STD
    return out


def _resize(image: Image.Image, image_size: int) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((image_size, image_size)))  # as the official calls it


class VideoFrames:
    """Frames of one video, decoded lazily (only when asked), cached LRU-bounded (cache_size frames, default 2).

    Build it with ``from_directory``, ``from_array``, ``from_pixel_values`` or ``open``; ``pixel_values(i)``
    gives frame ``i`` as (image_size, image_size, 3) float32, normalised, read-only.
    """

    def __init__(
        self,
        *,
        num_frames: int,
        video_height: int,
        video_width: int,
        image_size: int,
        decode: Callable[[int], np.ndarray],
        cache_size: int = 2,
        frame_names: list[str] | None = None,
    ):
        self.num_frames = num_frames
        self.video_height = video_height
        self.video_width = video_width
        self.image_size = image_size
        self.frame_names = frame_names
        self._decode = decode
        self._cache_size = _positive_int(cache_size, "cache_size", minimum=0)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # ---- constructors ----------------------------------------------------------------------------------------

    @classmethod
    def from_directory(cls, path: str | os.PathLike, image_size: int = 1024, cache_size: int = 2) -> VideoFrames:
        """A directory of ``<int>.jpg`` frames; only frame 0's header is read here."""
        image_size = _positive_int(image_size, "image_size")
        directory = os.fspath(path)
        if not os.path.exists(directory):
            raise FileNotFoundError(f"video directory {directory!r} does not exist")
        if not os.path.isdir(directory):
            raise NotADirectoryError(
                f"{directory!r} is not a directory: only a directory of JPEG frames (<int>.jpg) is supported; "
                "extract a video file's frames first, e.g. ffmpeg -i video.mp4 -q:v 2 -start_number 0 dir/'%05d.jpg'"
            )
        with os.scandir(directory) as entries:
            listing = sorted(e.name for e in entries)
        names = [n for n in listing if os.path.splitext(n)[1] in _JPEG_EXTENSIONS]
        if not names:
            shown = ", ".join(listing[:5]) + (f", ... ({len(listing)} files)" if len(listing) > 5 else "")
            raise ValueError(
                f"no <int>.jpg frames found in {directory!r}; it contains: {shown or 'nothing (it is empty)'}"
            )
        stems = {}
        for name in names:
            try:
                stems[name] = int(os.path.splitext(name)[0])
            except ValueError:
                raise ValueError(
                    f"video frame {name!r} in {directory!r} is not named <int>.jpg (e.g. 00000.jpg)"
                ) from None
        names.sort(key=lambda n: (stems[n], n))  # by frame number, as the official (ties by name)
        paths = [os.path.join(directory, n) for n in names]
        try:
            with Image.open(paths[0]) as first:  # header only
                width, height = first.size
        except Exception as e:
            raise ValueError(f"cannot read video frame {paths[0]!r}: {e}") from e

        def decode(i: int) -> np.ndarray:
            try:
                image = Image.open(paths[i])
            except Exception as e:
                raise ValueError(f"cannot read video frame {paths[i]!r}: {e}") from e
            with image:
                if image.size != (width, height):
                    raise ValueError(
                        f"video frame {paths[i]!r} is {image.size[0]}x{image.size[1]} (WxH), but the first frame "
                        f"{names[0]!r} is {width}x{height}: all frames of a video must have the same size"
                    )
                try:
                    rgb = _resize(image, image_size)
                except Exception as e:
                    raise ValueError(f"cannot decode video frame {paths[i]!r}: {e}") from e
            return _normalise(rgb)

        return cls(
            num_frames=len(paths),
            video_height=height,
            video_width=width,
            image_size=image_size,
            decode=decode,
            cache_size=cache_size,
            frame_names=names,
        )

    @classmethod
    def from_array(cls, frames: Any, image_size: int = 1024, cache_size: int = 2) -> VideoFrames:
        """A (N, H, W, 3) uint8 array, or a sequence of (H, W, 3) uint8 arrays / PIL images, all of one size;
        kept by reference and resized frame by frame the same PIL way as files."""
        image_size = _positive_int(image_size, "image_size")
        if isinstance(frames, (str, bytes, os.PathLike)):
            raise TypeError(f"from_array takes frames, not a path: {frames!r}; use from_directory or open")
        if isinstance(frames, Image.Image):
            raise TypeError("from_array takes a sequence of frames, not a single PIL image: pass [image]")
        if isinstance(frames, np.ndarray) or (hasattr(frames, "__array__") and not isinstance(frames, Sequence)):
            array = np.asarray(frames)
            if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
                raise ValueError(f"video frames must be a (N, H, W, 3) uint8 array, got {array.dtype} {array.shape}")
            items: Sequence[Any] = array
        else:
            items = [f if isinstance(f, Image.Image) else np.asarray(f) for f in frames]
            for i, f in enumerate(items):
                if not isinstance(f, Image.Image) and (f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8):
                    raise ValueError(f"video frame {i} must be an (H, W, 3) uint8 array, got {f.dtype} {f.shape}")
        if len(items) == 0:
            raise ValueError("the video has no frames (an empty array or sequence)")
        if isinstance(items, np.ndarray):
            sizes = [(items.shape[2], items.shape[1])]
        else:
            sizes = [f.size if isinstance(f, Image.Image) else (f.shape[1], f.shape[0]) for f in items]
        width, height = sizes[0]
        if width == 0 or height == 0:
            raise ValueError(f"video frames are empty: {width}x{height} (WxH)")
        for i, size in enumerate(sizes):
            if size != (width, height):
                raise ValueError(
                    f"video frame {i} is {size[0]}x{size[1]} (WxH), but frame 0 is {width}x{height}: "
                    "all frames of a video must have the same size"
                )

        def decode(i: int) -> np.ndarray:
            f = items[i]
            return _normalise(_resize(f if isinstance(f, Image.Image) else Image.fromarray(f), image_size))

        return cls(
            num_frames=len(items),
            video_height=height,
            video_width=width,
            image_size=image_size,
            decode=decode,
            cache_size=cache_size,
        )

    @classmethod
    def from_pixel_values(cls, pixel_values: Any, video_height: int, video_width: int) -> VideoFrames:
        """Already preprocessed (N, S, S, 3) float pixels (channels-last); frames are read-only views of them."""
        array = np.asarray(pixel_values)
        if (
            array.ndim != 4
            or array.shape[1] != array.shape[2]
            or array.shape[-1] != 3
            or not np.issubdtype(array.dtype, np.floating)
        ):
            raise ValueError(f"pixel values must be a (N, S, S, 3) float array, got {array.dtype} {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"pixel values have no frames or no pixels: shape {array.shape}")
        array = array.astype(np.float32, copy=False)

        def decode(i: int) -> np.ndarray:
            return array[i]

        return cls(
            num_frames=array.shape[0],
            video_height=_positive_int(video_height, "video_height"),
            video_width=_positive_int(video_width, "video_width"),
            image_size=array.shape[1],
            decode=decode,
            cache_size=0,  # views: nothing to cache
        )

    @classmethod
    def open(cls, video: Any, image_size: int = 1024, cache_size: int = 2) -> VideoFrames:
        """A directory path -> ``from_directory``; a ``VideoFrames`` -> itself (its image_size must match);
        anything else -> ``from_array``."""
        if isinstance(video, VideoFrames):
            if video.image_size != image_size:
                raise ValueError(f"the video's frames are {video.image_size}x{video.image_size}, not {image_size}")
            return video
        if isinstance(video, (str, os.PathLike)):
            return cls.from_directory(video, image_size=image_size, cache_size=cache_size)
        return cls.from_array(video, image_size=image_size, cache_size=cache_size)

    # ---- access ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"VideoFrames({self.num_frames} frames, {self.video_width}x{self.video_height} -> "
            f"{self.image_size}x{self.image_size})"
        )

    def check_index(self, frame_idx: Any) -> int:
        """``frame_idx`` as an int in 0..num_frames-1; TypeError for bools / non-integers, else IndexError."""
        if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(frame_idx).__name__} {frame_idx!r}")
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"frame index {int(frame_idx)} is out of range: the video has frames 0..{len(self) - 1}")
        return int(frame_idx)

    def pixel_values(self, frame_idx: int) -> np.ndarray:
        """Frame ``frame_idx`` as (image_size, image_size, 3) float32, normalised, read-only; decoded once
        while it stays among the ``cache_size`` most recently used frames. A failed decode changes nothing."""
        i = self.check_index(frame_idx)
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        out = self._decode(i).view()
        out.flags.writeable = False
        if self._cache_size:
            self._cache[i] = out
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out
