"""What the ``sam2-jax`` commands share: argument types, the ``--model`` option, reading an image, writing PNGs,
progress lines on stderr (``log``) and the one-line form of an error (``error_line``).

PNGs (and any other output file) are written through ``sam2_jax.utils.atomic.atomic_write``: a file exists
only once it is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_write

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"


def log(msg: str) -> None:
    """A progress line on stderr (stdout stays for results)."""
    print(msg, file=sys.stderr, flush=True)


def error_line(e: BaseException) -> str:
    """``error: <reason>`` on one line: a ``CheckpointError`` (which lists every offending key on its own line)
    joined into one, any other error's first line."""
    from ..checkpoints.errors import CheckpointError

    reason = " ".join(str(e).split()) if isinstance(e, CheckpointError) else str(e).splitlines()[0]
    return f"error: {reason}"


def floats(n: int, what: str):
    """An argparse type: ``n`` comma-separated numbers (``--point 500,375``)."""

    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
        return values

    return parse


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint or Hub id (default {DEFAULT_MODEL})")


def load_image(path: str) -> np.ndarray:
    """An RGB uint8 array, upright by its EXIF orientation; an unreadable file exits with ``error: cannot read
    image ...``."""
    from ..processing.images import read_image

    try:
        return read_image(path, "image")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def save_png(path: str | os.PathLike, array: np.ndarray, palette: bool = False) -> None:
    """Write ``array`` as a PNG atomically, creating the parent directory; ``palette``: an (H, W) label image
    as a DAVIS / YouTube-VOS palette PNG (``processing.palette``; ids up to 255)."""
    from PIL import Image

    from ..processing.palette import palette_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = palette_image(array) if palette else Image.fromarray(array)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
