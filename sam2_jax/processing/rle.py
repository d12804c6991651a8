"""Run-length encoding of masks, with the semantics of the official ``sam2.utils.amg`` and pycocotools.

  mask_to_rle(masks (N, H, W) bool)            -> N uncompressed RLEs {"size": [H, W], "counts": [int]}
                                                  ((N, W, H) with ``transposed=True``)
  rle_to_mask(rle)                             -> (H, W) bool (uncompressed or COCO-compressed RLE)
  area_from_rle(rle)                           -> int
  coco_encode_rle(rle) / coco_decode_rle(rle)  -> COCO's compressed string RLE and back (no pycocotools)

RLE counts run over the mask in column-major (Fortran) order and start with a background run (0 when the
first pixel is foreground), the pycocotools convention. Vectorised over masks and runs; the per-mask dicts
are assembled in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _flatnonzero(x: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a 1-D bool array, scanning 8 bytes at a time (change points are sparse)."""
    n = x.size
    padded = np.zeros(-(-n // 8) * 8, np.uint8)
    padded[:n] = x.view(np.uint8)
    words = np.flatnonzero(padded.view(np.uint64))
    sub = np.nonzero(padded.reshape(-1, 8)[words])
    return words[sub[0]] * 8 + sub[1]


def mask_to_rle(masks, transposed: bool = False) -> list[dict[str, Any]]:
    """Masks (N, H, W) bool -> N uncompressed RLEs in column-major order (``mask_to_rle_pytorch``'s format).

    ``transposed=True`` takes the masks as (N, W, H), already in column-major order (saves a copy)."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    b, h, w = masks.shape
    if transposed:
        h, w = w, h
    n = h * w
    if b == 0:
        return []
    if n == 0:
        return [{"size": [h, w], "counts": []} for _ in range(b)]
    flat = np.ascontiguousarray(masks if transposed else masks.transpose(0, 2, 1)).reshape(-1)
    change = _flatnonzero(flat[1:] != flat[:-1])  # over all masks end to end
    change = change[(change + 1) % n != 0]  # drop the steps from one mask to the next
    rows, cols = np.divmod(change, n)  # sorted by mask, then position
    n_changes = np.bincount(rows, minlength=b)
    # run boundaries of every mask laid end to end: 0, change + 1 ..., n
    per_mask = n_changes + 2
    ends = np.cumsum(per_mask)
    starts = ends - per_mask
    bounds = np.empty(int(ends[-1]), np.int64)
    bounds[starts] = 0
    bounds[ends - 1] = n
    rank = np.arange(len(rows)) - (np.cumsum(n_changes) - n_changes)[rows]
    bounds[starts[rows] + 1 + rank] = cols + 1
    runs = np.diff(bounds).tolist()  # the entries at ends[:-1] - 1 straddle two masks and are skipped
    first_fg = flat[::n].tolist()
    return [
        {"size": [h, w], "counts": ([0] if fg else []) + runs[s : e - 1]}
        for fg, s, e in zip(first_fg, starts.tolist(), ends.tolist(), strict=True)
    ]


def _counts(rle: dict[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_decode_rle(rle)["counts"]
    return np.asarray(counts, np.int64)


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """An RLE (uncompressed, or COCO-compressed string counts) -> (H, W) bool."""
    h, w = rle["size"]
    counts = _counts(rle)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts cover {int(counts.sum())} pixels, not {h} x {w}")
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(w, h).T


def area_from_rle(rle: dict[str, Any]) -> int:
    """Foreground pixels of an RLE (the odd runs)."""
    return int(_counts(rle)[1::2].sum())


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO's compressed RLE {"size": [H, W], "counts": str}, as ``pycocotools.mask``'s
    ``frPyObjects`` writes it: each count (from the fourth on, minus the count two before) in a LEB128-like
    code of 5 data bits per character, bit 5 flagging a following character, offset by ASCII 48."""
    h, w = uncompressed_rle["size"]
    cnts = np.asarray(uncompressed_rle["counts"], np.int64) & 0xFFFFFFFF  # pycocotools stores uint32
    x = cnts.copy()
    x[3:] -= cnts[1:-2]
    chars, active = [], np.ones(len(x), bool)
    while active.any():
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, as for the C long
        more = np.where(c & 0x10, x != -1, x != 0)
        chars.append(np.where(active, np.where(more, c | 0x20, c) + 48, 0))
        active &= more
    table = np.stack(chars, axis=1) if chars else np.zeros((0, 1), np.int64)
    return {"size": [h, w], "counts": table[table > 0].astype(np.uint8).tobytes().decode("ascii")}


def coco_decode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """COCO's compressed RLE (str or bytes counts) -> the uncompressed RLE (``rleFrString``)."""
    h, w = rle["size"]
    s = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else bytes(rle["counts"])
    code = np.frombuffer(s, np.uint8).astype(np.int64) - 48
    if code.size == 0:
        return {"size": [h, w], "counts": []}
    if np.any((code < 0) | (code > 63)):
        raise ValueError("not a COCO RLE string: characters outside '0'..'o'")
    last = (code & 0x20) == 0
    if not last[-1]:
        raise ValueError("truncated COCO RLE string")
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(len(code)) - starts[group]
    x = np.add.reduceat((code & 0x1F) << (5 * k), starts)
    n_chars = np.diff(np.append(starts, len(code)))
    negative = (code[last] & 0x10) != 0
    x = np.where(negative, x | (-1 << (5 * n_chars)), x)
    cnts = x.copy()  # cnts[m] = x[m] + cnts[m - 2] for m > 2: two interleaved running sums
    cnts[1::2] = np.cumsum(x[1::2])
    cnts[2::2] = np.cumsum(x[2::2])
    return {"size": [h, w], "counts": (cnts & 0xFFFFFFFF).tolist()}
