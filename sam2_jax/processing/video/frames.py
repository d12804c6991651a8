"""Video frames in, model pixels out, one frame at a time: a lazy, LRU-cached frame source.

``VideoFrames`` preprocesses frames exactly as the official ``sam2.utils.misc.load_video_frames`` does for a
directory of JPEG frames: the files ``<int>.jpg`` / ``.jpeg`` (``.JPG`` / ``.JPEG`` too) ordered by the integer
in their names, each converted to RGB and resized straight to (S, S) with PIL's ``resize`` called as the official
calls it (Pillow's default resampling, bicubic for RGB), scaled to [0, 1] and normalised with the ImageNet
mean / std in float32. Output is channels-last.

    VideoFrames.open(video, image_size=S)      a directory path, a video file path, a (N, H, W, 3) uint8 array, a
                                               sequence of (H, W, 3) uint8 arrays / PIL images, an iterator of
                                               them, or a VideoFrames
    VideoFrames.from_file(path, S)             a video file (mp4, webm, avi...) decoded through PyAV (optional:
                                               pip install 'sam2-jax[video]'), see ``files``
    VideoFrames.from_iterator(it, S, num_frames=None)   frames read lazily and once, in order
    VideoFrames.from_pixel_values(px, H, W)    already preprocessed (N, S, S, 3) float32 pixels
    frames.pixel_values(i)                     -> (S, S, 3) float32, read-only; decoded on first use
    frames.image(i)                            -> (H, W, 3) uint8 RGB, the original frame (not cached here)
    frames.num_frames, len(frames), frames.video_height, frames.video_width, frames.image_size, frames.frame_names,
    frames.fps (the file's frame rate; None for directories / arrays / iterators unless given)

Frames are decoded only when asked for and at most ``cache_size`` of them are kept (least recently used out),
so a long video never sits in memory at model resolution. In-memory frames are kept by reference, not copied.
A video file is decoded from the keyframe before the frame asked for, with its own bounded cache of decoded frames
(``files.VideoFileReader``), so walking forward or backward frame by frame decodes about one frame per step.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..images import IMAGENET_MEAN, IMAGENET_STD
from .files import FrameIteratorReader, VideoFileReader, is_video_file_name

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


def _pil(frame: Any) -> Image.Image:
    return frame if isinstance(frame, Image.Image) else Image.fromarray(frame)


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
        decode: Callable[[int], np.ndarray] | None = None,
        cache_size: int = 2,
        frame_names: list[str] | None = None,
        read: Callable[[int], Any] | None = None,
        fps: float | None = None,
    ):
        """``read(i)``: the original frame i (an (H, W, 3) uint8 array or a PIL image); ``decode(i)``: its model
        pixels (by default ``read`` resized and normalised)."""
        self.num_frames = num_frames
        self.video_height = video_height
        self.video_width = video_width
        self.image_size = image_size
        self.frame_names = frame_names
        if fps is not None and not (isinstance(fps, (int, float, np.number)) and 0 < fps < float("inf")):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = None if fps is None else float(fps)
        self._read = read
        self._decode = decode or (lambda i: _normalise(_resize(_pil(read(i)), image_size)))
        self._cache_size = _positive_int(cache_size, "cache_size", minimum=0)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    # ---- constructors ----------------------------------------------------------------------------------------

    @classmethod
    def from_directory(
        cls, path: str | os.PathLike, image_size: int = 1024, cache_size: int = 2, fps: float | None = None
    ) -> VideoFrames:
        """A directory of ``<int>.jpg`` frames; only frame 0's header is read here."""
        image_size = _positive_int(image_size, "image_size")
        directory = os.fspath(path)
        if not os.path.exists(directory):
            raise FileNotFoundError(f"video directory {directory!r} does not exist")
        if not os.path.isdir(directory):
            raise NotADirectoryError(
                f"{directory!r} is not a directory of JPEG frames (<int>.jpg); for a video file use "
                "VideoFrames.from_file (or open)"
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

        def read(i: int) -> Image.Image:
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
                    return image.convert("RGB")
                except Exception as e:
                    raise ValueError(f"cannot decode video frame {paths[i]!r}: {e}") from e

        return cls(num_frames=len(paths), video_height=height, video_width=width, image_size=image_size, read=read,
                   cache_size=cache_size, frame_names=names, fps=fps)  # fmt: skip

    @classmethod
    def from_array(
        cls, frames: Any, image_size: int = 1024, cache_size: int = 2, fps: float | None = None
    ) -> VideoFrames:
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

        return cls(num_frames=len(items), video_height=height, video_width=width, image_size=image_size,
                   read=items.__getitem__, cache_size=cache_size, fps=fps)  # fmt: skip

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, image_size: int = 1024, cache_size: int = 2, fps: float | None = None, **reader
    ) -> VideoFrames:
        """A video file decoded lazily through PyAV (``files.VideoFileReader``; ``reader`` options such as
        ``cache_bytes`` go to it); ``fps`` defaults to the file's frame rate."""
        image_size = _positive_int(image_size, "image_size")
        source = VideoFileReader(path, **reader)
        return cls._from_reader(source, image_size, cache_size, source.fps if fps is None else fps)

    @classmethod
    def _from_reader(cls, source: Any, image_size: int, cache_size: int, fps: float | None) -> VideoFrames:
        """Frames of a ``files`` reader (``num_frames``, ``height``, ``width``, ``frame(i)``)."""
        return cls(num_frames=source.num_frames, video_height=source.height, video_width=source.width,
                   image_size=image_size, read=source.frame, cache_size=cache_size, fps=fps)  # fmt: skip

    @classmethod
    def from_iterator(
        cls, frames: Any, image_size: int = 1024, num_frames: int | None = None, cache_size: int = 2,
        fps: float | None = None,
    ) -> VideoFrames:  # fmt: skip
        """Frames of an iterable ((H, W, 3) uint8 arrays or PIL images), consumed lazily, once and in order
        (``files.FrameIteratorReader``); ``num_frames`` is needed unless it has ``len()``. The first frame is
        read here. A frame asked for again after it left both caches raises ``ValueError``."""
        image_size = _positive_int(image_size, "image_size")
        return cls._from_reader(FrameIteratorReader(frames, num_frames, keep=max(2, cache_size)), image_size,
                                cache_size, fps)  # fmt: skip

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
    def open(cls, video: Any, image_size: int = 1024, cache_size: int = 2, fps: float | None = None) -> VideoFrames:
        """A directory -> ``from_directory``; a file, or a missing path with a video extension -> ``from_file``;
        a ``VideoFrames`` -> itself (its image_size must match); an iterator (not a sequence or array) ->
        ``from_iterator``; anything else -> ``from_array``."""
        if isinstance(video, VideoFrames):
            if video.image_size != image_size:
                raise ValueError(f"the video's frames are {video.image_size}x{video.image_size}, not {image_size}")
            return video
        if isinstance(video, (str, os.PathLike)):
            if os.path.isfile(video) or (not os.path.exists(video) and is_video_file_name(video)):
                return cls.from_file(video, image_size=image_size, cache_size=cache_size, fps=fps)
            return cls.from_directory(video, image_size=image_size, cache_size=cache_size, fps=fps)
        if isinstance(video, Iterator):
            return cls.from_iterator(video, image_size=image_size, cache_size=cache_size, fps=fps)
        return cls.from_array(video, image_size=image_size, cache_size=cache_size, fps=fps)

    # ---- access ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"VideoFrames({self.num_frames} frames, {self.video_width}x{self.video_height} -> "
            f"{self.image_size}x{self.image_size}{'' if self.fps is None else f', {self.fps:g} fps'})"
        )

    def check_index(self, frame_idx: Any) -> int:
        """``frame_idx`` as an int in 0..num_frames-1; TypeError for bools / non-integers, else IndexError."""
        if isinstance(frame_idx, (bool, np.bool_)) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {type(frame_idx).__name__} {frame_idx!r}")
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"frame index {int(frame_idx)} is out of range: the video has frames 0..{len(self) - 1}")
        return int(frame_idx)

    def image(self, frame_idx: int) -> np.ndarray:
        """The original frame ``frame_idx`` as (video_height, video_width, 3) uint8 RGB (for drawing on)."""
        i = self.check_index(frame_idx)
        if self._read is None:
            raise ValueError("these frames were given as preprocessed pixel values: the original frames are unknown")
        return np.asarray(_pil(self._read(i)).convert("RGB"))

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
