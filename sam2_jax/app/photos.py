"""The photos of the annotation server: the top-level image files of DIR, and safe access to them.

``PhotoLibrary(images_dir)``:
  names                    the listing, sorted: regular files (or symlinks that stay inside DIR) directly in DIR
                           whose suffix is one of ``IMAGE_SUFFIXES`` (case-insensitive); hidden files are left out
  path(name) -> Path       the resolved file of a listed name; anything else (``..``, an absolute path, a
                           subdirectory, a symlink leading out of DIR, a file that is not an image, a name not in
                           the listing) raises ``UnknownPhoto`` (a ``KeyError``)
  size(name) -> (H, W)     upright size, from the file's header (EXIF orientation applied), cached
  next_name(name)          the following photo of the listing, or None
  upright_bytes(name)      (bytes, media type) when the photo has an EXIF rotation (re-encoded as PNG; the last
                           ``UPRIGHT_KEPT`` kept), else None: the file itself can be sent as it is
  read(name) -> (H, W, 3) uint8 RGB, upright (``processing.images.read_image``)

Two photos with one stem (``a.jpg`` and ``a.png``) would write one ``masks/a.png``: ``PhotoLibrary`` refuses them
with a one-line ``ValueError``, as it refuses a DIR that is not a directory or holds no photo.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
ORIENTATION_TAG = 0x0112
UPRIGHT_KEPT = 4  # re-encoded rotated photos kept in memory


class UnknownPhoto(KeyError):
    """A requested name that is not a photo of the listing."""

    def __str__(self) -> str:
        return f"no photo {self.args[0]!r} in the listing"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _orientation(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return int(im.getexif().get(ORIENTATION_TAG, 1) or 1)


class PhotoLibrary:
    """See the module docstring."""

    def __init__(self, images_dir: str | os.PathLike):
        root = Path(images_dir).expanduser()
        if not root.is_dir():
            raise ValueError(f"{root} is not a directory of photos")
        self.root = root.resolve()
        files: dict[str, Path] = {}
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            resolved = Path(os.path.realpath(entry.path))
            if _inside(resolved, self.root) and resolved.is_file():
                files[entry.name] = resolved
        if not files:
            raise ValueError(f"{root} holds no photo ({', '.join(IMAGE_SUFFIXES)})")
        stems: dict[str, str] = {}
        for name in sorted(files):
            stem = Path(name).stem
            if stem in stems:
                raise ValueError(f"{root}: photos {stems[stem]} and {name} have one stem (their masks would collide)")
            stems[stem] = name
        self.names: list[str] = sorted(files)
        self._files = files
        self._index = {n: i for i, n in enumerate(self.names)}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._upright: dict[str, tuple[bytes, str]] = {}  # the last few re-encoded photos
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._files

    def __len__(self) -> int:
        return len(self.names)

    def path(self, name: str) -> Path:
        """The resolved file of a listed photo; re-checked against DIR on every call (a link may have moved)."""
        if name not in self:
            raise UnknownPhoto(name)
        resolved = Path(os.path.realpath(self.root / name))
        if resolved != self._files[name] or not resolved.is_file():
            raise UnknownPhoto(name)
        return resolved

    def size(self, name: str) -> tuple[int, int]:
        """(height, width) of the upright photo, from its header."""
        with self._lock:
            if name in self._sizes:
                return self._sizes[name]
        from PIL import Image

        path = self.path(name)
        with Image.open(path) as im:
            w, h = im.size
            orientation = int(im.getexif().get(ORIENTATION_TAG, 1) or 1)
        size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        with self._lock:
            self._sizes[name] = size
        return size

    def next_name(self, name: str) -> str | None:
        i = self._index[name] + 1
        return self.names[i] if i < len(self.names) else None

    def media_type(self, name: str) -> str:
        return MEDIA_TYPES[Path(name).suffix.lower()]

    def upright_bytes(self, name: str) -> tuple[bytes, str] | None:
        """The photo re-encoded upright as PNG when it has an EXIF rotation or flip, else None."""
        path = self.path(name)
        if _orientation(path) in (1, 0):
            return None
        with self._lock:
            if name in self._upright:
                return self._upright[name]
        from ..processing.images import open_upright

        buf = io.BytesIO()
        open_upright(path).save(buf, format="PNG", compress_level=1)
        with self._lock:
            self._upright[name] = (buf.getvalue(), "image/png")
            while len(self._upright) > UPRIGHT_KEPT:
                self._upright.pop(next(iter(self._upright)))
        return self._upright.get(name) or (buf.getvalue(), "image/png")

    def read(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB, upright."""
        from ..processing.images import read_image

        return read_image(self.path(name), name)
