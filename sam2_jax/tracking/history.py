"""Where a video state keeps the outputs of every tracked frame: the bulky arrays in an unlinked temporary file.

A correction click on a tracked frame, or a propagation that starts inside tracked frames, needs what the
official predictor keeps for every frame it tracked (``output_dict_per_obj``): the frame's low-resolution mask
logits (S/4 x S/4 float32, 256 KB per object at 1024 px: the previous mask of a correction) and its memory
features (S/16 x S/16 x 64, 512 KB per object in bfloat16: the bank of the frames next to it). Kept in memory
that is ~0.8 MB per object and frame, 8 GB for 10,000 frames.

``FrameHistory`` keeps those two arrays in a file instead, and only a ``Spilled`` handle (offset, shape, dtype;
~100 bytes) in memory; pointers (1 KB) and scores stay in memory. It is:
  - one temporary file per array size, unlinked as it is created (nothing is left behind, even after kill -9),
    in ``dir`` (default: the system's temporary folder);
  - made of fixed-size slots: a slot is given back when the last handle to it is dropped (a re-tracked frame's
    old record, a removed object), and reused, so the file grows with the frames tracked, not with the calls;
  - read with one ``pread`` per array (from the page cache when it is warm: ~0.1 ms for 512 KB).
``FrameHistory.spill(record)`` moves a ``FrameRecord``'s mask and features into the file; reading
``record.low_res_mask`` / ``record.features`` loads them back (a fresh, writable array each time).
Thread-safe: slots can be given back by the garbage collector on any thread.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref

import numpy as np


class _SlotFile:
    """Fixed-size slots in one unlinked temporary file."""

    def __init__(self, nbytes: int, dir):
        self.nbytes = nbytes
        self.file = tempfile.TemporaryFile(dir=dir)
        self.fd = self.file.fileno()
        self.free: list[int] = []
        self.count = 0  # slots ever made: the file is count x nbytes
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            if self.free:
                return self.free.pop()
            self.count += 1
            return self.count - 1

    def give_back(self, slot: int) -> None:
        with self.lock:
            self.free.append(slot)

    def write(self, slot: int, data: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))  # bfloat16 has no buffer format
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], slot * self.nbytes + done)

    def read(self, slot: int, shape, dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], slot * self.nbytes + done)
            if n == 0:
                raise OSError("the history file ended early")
            done += n
        return out


class Spilled:
    """One array in a ``FrameHistory`` file; its slot is given back when this handle is dropped."""

    __slots__ = ("_file", "slot", "shape", "dtype", "__weakref__")

    def __init__(self, file: _SlotFile, array: np.ndarray):
        self._file, self.shape, self.dtype = file, array.shape, array.dtype
        self.slot = file.take()
        file.write(self.slot, array)
        weakref.finalize(self, file.give_back, self.slot)

    def load(self) -> np.ndarray:
        return self._file.read(self.slot, self.shape, self.dtype)

    @property
    def nbytes(self) -> int:
        return self._file.nbytes


class FrameHistory:
    """The spill files of one video state; see the module docstring."""

    def __init__(self, dir: str | os.PathLike | None = None):
        self.dir = None if dir is None else os.fspath(dir)
        self._files: dict[int, _SlotFile] = {}
        self._lock = threading.Lock()

    def _file(self, nbytes: int) -> _SlotFile:
        with self._lock:
            if nbytes not in self._files:
                self._files[nbytes] = _SlotFile(nbytes, self.dir)
            return self._files[nbytes]

    def put(self, array) -> Spilled:
        array = np.asarray(array)
        return Spilled(self._file(array.nbytes), array)

    def spill(self, record):
        """Move ``record``'s mask logits and memory features (those present) into the file; returns ``record``."""
        for name in ("low_res_mask", "features"):
            value = record.stored(name)
            if isinstance(value, np.ndarray):
                record.set_stored(name, self.put(value))
        return record

    def disk_bytes(self) -> int:
        """Bytes of the files (slots in use and free ones)."""
        return sum(f.count * f.nbytes for f in self._files.values())

    def used_bytes(self) -> int:
        """Bytes of the slots in use."""
        return sum((f.count - len(f.free)) * f.nbytes for f in self._files.values())

    def close(self) -> None:
        for f in self._files.values():
            f.file.close()
        self._files.clear()


__all__ = ["FrameHistory", "Spilled"]
