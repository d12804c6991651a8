"""Request checking for the annotation server: JSON bodies in, typed values out, or an ``ApiError``.

``ApiError(status, message)`` is answered as ``{"error": message}`` with that status. ``parse_json(raw bytes)``
-> a JSON object (dict) or 400. The field readers take the body dict and a field name:
  number(body, key, lo, hi, default)        int or float (not bool) in [lo, hi]
  integer(body, key, lo, hi, default)       int (not bool)
  boolean(body, key, default)               bool
  string(body, key, default)                str
  points(body, size (H, W))  -> ((N, 2) float32 | None, (N,) int32 | None), checked: N >= 1, inside the photo,
                                labels 0/1, as many labels as points
  box(body, size)            -> (4,) float32 [x0, y0, x1, y1] | None, inside the photo, x0 <= x1, y0 <= y1
  mask_ref(body)             -> (prediction id, index) | None from {"mask_input": {"prediction", "index"}}
  decode_mask(body, size)    -> (H, W) bool from "rle" ({"size", "counts": str | [int]}) or "png" (base64)
Coordinates may lie anywhere in [0, W] x [0, H] (the corners of the photo included).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from typing import Any

import numpy as np

MAX_BODY = 1 << 20  # bytes
MISSING = object()


class ApiError(Exception):
    """A refused request: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


def parse_json(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"body of {len(raw)} bytes is over the {MAX_BODY} byte limit")
    if not raw.strip():
        raise ApiError(400, "empty body: a JSON object is expected")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _get(body: dict, key: str, default: Any):
    value = body.get(key, MISSING)
    if value is MISSING or value is None:
        if default is MISSING:
            raise ApiError(400, f"missing field {key!r}")
        return default
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(body: dict, key: str, lo: float = -math.inf, hi: float = math.inf, default: Any = MISSING):
    value = _get(body, key, default)
    if value is default and default is not MISSING:
        return value
    if not _is_number(value):
        raise ApiError(400, f"{key!r} must be a number, got {json.dumps(value)[:40]}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{key!r} = {value} is outside [{lo}, {hi}]")
    return value


def integer(body: dict, key: str, lo: int = -(2**62), hi: int = 2**62, default: Any = MISSING):
    value = _get(body, key, default)
    if value is default and default is not MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key!r} must be an integer, got {json.dumps(value)[:40]}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{key!r} = {value} is outside [{lo}, {hi}]")
    return value


def boolean(body: dict, key: str, default: Any = MISSING):
    value = _get(body, key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{key!r} must be true or false, got {json.dumps(value)[:40]}")
    return value


def string(body: dict, key: str, default: Any = MISSING):
    value = _get(body, key, default)
    if value is default and default is not MISSING:
        return value
    if not isinstance(value, str):
        raise ApiError(400, f"{key!r} must be a string, got {json.dumps(value)[:40]}")
    return value


def _inside(x: float, y: float, size: tuple[int, int]) -> bool:
    return 0 <= x <= size[1] and 0 <= y <= size[0]


def points(body: dict, size: tuple[int, int]):
    pts, labels = body.get("points"), body.get("labels")
    if pts is None and labels is None:
        return None, None
    if not isinstance(pts, list) or not pts:
        raise ApiError(400, "'points' must be a non-empty list of [x, y]")
    if not all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in pts):
        raise ApiError(400, "'points' must be a list of [x, y] number pairs")
    if labels is None:
        labels = [1] * len(pts)
    if not isinstance(labels, list) or len(labels) != len(pts):
        raise ApiError(400, f"'labels' must be a list of {len(pts)} labels, one per point")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) for v in labels):
        raise ApiError(400, "'labels' must be 1 (positive) or 0 (negative)")
    for x, y in pts:
        if not _inside(x, y, size):
            raise ApiError(400, f"point [{x}, {y}] is outside the photo ({size[1]} x {size[0]})")
    if len(pts) > 64:
        raise ApiError(400, f"{len(pts)} points: at most 64")
    return np.asarray(pts, np.float32), np.asarray(labels, np.int32)


def box(body: dict, size: tuple[int, int]):
    value = body.get("box")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4 or not all(_is_number(v) for v in value):
        raise ApiError(400, "'box' must be [x0, y0, x1, y1], four numbers")
    x0, y0, x1, y1 = value
    if x1 < x0 or y1 < y0:
        raise ApiError(400, f"box {value}: x1 < x0 or y1 < y0")
    if not (_inside(x0, y0, size) and _inside(x1, y1, size)):
        raise ApiError(400, f"box {value} is outside the photo ({size[1]} x {size[0]})")
    return np.asarray(value, np.float32)


def mask_ref(body: dict):
    value = body.get("mask_input")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, '\'mask_input\' must be {"prediction": id, "index": k}')
    return string(value, "prediction"), integer(value, "index", 0, 2, default=0)


def decode_mask(body: dict, size: tuple[int, int]) -> np.ndarray:
    """The mask of an accept made elsewhere: ``rle`` (COCO, compressed or not) or ``png`` (base64, nonzero = in)."""
    from ..processing.rle import rle_to_mask

    if body.get("rle") is not None:
        rle = body["rle"]
        ok = isinstance(rle, dict) and isinstance(rle.get("size"), list) and len(rle["size"]) == 2
        if not ok or not isinstance(rle.get("counts"), (str, list)):
            raise ApiError(400, '\'rle\' must be {"size": [h, w], "counts": str or [int]}')
        if [rle["size"][0], rle["size"][1]] != [size[0], size[1]]:
            raise ApiError(400, f"'rle' size {rle['size']} is not the photo's [{size[0]}, {size[1]}]")
        if isinstance(rle["counts"], list) and not all(isinstance(c, int) and c >= 0 for c in rle["counts"]):
            raise ApiError(400, "'rle' counts must be non-negative integers")
        try:
            return rle_to_mask({"size": [size[0], size[1]], "counts": rle["counts"]})
        except (ValueError, UnicodeError) as e:
            raise ApiError(400, f"bad 'rle': {e}") from None
    if body.get("png") is not None:
        from PIL import Image

        text = string(body, "png")
        try:
            with Image.open(io.BytesIO(base64.b64decode(text.split(",")[-1], validate=True))) as im:
                arr = np.asarray(im.convert("L")) > 0
        except (binascii.Error, OSError, ValueError, SyntaxError) as e:
            raise ApiError(400, f"'png' is not a base64 PNG: {e}") from None
        if arr.shape != tuple(size):
            raise ApiError(400, f"'png' is {arr.shape[1]} x {arr.shape[0]}, the photo {size[1]} x {size[0]}")
        return arr
    raise ApiError(400, "give 'prediction' and 'index', 'proposal', 'rle' or 'png'")
