"""Inputs of ``segment_stream``: listing and naming images, their prompts, and one image made ready for a batch.

list_images(directory)          -> [Path] of the image files directly in it, sorted by name
plan_inputs(images, prompts, ext) -> ``Inputs``: the (name, image) items, the file names, the total count and
                                   the padding (objects, points) sized up front for a mapping of prompts
prepare(processor, name, image, prompt, filename) -> ``Prepared``: (S, S, 3) float32 pixels, (H, W), and
                                   the prompt as ``processing.prompts.Prompts`` (boxes as corner points)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ....processing import prompts as prompt_ops
from ....processing.images import read_image
from ....processing.processor import Sam2Processor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(directory: str | os.PathLike) -> list[Path]:
    """The image files directly in ``directory`` (by extension, hidden files left out), sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image directory {d} does not exist or is not a directory")
    return sorted(
        p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def check_name(name: Any) -> str:
    """An image name must be a plain file name: it names the output."""
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"image name {name!r} must be a non-empty file name not starting with '.'")
    if "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ValueError(f"image name {name!r} must not contain a path separator")
    return name


def prompt_for(prompts, name: str, filename: str | None):
    """The prompt of an image from a mapping (by name, or by file name) or a callable; None if there is none."""
    if callable(prompts) and not isinstance(prompts, Mapping):
        return prompts(name)
    if name in prompts:
        return prompts[name]
    if filename is not None and filename in prompts:
        return prompts[filename]
    return None


def _prompt_counts(prompt: Any) -> tuple[int, int]:
    """(objects, tokens of the largest object) of a prompt dict, 0s if it is not readable (errors come later)."""
    try:
        points, boxes = prompt.get("points"), prompt.get("boxes")
        n_pts = 0 if points is None else len(points)
        corners = 0 if boxes is None or len(boxes) == 0 else 2
        n_obj = max(n_pts, 0 if boxes is None else len(boxes))
        return n_obj, max(((len(points[j]) if j < n_pts else 0) + corners for j in range(n_obj)), default=0)
    except Exception:
        return 0, 0


@dataclass
class Inputs:
    items: Iterable  # (name, image) pairs; image a path, a PIL image or an array
    filenames: dict[str, str]  # name -> file name, for a directory
    total: int | None  # the number of images when known
    n_obj: int  # the padding of objects and of points per object, sized up front where possible
    n_tok: int


def plan_inputs(images, prompts, ext: str) -> Inputs:
    """A directory is listed (and checked) up front; any other iterable is consumed later, lazily."""
    n_obj = n_tok = prompt_ops.MIN_PROMPT_BUCKET
    if not isinstance(images, (str, os.PathLike)):
        total = len(images) if hasattr(images, "__len__") else None
        try:
            return Inputs(iter(images), {}, total, n_obj, n_tok)
        except TypeError:
            raise ValueError(
                f"images must be a directory or an iterable of (name, image), got {images!r:.80}"
            ) from None
    files = list_images(images)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ValueError(f"{stems[f.stem].name} and {f.name} would both write {f.stem}{ext}")
        stems[f.stem] = f
    if isinstance(prompts, Mapping):  # size the padding for the largest prompt: one compile
        missing = [f.name for f in files if f.stem not in prompts and f.name not in prompts]
        if missing:
            raise ValueError(f"no prompt for {len(missing)} image(s): {', '.join(missing[:5])}")
        for f in files:
            o, t = _prompt_counts(prompt_for(prompts, f.stem, f.name))
            n_obj = prompt_ops.bucket(o, n_obj)
            n_tok = prompt_ops.bucket(t, n_tok)
    return Inputs(((f.stem, f) for f in files), {f.stem: f.name for f in files}, len(files), n_obj, n_tok)


@dataclass
class Prepared:
    name: str
    pixels: np.ndarray  # (S, S, 3) float32
    size: tuple[int, int]  # (height, width)
    prompts: prompt_ops.Prompts  # P objects in the model frame, boxes as corner points


def prepare_prompt(processor: Sam2Processor, name: str, prompt: Any, size: tuple[int, int]) -> prompt_ops.Prompts:
    """A prompt dict -> ``Prompts`` (P objects, boxes as two leading corner points), model frame."""
    if prompt is None:
        raise ValueError(f"{name}: no prompt for this image (give points and/or boxes)")
    if not isinstance(prompt, Mapping):
        raise ValueError(f"{name}: a prompt must be a dict with points/labels/boxes, got {type(prompt).__name__}")
    unknown = set(prompt) - {"points", "labels", "boxes"}
    if unknown:
        raise ValueError(f"{name}: unknown prompt keys {sorted(unknown)}; expected points, labels, boxes")
    points, labels, boxes = prompt.get("points"), prompt.get("labels"), prompt.get("boxes")
    if labels is not None and points is None:
        raise ValueError(f"{name}: labels given without points")
    if points is not None and labels is None:
        try:
            labels = [[prompt_ops.POSITIVE_LABEL] * len(obj) for obj in points]
        except TypeError:
            raise ValueError(f"{name}: points must nest as [object][point][x, y]") from None
    n_obj = {len(x) for x in (points, boxes) if x is not None}
    if not n_obj or n_obj == {0}:
        raise ValueError(f"{name}: no prompt for this image (give points and/or boxes)")
    if len(n_obj) > 1:
        raise ValueError(f"{name}: {len(points)} point lists for {len(boxes)} boxes; objects are matched by index")
    try:
        out = processor.process_prompts(
            [size],
            None if points is None else [points],
            None if labels is None else [labels],
            None if boxes is None else [boxes],
        )
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    for j, obj in enumerate(labels or []):
        for k, lab in enumerate(obj):
            if lab not in (prompt_ops.POSITIVE_LABEL, prompt_ops.NEGATIVE_LABEL):
                raise ValueError(f"{name}: labels[{j}][{k}] is {lab!r}; use 1 (foreground) or 0 (background)")
    encoded = prompt_ops.as_corner_points(prompt_ops.from_processor(out))
    for j, any_token in enumerate(encoded.mask.any(axis=1)):
        if not any_token:
            raise ValueError(f"{name}: object {j} has no points and no box")
    return encoded


def prepare(processor: Sam2Processor, name: str, image: Any, prompt: Any) -> Prepared:
    """Read (if a path) and preprocess one image, and encode its prompt."""
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, name)
    pixels, size = processor.preprocess_image(image, name)
    size = (int(size[0]), int(size[1]))
    return Prepared(name, pixels, size, prepare_prompt(processor, name, prompt, size))
