"""``segment_stream``: a prefetch thread prepares batches, the device segments them, a writer thread saves them.

In: a ``BatchSegmenter`` (or ``(model, params)``), images (a directory or (name, image) pairs), prompts (a
mapping or a callable), an output directory; see the package docstring. Out: one file per image, and a
``StreamSummary``.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ....processing import prompts as prompt_ops
from ....processing.processor import Sam2Processor
from ....utils.progress import progress_bar
from ..batch_segmenter import BatchSegmenter
from .sources import Prepared, check_name, plan_inputs, prepare, prompt_for
from .writers import FORMATS, remove_partials, write_result


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


class _Stop(Exception):
    pass


def _producer(items, filenames, prompts, processor, out_path, batch_size, q, stop):
    """Background thread: skip finished images, decode + preprocess the rest, put batches of Prepared on ``q``."""

    def put(msg):
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    try:
        batch: list[Prepared] = []
        seen: set[str] = set()
        for item in items:
            if stop.is_set():
                return
            try:
                name, image = item
            except (TypeError, ValueError):
                raise ValueError(f"images must yield (name, image) pairs, got {str(item)[:80]}") from None
            name = check_name(name)
            if name in seen:
                raise ValueError(f"image name {name!r} appears twice (outputs would collide)")
            seen.add(name)
            if out_path(name).exists():
                put(("skip", name))
                continue
            batch.append(prepare(processor, name, image, prompt_for(prompts, name, filenames.get(name))))
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


def _model_inputs(batch: list[Prepared], batch_size: int, n_obj: int, n_tok: int) -> dict[str, Any]:
    """Pixels and padded prompts of a batch; padding rows repeat the last image (their results are dropped)."""
    rows = [batch[min(i, len(batch) - 1)] for i in range(batch_size)]
    inputs = prompt_ops.pad_batch([it.prompts for it in rows], n_obj, n_tok)
    return dict(pixel_values=np.stack([it.pixels for it in rows]), **inputs)


def _segmenter(segmenter, multimask_output: bool | None) -> BatchSegmenter:
    if isinstance(segmenter, BatchSegmenter):
        if multimask_output is not None and multimask_output != segmenter.multimask_output:
            raise ValueError(
                f"multimask_output={multimask_output} but the segmenter was built with {segmenter.multimask_output}"
            )
        return segmenter
    try:
        model, params = segmenter
    except (TypeError, ValueError):
        raise ValueError("segmenter must be a BatchSegmenter or a (model, params) pair") from None
    return BatchSegmenter(model, params, multimask_output=bool(multimask_output))


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
    """Segment every image and write ``<out_dir>/<name>.png`` or ``.json``; see the package docstring.

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
    segmenter = _segmenter(segmenter, multimask_output)
    batch_size = batch_size or segmenter.num_devices
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    processor = Sam2Processor(image_size=segmenter.model.config.prompt_encoder_config.image_size)
    ext = FORMATS[fmt]
    inputs = plan_inputs(images, prompts, ext)
    n_obj, n_tok = inputs.n_obj, inputs.n_tok

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_partials(out)

    def out_path(name: str) -> Path:
        return out / f"{name}{ext}"

    def write_batch(batch: list[Prepared], res: dict[str, Any]) -> None:
        for i, item in enumerate(batch):
            res_i = (res["pred_masks"][i], res["iou_scores"][i], res["object_score_logits"][i])
            write_result(out_path(item.name), fmt, item.name, item.size, *res_i, item.prompts.n_prompts, mask_threshold)
            summary.done += 1
            summary.written.append(item.name)
            bar.update(1)

    summary = StreamSummary(out_dir=out)
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    args = (inputs.items, inputs.filenames, prompts, processor, out_path, batch_size, q, stop)
    thread = threading.Thread(target=_producer, args=args, name="sam2-stream-prefetch", daemon=True)
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sam2-stream-writer")
    pending: concurrent.futures.Future | None = None
    bar = progress_bar(inputs.total, progress, desc="segmenting", unit="img")
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
            batch: list[Prepared] = payload
            n_obj = prompt_ops.bucket(max(it.prompts.n_prompts for it in batch), n_obj)  # grows, never shrinks
            n_tok = prompt_ops.bucket(max(it.prompts.n_points for it in batch), n_tok)
            res = segmenter(**_model_inputs(batch, batch_size, n_obj, n_tok))
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
