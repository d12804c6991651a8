"""Frame sources for ``VideoFrames`` beyond directories and arrays: video files through PyAV, and iterators.

A video file (mp4, webm, avi, mkv... whatever FFmpeg reads) is read frame by frame, by index.

``VideoFileReader(path, cache_bytes=256 MiB)`` opens the file and demuxes it once (no decoding) to index its
frames: each video packet's presentation timestamp, sorted, is one frame, and the key packets split the frames
into groups that decode on their own. Out:

    reader.num_frames, reader.width, reader.height, reader.fps (float or None)
    reader.frame(i)   -> (height, width, 3) uint8 RGB, read-only

Random access seeks to the keyframe of frame ``i``'s group and decodes forward; the decoded frames are kept in an
LRU cache bounded by ``cache_bytes`` (at least 2 frames), and the decoder stays where it stopped. So walking
forward costs one decode per frame (the decoder just continues), and walking backward costs one seek and at most
one group's decode per ``cache`` frames (the frames decoded on the way to frame ``i`` are the ones just before
it). Random access gives exactly the frames sequential access gives.

``FrameIteratorReader(iterable, num_frames=None, keep=2)``: frames of an iterable, consumed lazily and once;
``reader.frame(i)`` reads on up to frame ``i``, keeps the last ``keep`` frames, and raises ``ValueError`` for a
frame that was read and dropped.

PyAV is an optional dependency (``pip install 'sam2-jax[video]'``); it is imported when a reader is made.
Unreadable files raise ``ValueError`` naming the file; a missing file ``FileNotFoundError``.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict

import numpy as np

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .wmv .flv .ts .mts .m2ts .3gp .ogv .gif".split()
)
DEFAULT_CACHE_BYTES = 256 * 2**20


def is_video_file_name(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def import_av():
    try:
        import av
    except ImportError:
        raise ImportError(
            "reading video files needs PyAV, which is not installed: pip install 'sam2-jax[video]' (or pip install av)"
        ) from None
    return av


class VideoFileReader:
    """Frames of a video file by index; see the module docstring."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"video file {self.path!r} does not exist")
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path!r} is a directory, not a video file")
        self._av = import_av()
        container = self._open()
        try:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            self.width, self.height = int(ctx.width), int(ctx.height)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            pts, keys = [], []
            for packet in container.demux(stream):
                if packet.size == 0 or getattr(packet, "is_discard", False):
                    continue  # the flush packet; frames an edit list drops
                if packet.pts is None:
                    raise ValueError(
                        f"cannot read video file {self.path!r}: its frames have no timestamps; extract them first, "
                        "e.g. ffmpeg -i video -q:v 2 -start_number 0 dir/'%05d.jpg'"
                    )
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append(int(packet.pts))
        except ValueError:
            raise
        except Exception as e:  # PyAV's errors: corrupt data, no video stream...
            raise ValueError(f"cannot read video file {self.path!r}: {_reason(e)}") from e
        finally:
            container.close()
        if not pts:
            raise ValueError(f"cannot read video file {self.path!r}: it has no video frames")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"cannot read video file {self.path!r}: frames are {self.width}x{self.height}")
        self._pts = sorted(set(pts))  # frame i is the i-th presentation timestamp
        self._index = {p: i for i, p in enumerate(self._pts)}
        key_frames = sorted({self._index[p] for p in keys} | {0})
        self._group_starts = key_frames  # frame indices where a group (a keyframe) starts
        self.num_frames = len(self._pts)
        frame_bytes = self.width * self.height * 3
        self._capacity = max(2, int(cache_bytes) // frame_bytes)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container = None
        self._decoder = None  # the frames generator, positioned after frame self._next - 1
        self._next = -1
        self.decoded = 0  # frames decoded so far (for tests and curious users)

    def _open(self):
        try:
            return self._av.open(self.path, mode="r")
        except Exception as e:
            raise ValueError(f"cannot read video file {self.path!r}: {_reason(e)}") from e

    def __repr__(self) -> str:
        fps = "unknown fps" if self.fps is None else f"{self.fps:g} fps"
        return f"VideoFileReader({self.path!r}, {self.num_frames} frames, {self.width}x{self.height}, {fps})"

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based, presentation order) as (height, width, 3) uint8 RGB, read-only."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame index {i} is out of range: the video has frames 0..{self.num_frames - 1}")
        cached = self._cache.get(i)
        if cached is not None:
            self._cache.move_to_end(i)
            return cached
        group = self._group_starts[bisect.bisect_right(self._group_starts, i) - 1]
        # the decoder continues when no keyframe lies between it and frame i; else seek to i's keyframe
        if self._decoder is None or not group <= self._next <= i:
            self._seek(group)
        out = self._decode_until(i)
        if out is None and group > 0:  # the seek landed past the keyframe (a file without an index): from the start
            self._seek(0)
            out = self._decode_until(i)
        if out is None:
            raise ValueError(f"cannot decode frame {i} of video file {self.path!r}: the decoder never returned it")
        return out

    def _seek(self, group: int) -> None:
        self.close()
        self._container = self._open()
        stream = self._container.streams.video[0]
        try:
            if group > 0:
                self._container.seek(self._pts[group], stream=stream, backward=True, any_frame=False)
        except Exception as e:
            raise ValueError(f"cannot seek in video file {self.path!r}: {_reason(e)}") from e
        self._decoder = self._container.decode(stream)
        self._next = group

    def _decode_until(self, i: int) -> np.ndarray | None:
        """Decode forward until frame i, caching what is decoded; None if the decoder went past it or ended."""
        try:
            for frame in self._decoder:
                j = self._index.get(frame.pts)
                if j is None:
                    continue
                if j > i and i not in self._cache:
                    self._put(j, frame)
                    self._next = j + 1
                    return None  # landed past frame i
                self._next = max(self._next, j + 1)
                if j > i - self._capacity:  # older frames would be evicted before i arrives
                    self._put(j, frame)
                if j >= i and i in self._cache:
                    self._cache.move_to_end(i)
                    return self._cache[i]
        except Exception as e:
            self.close()
            raise ValueError(f"cannot decode video file {self.path!r}: {_reason(e)}") from e
        self.close()  # end of the stream
        return self._cache.get(i)

    def _put(self, j: int, frame) -> None:
        if j in self._cache:  # decoded again on the way: the same pixels
            self._cache.move_to_end(j)
            return
        rgb = frame.to_ndarray(format="rgb24")
        self.decoded += 1
        rgb.flags.writeable = False
        self._cache[j] = rgb
        self._cache.move_to_end(j)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def close(self) -> None:
        """Close the file (reopened on the next ``frame`` call that needs decoding)."""
        if self._container is not None:
            self._container.close()
        self._container, self._decoder, self._next = None, None, -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _reason(e: Exception) -> str:
    strerror = getattr(e, "strerror", None)  # PyAV's errors: the message without errno and file name
    text = (strerror or str(e)).strip().splitlines()
    return text[0] if text else type(e).__name__


class FrameIteratorReader:
    """Frames of an iterable, read once and in order: ``frame(i)`` consumes the iterable up to frame ``i`` and keeps
    the last ``keep`` frames; asking for a frame that was consumed and dropped raises ``ValueError``.

    Frames are (H, W, 3) uint8 arrays or PIL images (converted to RGB arrays), all of the first frame's size.
    ``num_frames`` is needed unless the iterable has ``len()``; the first frame is read here (for the size).
    """

    def __init__(self, frames, num_frames: int | None = None, keep: int = 2):
        if num_frames is None:
            try:
                num_frames = len(frames)
            except TypeError:
                raise ValueError(
                    "num_frames is needed for frames from an iterator without len(): the tracker must know the "
                    "video's length before it starts"
                ) from None
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
        self.num_frames = int(num_frames)
        self._keep = max(1, int(keep))
        self._iter = iter(frames)
        self._kept: OrderedDict[int, np.ndarray] = OrderedDict()
        self._next = 0
        self.height, self.width = self._advance().shape[:2]

    def _advance(self) -> np.ndarray:
        i = self._next
        try:
            item = next(self._iter)
        except StopIteration:
            raise ValueError(
                f"the frame iterator ended after {i} frames, but num_frames is {self.num_frames}"
            ) from None
        from PIL import Image

        rgb = np.asarray(item.convert("RGB")) if isinstance(item, Image.Image) else np.asarray(item)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
            raise ValueError(f"video frame {i} must be an (H, W, 3) uint8 array or a PIL image, got {rgb.dtype} "
                             f"{rgb.shape}")  # fmt: skip
        if i > 0 and rgb.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"video frame {i} is {rgb.shape[1]}x{rgb.shape[0]} (WxH), but frame 0 is {self.width}x{self.height}: "
                "all frames of a video must have the same size"
            )
        self._kept[i] = rgb
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        self._next = i + 1
        return rgb

    def frame(self, i: int) -> np.ndarray:
        if i in self._kept:
            return self._kept[i]
        if i < self._next:
            raise ValueError(
                f"frame {i} of the frame iterator was read already and is no longer kept (the last {self._keep} "
                "are): an iterator's frames are read once, in order; pass a directory, a video file or an array "
                "for random access"
            )
        while self._next <= i:
            self._advance()
        return self._kept[i]
