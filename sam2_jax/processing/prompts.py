"""Prompts, one path: validation, scaling to the model's frame, labels, box encoding, bucket padding.

Every front end (``Sam2Processor``, the image predictor, the automatic mask generator, the batch segmenter's
streaming driver) turns prompts into model inputs here:

  check_points(xy (..., 2), (H, W), name) / check_boxes(boxes (..., 4), (H, W), name)
        raise ``ValueError`` naming the first bad entry by its index path (non-finite, outside the image,
        x2 < x1 or y2 < y1)
  to_model_frame(coords (..., 2) or (..., 4), (H, W), S) -> float32 coords in the S x S model frame,
        x * float32(S / W), y * float32(S / H): bit for bit transformers' processor (THE scaling)
  encode(points, labels, boxes, size=(H, W), image_size=S)  the official predictor's shapes -> ``Prompts``:
        points (N, 2) or (P, N, 2), labels (N,) or (P, N), boxes (4,) or (P, 4), original pixels
  from_processor(out, i)  image i of ``Sam2Processor.process_prompts`` output -> ``Prompts``
  as_corner_points(prompts)  boxes as two leading corner points (labels 2, 3): see its docstring
  pad_batch([Prompts] * B, n_prompts, n_points) -> dict of model inputs, padded once:
        input_points (B, n_prompts, n_points, 2) float32, input_labels (B, n_prompts, n_points) int32,
        prompt_mask (B, n_prompts, n_points) bool (False on padding: masked out of the decoder's attention),
        input_boxes (B, n_prompts, 4) float32 when the prompts have boxes
  bucket(n, minimum)  the padding rule: the smallest of ``PROMPT_BUCKETS`` >= max(n, minimum) (streaming uses
        ``minimum=MIN_PROMPT_BUCKET``)

Labels: ``POSITIVE_LABEL`` 1, ``NEGATIVE_LABEL`` 0, ``BOX_CORNER_LABELS`` (2, 3), and the prompt encoder's
``NOT_A_POINT_LABEL`` (-1, bucket padding) and ``PAD_LABEL`` (-10, transformers' padding, which still attends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modeling.prompt_encoder import NOT_A_POINT_LABEL, PAD_LABEL

PROMPT_BUCKETS: tuple[int, ...] = (1, 4, 16, 64, 256, 1024, 4096)  # one compile covers 2-4 clicks, 5-16...
# the video tracker's objects and conditioning frames: each costs a full memory attention (or 4096 memory tokens),
# so these buckets are finer (at most a third padding) at the price of a few more compiles
TRACKING_BUCKETS: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
MIN_PROMPT_BUCKET = 4  # streaming pads objects and points per object to at least this many
POSITIVE_LABEL = 1
NEGATIVE_LABEL = 0
BOX_CORNER_LABELS = (2, 3)  # the prompt encoder's labels of a box's top-left and bottom-right corner

__all__ = [
    "PROMPT_BUCKETS",
    "TRACKING_BUCKETS",
    "MIN_PROMPT_BUCKET",
    "POSITIVE_LABEL",
    "NEGATIVE_LABEL",
    "BOX_CORNER_LABELS",
    "NOT_A_POINT_LABEL",
    "PAD_LABEL",
    "Prompts",
    "bucket",
    "scale_factors",
    "to_model_frame",
    "check_points",
    "check_boxes",
    "encode",
    "from_processor",
    "as_corner_points",
    "pad_batch",
]


def bucket(n: int, minimum: int = 1, buckets: tuple[int, ...] = PROMPT_BUCKETS) -> int:
    """The smallest bucket that holds ``max(n, minimum)`` (the one padding rule for prompts, points, and, with
    ``TRACKING_BUCKETS``, tracked objects and conditioning frames)."""
    n = max(n, minimum)
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"{n} prompts, points or objects exceed the largest bucket {buckets[-1]}")


def scale_factors(size, image_size: int) -> np.ndarray:
    """(x, y) factors from an (H, W) image to the model frame, float32 like the Python-float scalars torch
    multiplies float32 by in transformers' processor."""
    h, w = int(size[0]), int(size[1])
    return np.array([image_size / w, image_size / h], np.float32)


def to_model_frame(coords, size, image_size: int) -> np.ndarray:
    """Points (..., 2) or boxes (..., 4) in original pixels -> float32 in the model frame (see the module doc)."""
    coords = np.asarray(coords, np.float32)
    scale = scale_factors(size, image_size)
    return coords * np.tile(scale, coords.shape[-1] // 2)


def _path(idx) -> str:
    return "".join(f"[{int(i)}]" for i in idx)


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if np.any(bad):
        idx = np.argwhere(bad)[0]
        raise ValueError(f"{name}{_path(idx[:-1])}: non-finite number {float(x[tuple(idx)])!r}")


def check_points(xy, size, name: str) -> None:
    """Raise if a point (..., 2) is non-finite or outside the (H, W) image, naming the first one."""
    xy = np.asarray(xy, np.float64)
    h, w = int(size[0]), int(size[1])
    _check_finite(xy, name)
    outside = (xy[..., 0] < 0) | (xy[..., 0] > w) | (xy[..., 1] < 0) | (xy[..., 1] > h)
    if np.any(outside):
        idx = np.argwhere(outside)[0]
        x, y = (float(v) for v in xy[tuple(idx)])
        raise ValueError(f"{name}{_path(idx)}: point ({x}, {y}) lies outside the {w}x{h} image")


def check_boxes(boxes, size, name: str) -> None:
    """Raise if a box (..., 4) is non-finite, has x2 < x1 or y2 < y1, or leaves the (H, W) image (not checked
    when ``size`` is None)."""
    boxes = np.asarray(boxes, np.float64)
    _check_finite(boxes, name)
    x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
    problems = [
        (x2 < x1, "has x2 < x1; boxes are [x1, y1, x2, y2]"),
        (y2 < y1, "has y2 < y1; boxes are [x1, y1, x2, y2]"),
    ]
    if size is not None:
        h, w = int(size[0]), int(size[1])
        problems.append(((np.minimum(x1, y1) < 0) | (x2 > w) | (y2 > h), f"lies outside the {w}x{h} image"))
    first = np.full(boxes.shape[:-1], len(problems))
    for k, (bad, _) in reversed(list(enumerate(problems))):
        first = np.where(bad, k, first)
    if np.any(first < len(problems)):
        idx = np.argwhere(first < len(problems))[0]
        coords = ", ".join(str(float(v)) for v in boxes[tuple(idx)])
        raise ValueError(f"{name}{_path(idx)}: box ({coords}) {problems[int(first[tuple(idx)])][1]}")


@dataclass(frozen=True)
class Prompts:
    """One image's P prompts in the model frame, before padding.

    points (P, N, 2) float32, labels (P, N) int32, mask (P, N) bool (False: no point there; such entries hold
    (0, 0) and ``NOT_A_POINT_LABEL``), boxes (P, 4) float32 or None."""

    points: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray | None = None

    @property
    def n_prompts(self) -> int:
        return self.labels.shape[0]

    @property
    def n_points(self) -> int:
        return self.labels.shape[1]


def _no_points(n_prompts: int) -> Prompts:
    """P prompts without a point: one masked slot each (a mask-only or box-only prompt has no sparse point)."""
    return Prompts(
        np.zeros((n_prompts, 1, 2), np.float32),
        np.full((n_prompts, 1), NOT_A_POINT_LABEL, np.int32),
        np.zeros((n_prompts, 1), bool),
    )


def encode(
    points=None,
    labels=None,
    boxes=None,
    *,
    size,
    image_size: int,
    n_prompts: int | None = None,
    normalize: bool = True,
) -> Prompts:
    """The official predictor's prompts -> ``Prompts`` (see the module docstring for the shapes).

    One box with several point prompts is repeated for each, one point prompt with several boxes likewise.
    ``normalize=False`` takes coordinates already in the model frame (no check against the image). With neither
    points nor boxes, ``n_prompts`` (default 1) prompts without a sparse token (a mask-only prompt)."""
    count = None
    pts = None
    if points is not None:
        if labels is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied.")
        pts = np.asarray(points, np.float32)
        labels = np.asarray(labels)
        if pts.ndim == 2:
            pts, labels = pts[None], labels[None]
        if pts.ndim != 3 or pts.shape[-1] != 2:
            raise ValueError(f"point_coords must be (N, 2) or (B, N, 2), got {pts.shape}")
        if labels.shape != pts.shape[:2]:
            raise ValueError(f"point_labels shape {labels.shape} does not match point_coords {pts.shape}")
        if normalize:
            check_points(pts, size, "point_coords")
            pts = to_model_frame(pts, size, image_size)
        else:
            _check_finite(pts, "point_coords")
        labels = labels.astype(np.int32)
        count = pts.shape[0]
    if boxes is not None:
        boxes = np.asarray(boxes, np.float32)
        if boxes.shape[-1] != 4 or boxes.ndim > 2:
            raise ValueError(f"box must be (4,) or (B, 4), got {boxes.shape}")
        boxes = boxes.reshape(-1, 4)
        if normalize:
            check_boxes(boxes, size, "box")
            boxes = to_model_frame(boxes, size, image_size)
        else:
            check_boxes(boxes, None, "box")
        if count is not None and boxes.shape[0] != count:
            if boxes.shape[0] == 1:
                boxes = np.repeat(boxes, count, axis=0)
            elif count == 1:
                pts, labels = np.repeat(pts, boxes.shape[0], 0), np.repeat(labels, boxes.shape[0], 0)
            else:
                raise ValueError(f"{boxes.shape[0]} boxes for {count} point prompts")
        count = boxes.shape[0]
    if pts is None:
        empty = _no_points(count or n_prompts or 1)
        return Prompts(empty.points, empty.labels, empty.mask, boxes)
    return Prompts(pts, labels, np.ones(labels.shape, bool), boxes)


def from_processor(out: dict, i: int = 0) -> Prompts:
    """Image ``i`` of ``Sam2Processor.process_prompts`` output (ragged lists padded with -10) -> ``Prompts``:
    the -10 padding becomes masked slots."""
    boxes = out.get("input_boxes")
    boxes = None if boxes is None else np.asarray(boxes[i], np.float32)
    if "input_points" not in out:  # boxes alone: no point slots
        p = len(boxes)
        return Prompts(np.zeros((p, 0, 2), np.float32), np.zeros((p, 0), np.int32), np.zeros((p, 0), bool), boxes)
    labels = np.asarray(out["input_labels"][i])
    mask = labels != PAD_LABEL
    points = np.where(mask[..., None], np.asarray(out["input_points"][i], np.float32), np.float32(0))
    return Prompts(points, np.where(mask, labels, NOT_A_POINT_LABEL).astype(np.int32), mask, boxes)


def as_corner_points(prompts: Prompts) -> Prompts:
    """Boxes as two leading corner points (labels ``BOX_CORNER_LABELS``), which the prompt encoder embeds exactly
    as it embeds ``input_boxes`` (the tokens come in another order, which attention does not see: equal to
    float rounding). For batches that mix images with and without boxes: ``input_boxes`` gives every prompt of
    the batch a box token, which the decoder cannot mask out, so such a batch can only carry boxes this way.
    Prompts without boxes come back unchanged."""
    if prompts.boxes is None:
        return prompts
    p = prompts.n_prompts
    corners = prompts.boxes.reshape(p, 2, 2)
    corner_labels = np.broadcast_to(np.asarray(BOX_CORNER_LABELS, np.int32), (p, 2))
    return Prompts(
        np.concatenate([corners, prompts.points], axis=1),
        np.concatenate([corner_labels, prompts.labels], axis=1),
        np.concatenate([np.ones((p, 2), bool), prompts.mask], axis=1),
    )


def pad_batch(batch: list[Prompts], n_prompts: int, n_points: int) -> dict[str, np.ndarray]:
    """Pad every image's prompts to (``n_prompts``, ``n_points``) and stack: the model's prompt inputs (see the
    module docstring). Padding points are (0, 0) with ``NOT_A_POINT_LABEL`` and ``prompt_mask`` False; padding
    prompts (and their boxes, zeros) give results to drop."""
    with_boxes = {p.boxes is not None for p in batch}
    if len(with_boxes) > 1:
        raise ValueError("some images have boxes and some do not: send the boxes with as_corner_points")
    b = len(batch)
    points = np.zeros((b, n_prompts, n_points, 2), np.float32)
    labels = np.full((b, n_prompts, n_points), NOT_A_POINT_LABEL, np.int32)
    mask = np.zeros((b, n_prompts, n_points), bool)
    boxes = np.zeros((b, n_prompts, 4), np.float32) if with_boxes == {True} else None
    for i, pr in enumerate(batch):
        p, n = pr.labels.shape
        if p > n_prompts or n > n_points:
            raise ValueError(f"{p} prompts of {n} points do not fit the padding ({n_prompts}, {n_points})")
        points[i, :p, :n] = pr.points
        labels[i, :p, :n] = pr.labels
        mask[i, :p, :n] = pr.mask
        if boxes is not None:
            boxes[i, :p] = pr.boxes
    if boxes is not None and not mask.any():  # boxes alone: no point tokens at all, as the official predictor
        return {"input_boxes": boxes}
    out = {"input_points": points, "input_labels": labels, "prompt_mask": mask}
    if boxes is not None:
        out["input_boxes"] = boxes
    return out
