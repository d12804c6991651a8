"""``processing/images.py``: photos read from a path come out upright (EXIF orientation), as transformers'
``load_image`` makes them, on every path the package reads a photo from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2_jax.processing.images import open_upright, read_image

ORIENTATION = 0x0112


def _upright(h=30, w=40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_rotated(path, upright: np.ndarray, orientation: int, transpose) -> None:
    """Store the pixels as a camera would (``transpose`` of the upright image) with the EXIF tag that undoes it."""
    stored = Image.fromarray(upright).transpose(transpose)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored.save(path, exif=exif.tobytes())


@pytest.mark.parametrize(
    "orientation, transpose",
    [
        (6, Image.Transpose.ROTATE_90),
        (8, Image.Transpose.ROTATE_270),
        (3, Image.Transpose.ROTATE_180),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],  # fmt: skip
)
def test_exif_orientation_is_applied(tmp_path, orientation, transpose):
    upright = _upright()
    path = tmp_path / "photo.png"  # lossless, so that the pixels can be compared exactly
    _save_rotated(path, upright, orientation, transpose)
    with Image.open(path) as raw:
        assert raw.getexif()[ORIENTATION] == orientation
        assert np.asarray(raw).shape != upright.shape or orientation in (2, 3)
    np.testing.assert_array_equal(read_image(path, "photo"), upright)
    assert open_upright(path).size == (40, 30)


def test_phone_photo_on_every_path(tmp_path):
    """A sideways-stored JPEG (orientation 6) as the command line and the mask generator read it: (H, W) as shown."""
    from sam2_jax.cli.common import load_image

    yy, xx = np.mgrid[0:80, 0:53]
    upright = np.stack([yy * 3, xx * 4, 255 - yy * 3], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it
    path = tmp_path / "phone.jpg"
    _save_rotated(path, upright, 6, Image.Transpose.ROTATE_90)
    for rgb in (read_image(path, "phone"), load_image(str(path))):
        assert rgb.shape == (80, 53, 3)
        assert np.abs(rgb.astype(int) - upright).mean() < 4  # JPEG noise, not a rotated or flipped image
    no_tag = tmp_path / "plain.png"
    Image.fromarray(upright).save(no_tag)
    np.testing.assert_array_equal(read_image(no_tag, "plain"), upright)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"no image here")
    with pytest.raises(ValueError, match=r"photo: cannot read image .*not_an_image\.jpg"):
        read_image(bad, "photo")
