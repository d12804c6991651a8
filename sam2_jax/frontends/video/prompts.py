"""Checking and converting the video predictor's prompts (official ``add_new_points_or_box`` / ``add_new_mask``).

``point_prompt(points, labels, box, clear_old_points, normalize_coords, (H, W), S)`` -> (coords (N, 2) float32 in
the model's S x S frame, labels (N,) int32), a box first as two corner points (labels 2, 3), as the official does:
coordinates are divided by (W, H) when ``normalize_coords`` and multiplied by S, in float32.
Masks (official ``add_new_mask``) go through ``processing.video.mask_inputs.mask_prompt``, shared with the
video processor.
Each raises ValueError / TypeError naming the problem, before the state is touched.
"""

from __future__ import annotations

import numbers

import numpy as np

from ...processing.prompts import BOX_CORNER_LABELS, check_boxes, check_points
from .state import VideoInferenceState


def check_state(state) -> VideoInferenceState:
    if not isinstance(state, VideoInferenceState):
        raise TypeError(
            f"expected the state returned by init_state(video), got {type(state).__name__}: call init_state first"
        )
    return state


def check_obj_id(obj_id) -> None:
    if isinstance(obj_id, bool) or not isinstance(obj_id, (numbers.Integral, str)):
        raise TypeError(f"obj_id must be an int (or a str), got {obj_id!r}")


def unknown_object(state: VideoInferenceState, obj_id) -> ValueError:
    return ValueError(f"unknown object id {obj_id!r}; the state's objects are {state.obj_ids}")


def _array(x, name: str, last: int | None) -> np.ndarray:
    try:
        a = np.asarray(x, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, got {x!r}") from e
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if last is not None and (a.ndim != 2 or a.shape[-1] != last):
        raise ValueError(f"{name} must have shape (N, {last}) or (1, N, {last}), got {a.shape}")
    return a


def point_prompt(points, labels, box, clear_old_points, normalize_coords, size, image_size):
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be provided together")
    if points is None and box is None:
        raise ValueError("at least one of points or box must be provided as input")
    if box is not None and not clear_old_points:
        raise ValueError(
            "cannot add a box without clearing old points (a box must come before any point prompt); "
            "use clear_old_points=True"
        )
    h, w = int(size[0]), int(size[1])
    frame = (h, w) if normalize_coords else (1, 1)
    unit = "pixels of the video" if normalize_coords else "[0, 1] (normalize_coords=False)"
    coords, labs = np.zeros((0, 2)), np.zeros((0,), np.int64)
    if points is not None:
        coords = _array(points, "points", 2)
        lab = np.asarray(labels)
        if lab.ndim == 2 and lab.shape[0] == 1:
            lab = lab[0]
        if lab.ndim != 1 or lab.shape[0] != coords.shape[0]:
            raise ValueError(f"labels must have shape (N,) = ({coords.shape[0]},) to match points, got {lab.shape}")
        if lab.size and (lab.dtype.kind not in "iub" or not np.isin(lab, (0, 1)).all()):
            raise ValueError(f"labels must be 1 (positive) or 0 (negative), got {lab.tolist()}")
        try:
            check_points(coords, frame, "points")
        except ValueError as e:
            raise ValueError(f"{e} (points are in {unit})") from None
        labs = lab.astype(np.int64)
    if box is not None:
        b = np.asarray(box, np.float64).reshape(-1)
        if b.shape != (4,):
            raise ValueError(f"box must be [x1, y1, x2, y2], got shape {np.shape(box)}")
        try:
            check_boxes(b, frame, "box")
        except ValueError as e:
            raise ValueError(f"{e} (boxes are in {unit})") from None
        coords = np.concatenate([b.reshape(2, 2), coords])
        labs = np.concatenate([np.asarray(BOX_CORNER_LABELS), labs])
    coords = coords.astype(np.float32)
    if normalize_coords:
        coords = coords / np.asarray([w, h], np.float32)
    coords = coords * np.float32(image_size)
    return coords.astype(np.float32), labs.astype(np.int32)
