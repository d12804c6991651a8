"""Segment a directory or a stream of images with prompts, writing one mask file per image as it goes.

``segment_stream(segmenter, images, prompts, out_dir)`` runs the whole model (encoder + decoder) over batches
of images on all the segmenter's devices (``parallel.BatchSegmenter``) while a background thread decodes and
preprocesses the next batches on the host (``prefetch`` batches ahead) and another thread upsamples and writes
the finished ones. A progress bar (tqdm) counts images.

In:
  segmenter  a ``BatchSegmenter``, or ``(model, params)`` (a ``BatchSegmenter`` over all local devices is built)
  images     a directory: every ``.jpg .jpeg .png .bmp .webp`` file directly in it (not hidden, sorted by
             name; the name of an image is its file name without the extension), or an iterable of
             ``(name, image)`` pairs, consumed lazily on the background thread; ``image`` is a path, a PIL
             image or an (H, W[, C]) array. Names must be unique file names (no separators, no leading dot).
  prompts    a mapping ``name -> prompt`` (for a directory a key may also be the full file name) or a
             callable ``name -> prompt``; a prompt is a dict, in original image pixels, of
               points  [object][point][x, y]
               labels  [object][point], 1 foreground / 0 background (default: all 1)
               boxes   [object][x1, y1, x2, y2]
             Objects are matched by index: with both points and boxes there must be as many point lists as
             boxes (a point list may be empty). A box is sent as two corner points (labels 2 and 3), as the
             official predictor does, so boxes and clicks share one input shape. An image without a prompt
             (missing key, ``None``, no objects) raises ``ValueError`` naming the image.
Out, per image, written under ``out_dir`` (created if needed):
  fmt="png"  ``<name>.png``: one object -> a binary mask (0 / 255, 8-bit grey); several objects -> a label
             image (0 background, k for object k counted from 1; 8-bit, 16-bit beyond 255 objects) where a
             pixel covered by several masks goes to the object with the highest mask logit. The scores are
             kept in the PNG's ``sam2`` text chunk as JSON (``read_png_scores``).
  fmt="rle"  ``<name>.json``: ``{"name", "height", "width", "objects": [{"segmentation": {"size": [H, W],
             "counts": [...]}, "score", "object_score"}]}``, one entry per object, each mask on its own
             (overlaps kept) as COCO's uncompressed RLE: run lengths over the column-major (Fortran-order)
             flattened mask, starting with a run of zeros (``rle_to_mask`` decodes it).
  ``score`` is the decoder's predicted IoU; with ``multimask_output=True`` the best of the three masks per
  object (highest predicted IoU) is kept. Masks are the logits upsampled (bilinear) to the image size and
  thresholded at ``mask_threshold``, as ``Sam2Processor.post_process_masks`` does.

Static shapes: every batch is padded to ``batch_size`` images, and objects and points per object (box
corners included) to at least 4, then to ``predictor.bucket`` sizes. The padding never shrinks within a
stream (with a mapping of prompts it is sized for the largest prompt up front), so a stream compiles once,
or once more per bucket it grows into. Padded points are masked out of the decoder's attention.

Resume: each file is written to a hidden temporary file (``.<name>.*.partial``) in ``out_dir``, flushed and
renamed into place with ``os.replace``, so an output exists only once it is complete. Images whose output
already exists are skipped, and leftover ``.partial`` files of a killed run are removed at start (one run per
``out_dir`` at a time). The return value is a ``StreamSummary`` (images done, skipped, seconds).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..processing import amg
from ..processing.processor import Sam2Processor, _to_rgb_uint8, upsample_bilinear
from .batch_segmenter import BatchSegmenter
from .image_predictor import bucket

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FORMATS = {"png": ".png", "rle": ".json"}
PARTIAL_SUFFIX = ".partial"
MIN_PROMPT_BUCKET = 4  # objects and points per object are padded to at least this many
BOX_LABELS = (2, 3)  # the prompt encoder's labels of a box's top-left and bottom-right corner
PNG_TEXT_KEY = "sam2"

__all__ = [
    "segment_stream",
    "StreamSummary",
    "list_images",
    "mask_to_rle",
    "rle_to_mask",
    "read_png_scores",
    "IMAGE_EXTENSIONS",
]


@dataclass
class StreamSummary:
    """What a ``segment_stream`` run did: ``done`` images segmented and written, ``skipped`` (output existed)."""

    done: int = 0
    skipped: int = 0
    seconds: float = 0.0
    out_dir: Path | None = None
    written: list[str] = field(default_factory=list)  # names written by this run, in completion order

    @property
    def total(self) -> int:
        return self.done + self.skipped


# ---- RLE ---------------------------------------------------------------------------------------------------------
def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO uncompressed RLE ``{"size": [H, W], "counts": [...]}`` (column-major, zeros first)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    return amg.mask_to_rle(mask[None])[0]


rle_to_mask = amg.rle_to_mask  # the inverse of ``mask_to_rle`` (also reads COCO's compressed strings)


def read_png_scores(path: str | os.PathLike) -> dict[str, Any]:
    """The scores ``segment_stream`` stored in a PNG output: ``{"scores": [...], "object_scores": [...]}``."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.text[PNG_TEXT_KEY])


# ---- inputs ------------------------------------------------------------------------------------------------------
def list_images(directory: str | os.PathLike) -> list[Path]:
    """The image files directly in ``directory`` (by extension, hidden files left out), sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image directory {d} does not exist or is not a directory")
    return sorted(
        p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"image name {name!r} must be a non-empty file name not starting with '.'")
    if "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ValueError(f"image name {name!r} must not contain a path separator")
    return name


def _read_image(path: Path, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb_uint8(im, name)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for missing, truncated or foreign files
        raise ValueError(f"{name}: cannot read image {path}: {e}") from e


@dataclass
class _Prepared:
    name: str
    pixels: np.ndarray  # (S, S, 3) float32
    size: tuple[int, int]  # (height, width)
    points: np.ndarray  # (P, T, 2) float32 in the model frame
    labels: np.ndarray  # (P, T) int32
    valid: np.ndarray  # (P, T) bool


def _prompt_for(prompts, name: str, filename: str | None):
    if callable(prompts) and not isinstance(prompts, Mapping):
        return prompts(name)
    if name in prompts:
        return prompts[name]
    if filename is not None and filename in prompts:
        return prompts[filename]
    return None


def _prepare_prompt(processor: Sam2Processor, name: str, prompt: Any, size: tuple[int, int]):
    """A prompt dict -> per-object token arrays (points (P, T, 2), labels (P, T), valid (P, T)), model frame."""
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
            labels = [[1] * len(obj) for obj in points]
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
    p = n_obj.pop()
    tokens: list[list[tuple[float, float, int]]] = [[] for _ in range(p)]
    if "input_boxes" in out:
        for j, (x1, y1, x2, y2) in enumerate(out["input_boxes"][0]):
            tokens[j] += [(x1, y1, BOX_LABELS[0]), (x2, y2, BOX_LABELS[1])]
    if "input_points" in out:
        for j in range(p):
            for k, lab in enumerate(labels[j]):
                if lab not in (0, 1):
                    raise ValueError(f"{name}: labels[{j}][{k}] is {lab!r}; use 1 (foreground) or 0 (background)")
                x, y = out["input_points"][0, j, k]
                tokens[j].append((float(x), float(y), int(lab)))
    for j, tok in enumerate(tokens):
        if not tok:
            raise ValueError(f"{name}: object {j} has no points and no box")
    t = max(len(tok) for tok in tokens)
    pts = np.zeros((p, t, 2), np.float32)
    lab = np.full((p, t), -1, np.int32)
    valid = np.zeros((p, t), bool)
    for j, tok in enumerate(tokens):
        arr = np.asarray(tok, np.float64)
        pts[j, : len(tok)] = arr[:, :2]
        lab[j, : len(tok)] = arr[:, 2]
        valid[j, : len(tok)] = True
    return pts, lab, valid


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


# ---- the pipeline ------------------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _producer(items, filenames, prompts, processor, out_path, batch_size, q, stop):
    """Background thread: skip finished images, decode + preprocess the rest, put batches of _Prepared on ``q``."""

    def put(msg):
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    try:
        batch: list[_Prepared] = []
        seen: set[str] = set()
        for item in items:
            if stop.is_set():
                return
            try:
                name, image = item
            except (TypeError, ValueError):
                raise ValueError(f"images must yield (name, image) pairs, got {str(item)[:80]}") from None
            name = _check_name(name)
            filename = filenames.get(name)
            if name in seen:
                raise ValueError(f"image name {name!r} appears twice (outputs would collide)")
            seen.add(name)
            if out_path(name).exists():
                put(("skip", name))
                continue
            if isinstance(image, (str, os.PathLike)):
                image = _read_image(Path(image), name)
            pixels, size = processor.preprocess_image(image, name)
            size = (int(size[0]), int(size[1]))
            pts, lab, valid = _prepare_prompt(processor, name, _prompt_for(prompts, name, filename), size)
            batch.append(_Prepared(name, pixels, size, pts, lab, valid))
            if len(batch) == batch_size:
                put(("batch", batch))
                batch = []
        if batch:
            put(("batch", batch))
        put(("end", None))
    except _Stop:
        return
    except BaseException as e:  # handed to the main thread, which raises it
        try:
            put(("error", e))
        except _Stop:
            pass


def _pad_batch(batch: list[_Prepared], batch_size: int, n_obj: int, n_tok: int) -> dict[str, np.ndarray]:
    s = batch[0].pixels.shape[0]
    pixels = np.empty((batch_size, s, s, 3), np.float32)
    points = np.zeros((batch_size, n_obj, n_tok, 2), np.float32)
    labels = np.full((batch_size, n_obj, n_tok), -1, np.int32)
    valid = np.zeros((batch_size, n_obj, n_tok), bool)
    for i in range(batch_size):
        it = batch[min(i, len(batch) - 1)]  # padding rows repeat the last image; their results are dropped
        pixels[i] = it.pixels
        p, t = it.labels.shape
        points[i, :p, :t] = it.points
        labels[i, :p, :t] = it.labels
        valid[i, :p, :t] = it.valid
    return dict(pixel_values=pixels, input_points=points, input_labels=labels, prompt_mask=valid)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_result(path: Path, fmt: str, item: _Prepared, low_res, iou, obj_score, threshold: float) -> None:
    """Upsample the kept mask of every object to the image size, threshold, and write the output atomically."""
    p = item.labels.shape[0]
    best = np.argmax(iou[:p], axis=-1)  # (P,): the mask kept per object (the only one without multimask)
    rows = np.arange(p)
    logits = upsample_bilinear(np.asarray(low_res[rows, best], np.float32), item.size)  # (P, H, W)
    masks = logits > threshold
    scores = [float(v) for v in iou[rows, best]]
    obj_scores = [float(v) for v in obj_score[:p, 0]]
    if fmt == "rle":
        h, w = item.size
        doc = {
            "name": item.name,
            "height": h,
            "width": w,
            "objects": [
                {"segmentation": mask_to_rle(m), "score": s, "object_score": o}
                for m, s, o in zip(masks, scores, obj_scores, strict=True)
            ],
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        _atomic_write(path, lambda f: f.write(data))
        return
    from PIL import Image, PngImagePlugin

    if p == 1:
        image = Image.fromarray(masks[0].astype(np.uint8) * 255, mode="L")
    else:
        winner = np.argmax(np.where(masks, logits, -np.inf), axis=0)
        label = np.where(masks.any(axis=0), winner + 1, 0)
        if p <= 255:
            image = Image.fromarray(label.astype(np.uint8), mode="L")
        else:
            image = Image.fromarray(label.astype(np.uint16))
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_TEXT_KEY, json.dumps({"scores": scores, "object_scores": obj_scores}))
    _atomic_write(path, lambda f: image.save(f, format="PNG", pnginfo=info))


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def segment_stream(
    segmenter: BatchSegmenter | tuple[Any, Any],
    images: str | os.PathLike | Iterable[tuple[str, Any]],
    prompts: Mapping[str, Any] | Callable[[str], Any],
    out_dir: str | os.PathLike,
    *,
    batch_size: int | None = None,
    fmt: str = "png",
    multimask_output: bool | None = None,
    prefetch: int = 2,
    progress: bool = True,
    mask_threshold: float = 0.0,
) -> StreamSummary:
    """Segment every image and write ``<out_dir>/<name>.png`` or ``.json``; see the module docstring.

    ``batch_size`` defaults to the segmenter's device count. ``multimask_output`` defaults to False for
    ``(model, params)`` and to the segmenter's own setting for a ``BatchSegmenter`` (which it must match).
    ``prefetch`` is how many preprocessed batches may wait for the device. Resumable: finished outputs are
    skipped. Errors (unreadable image, bad or missing prompt) raise ``ValueError`` naming the image, after
    the batches before it have been written.
    """
    start = time.perf_counter()
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch}")
    if not (callable(prompts) or isinstance(prompts, Mapping)):
        raise ValueError(f"prompts must be a mapping name -> prompt or a callable, got {type(prompts).__name__}")
    if isinstance(segmenter, BatchSegmenter):
        if multimask_output is not None and multimask_output != segmenter.multimask_output:
            raise ValueError(
                f"multimask_output={multimask_output} but the segmenter was built with {segmenter.multimask_output}"
            )
    else:
        try:
            model, params = segmenter
        except (TypeError, ValueError):
            raise ValueError("segmenter must be a BatchSegmenter or a (model, params) pair") from None
        segmenter = BatchSegmenter(model, params, multimask_output=bool(multimask_output))
    batch_size = batch_size or segmenter.num_devices
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    processor = Sam2Processor(image_size=segmenter.model.config.prompt_encoder_config.image_size)

    # inputs: a directory is listed (and checked) up front; any other iterable is consumed on the producer thread
    total = None
    n_obj = n_tok = MIN_PROMPT_BUCKET
    if isinstance(images, (str, os.PathLike)):
        files = list_images(images)
        stems: dict[str, Path] = {}
        for f in files:
            if f.stem in stems:
                raise ValueError(f"{stems[f.stem].name} and {f.name} would both write {f.stem}{FORMATS[fmt]}")
            stems[f.stem] = f
        items: Iterable = ((f.stem, f) for f in files)
        filenames = {f.stem: f.name for f in files}
        total = len(files)
        if isinstance(prompts, Mapping):  # size the padding for the largest prompt: one compile
            missing = [f.name for f in files if f.stem not in prompts and f.name not in prompts]
            if missing:
                raise ValueError(f"no prompt for {len(missing)} image(s): {', '.join(missing[:5])}")
            for f in files:
                o, t = _prompt_counts(_prompt_for(prompts, f.stem, f.name))
                n_obj, n_tok = max(n_obj, bucket(max(o, 1))), max(n_tok, bucket(max(t, 1)))
    else:
        if hasattr(images, "__len__"):
            total = len(images)
        try:
            items, filenames = iter(images), {}
        except TypeError:
            raise ValueError(
                f"images must be a directory or an iterable of (name, image), got {images!r:.80}"
            ) from None

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".*{PARTIAL_SUFFIX}"):  # left by a killed run
        stale.unlink(missing_ok=True)
    ext = FORMATS[fmt]

    def out_path(name: str) -> Path:
        return out / f"{name}{ext}"

    summary = StreamSummary(out_dir=out)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="segmenting")
    else:
        bar = _NoBar()
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    thread = threading.Thread(
        target=_producer,
        args=(items, filenames, prompts, processor, out_path, batch_size, q, stop),
        name="sam2-stream-prefetch",
        daemon=True,
    )
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sam2-stream-writer")
    pending: concurrent.futures.Future | None = None

    def write_batch(batch, res):
        for i, item in enumerate(batch):
            _write_result(
                out_path(item.name),
                fmt,
                item,
                res["pred_masks"][i],
                res["iou_scores"][i],
                res["object_score_logits"][i],
                mask_threshold,
            )
            summary.done += 1
            summary.written.append(item.name)
            bar.update(1)

    thread.start()
    try:
        while True:
            kind, payload = q.get()
            if kind == "end":
                break
            if kind == "error":
                raise payload
            if kind == "skip":
                summary.skipped += 1
                bar.update(1)
                bar.set_postfix_str(f"{summary.skipped} skipped")
                continue
            batch: list[_Prepared] = payload
            n_obj = max(n_obj, bucket(max(it.labels.shape[0] for it in batch)))
            n_tok = max(n_tok, bucket(max(it.labels.shape[1] for it in batch)))
            res = segmenter(**_pad_batch(batch, batch_size, n_obj, n_tok))
            if pending is not None:
                pending.result()  # at most one batch being written while the next one computes
            pending = writer.submit(write_batch, batch, res)
        if pending is not None:
            pending.result()
    finally:
        stop.set()
        writer.shutdown(wait=True)
        thread.join(timeout=5)
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
