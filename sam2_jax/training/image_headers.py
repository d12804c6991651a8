"""Image sizes from file headers, shared by the directory and COCO datasets (``data.py``, ``coco.py``).

header_size(path, mode=False) -> (H, W) once upright by EXIF orientation (with ``mode``: ((H, W), PIL mode));
      an unreadable file raises ``ValueError`` naming it. No pixel is decoded.
"""

from __future__ import annotations

import os


def header_size(path: str | os.PathLike, mode: bool = False):
    """(height, width) of an image file once turned upright by its EXIF orientation, from its header only
    (with ``mode=True``: ((height, width), PIL mode))."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            (w, h), pil_mode = im.size, im.mode
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e
    size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    return (size, pil_mode) if mode else size
