"""The model side of the annotation server: one ``Sam2ImagePredictor``, its work on ``ModelWorker`` threads.

``ModelEngine(photos, model, cache_mb=1024, prefetch=True)``; ``model`` is anything ``sam2_jax.load`` reads or a
``Sam2ImagePredictor`` (used as it is).
  embed(name, prefetch_next=True) -> state   queue the photo's embedding (and the next photo's, in the background)
  embed_state(name) -> {"state": "ready" | "queued" | "running" | "failed" | "none", "progress": 0..1,
                        "elapsed_s": float, "error"?: str}; progress is the elapsed time over the last
                        embedding's duration (at most 0.99 until it is ready)
  predict(name, points (N, 2) | None, labels (N,) | None, box (4,) | None, mask_input (prediction id, index) |
          None, multimask) -> (Prediction, masks (M, H, W) bool): ``Sam2ImagePredictor.predict_embedded`` on
          the photo's cached embedding, which is ``predict`` after ``set_image(photo)``; the prediction is kept
          (the last ``PREDICTIONS_KEPT``) for mask_input and accepting: ``prediction(id)``
  generate(name, options) -> job id; job(id) -> {"state", "done", "total", "error"?, "records"?}: the records of
          ``Sam2AutomaticMaskGenerator(predictor=..., output_mode="coco_rle", **options).generate(photo)``, with
          the generator's progress callback (which also lets queued predictions run between batches)
  close()

Embeddings are kept in an LRU cache bounded by their bytes (``cache_mb``); the one just made is always kept.
Prefetches (the next photo's embedding) run on a second worker thread beside the first, where everything else
runs: an encoder call cannot be interrupted, so a click made while the next photo is embedded shares the cores
with it instead of waiting seconds for it to end. A photo being embedded on one thread is waited for, not
embedded again, by the other.
Unknown ids raise ``KeyError``; bad prompts raise the predictor's ``ValueError``.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .photos import PhotoLibrary
from .worker import EMBED, GENERATE, PREDICT, PREFETCH, ModelWorker

PREDICTIONS_KEPT = 64
JOBS_KEPT = 16


@dataclass
class Prediction:
    """One answered prompt: ``masks`` (M, H, W) bool packed with ``np.packbits`` (``mask(i)`` unpacks one),
    ``scores`` (M,) float32, ``low_res`` (M, 256, 256) float32 logits, ``prompts`` as the request gave them."""

    id: str
    image: str
    size: tuple[int, int]
    packed: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray
    prompts: dict[str, Any]
    predict_ms: float

    def mask(self, index: int) -> np.ndarray:
        h, w = self.size
        return np.unpackbits(self.packed[index], count=h * w).reshape(h, w).astype(bool)


@dataclass
class Job:
    id: str
    image: str
    options: dict[str, Any]
    state: str = "running"
    done: int = 0
    total: int = 0
    error: str | None = None
    records: list[dict[str, Any]] | None = field(default=None, repr=False)


def make_predictor(model):
    """A ``Sam2ImagePredictor`` from anything ``sam2_jax.load`` reads, or the predictor passed in."""
    import sam2_jax

    if isinstance(model, sam2_jax.Sam2ImagePredictor):
        return model
    return sam2_jax.Sam2ImagePredictor.from_pretrained(model)


class ModelEngine:
    """See the module docstring."""

    def __init__(self, photos: PhotoLibrary, model, cache_mb: float = 1024, prefetch: bool = True):
        self.photos = photos
        self.predictor = make_predictor(model)
        self.cache_bytes = int(cache_mb * 2**20)
        self.prefetch = prefetch
        self.worker = ModelWorker()
        self.background = ModelWorker(name="sam2-annotate-prefetch")  # prefetches only
        self._inflight: dict[str, threading.Event] = {}  # photos being embedded now
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._cache_used = 0
        self._embed_state: dict[str, dict[str, Any]] = {}  # name -> state, started, error, priority
        self._last_embed_s: float | None = None
        self._predictions: collections.OrderedDict[str, Prediction] = collections.OrderedDict()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._ids = itertools.count(1)

    # ---- embeddings --------------------------------------------------------------------------------------------
    def _embedding(self, name: str):
        """The photo's embedding, made now if it is not cached (runs on the worker thread)."""
        while True:
            with self._lock:
                if name in self._cache:
                    self._cache.move_to_end(name)
                    return self._cache[name]
                running = self._inflight.get(name)
                if running is None:
                    self._inflight[name] = threading.Event()
                    self._embed_state[name] = {"state": "running", "started": time.monotonic()}
                    break
            running.wait()  # embedded by the other thread: cached now, or failed (then tried here)
        try:
            return self._embed_now(name)
        finally:
            with self._lock:
                self._inflight.pop(name).set()

    def _embed_now(self, name: str):
        try:
            start = time.monotonic()
            emb = self.predictor.embed_image(self.photos.read(name))
            size = sum(int(np.prod(f.shape)) * f.dtype.itemsize for f in emb.features)
        except Exception as e:
            with self._lock:
                self._embed_state[name] = {"state": "failed", "started": start, "error": str(e).splitlines()[0]}
            raise
        with self._lock:
            self._last_embed_s = time.monotonic() - start
            self._cache[name] = (emb, size)
            self._cache_used += size
            while self._cache_used > self.cache_bytes and len(self._cache) > 1:
                old, (_, old_size) = self._cache.popitem(last=False)
                self._cache_used -= old_size
                self._embed_state.pop(old, None)
            self._embed_state[name] = {"state": "ready", "started": start, "elapsed": self._last_embed_s}
        return emb, size

    def _queue_embedding(self, name: str, priority: int) -> None:
        with self._lock:
            state = self._embed_state.get(name)
            if name in self._cache or (state and state["state"] == "running"):
                return
            if state and state["state"] == "queued" and state["priority"] <= priority:
                return
            self._embed_state[name] = {"state": "queued", "started": time.monotonic(), "priority": priority}
        (self.background if priority == PREFETCH else self.worker).submit(priority, lambda: self._embedding(name))

    def embed(self, name: str, prefetch_next: bool = True) -> dict[str, Any]:
        self.photos.path(name)
        self._queue_embedding(name, EMBED)
        following = self.photos.next_name(name)
        if prefetch_next and self.prefetch and following is not None:
            self._queue_embedding(following, PREFETCH)
        return self.embed_state(name)

    def embed_state(self, name: str) -> dict[str, Any]:
        self.photos.path(name)
        with self._lock:
            state = dict(self._embed_state.get(name) or {"state": "none"})
            last = self._last_embed_s
        now = time.monotonic()
        out: dict[str, Any] = {"state": state["state"], "progress": 0.0, "elapsed_s": 0.0}
        if state["state"] == "ready":
            out.update(progress=1.0, elapsed_s=round(state["elapsed"], 3))
        elif state["state"] == "running":
            elapsed = now - state["started"]
            out.update(elapsed_s=round(elapsed, 3), progress=round(min(0.99, elapsed / last) if last else 0.0, 3))
        elif state["state"] == "failed":
            out["error"] = state["error"]
        return out

    def is_embedded(self, name: str) -> bool:
        with self._lock:
            return name in self._cache

    # ---- predictions -------------------------------------------------------------------------------------------
    def prediction(self, pid: str) -> Prediction:
        with self._lock:
            if pid not in self._predictions:
                raise KeyError(f"no prediction {pid!r} (the last {PREDICTIONS_KEPT} are kept)")
            return self._predictions[pid]

    def predict(self, name, points, labels, box, mask_input, multimask: bool, timeout: float = 600):
        """See the module docstring; ``mask_input`` = (prediction id, candidate index) or None. Returns the
        ``Prediction`` (kept) and its (M, H, W) bool masks."""
        self.photos.path(name)
        low_res_in = None
        if mask_input is not None:
            source = self.prediction(mask_input[0])
            if source.image != name:
                raise ValueError(f"prediction {source.id} is of photo {source.image!r}, not {name!r}")
            if not 0 <= mask_input[1] < len(source.scores):
                raise ValueError(f"prediction {source.id} has no candidate {mask_input[1]}")
            low_res_in = source.low_res[mask_input[1]][None]

        def run():
            emb, _ = self._embedding(name)
            start = time.perf_counter()
            masks, scores, low_res = self.predictor.predict_embedded(emb, points, labels, box, low_res_in, multimask)
            return masks, scores, low_res, (time.perf_counter() - start) * 1000

        masks, scores, low_res, ms = self.worker.submit(PREDICT, run).result(timeout)
        prompts = {
            "points": None if points is None else np.asarray(points).tolist(),
            "labels": None if labels is None else np.asarray(labels).tolist(),
            "box": None if box is None else np.asarray(box).tolist(),
            "mask_input": None if mask_input is None else {"prediction": mask_input[0], "index": mask_input[1]},
        }
        masks = np.asarray(masks, bool)
        size = masks.shape[-2:]
        pred = Prediction(
            f"p{next(self._ids)}",
            name,
            (int(size[0]), int(size[1])),
            np.packbits(masks.reshape(len(masks), -1), axis=1),
            np.asarray(scores, np.float32),
            np.asarray(low_res, np.float32),
            prompts,
            ms,
        )
        with self._lock:
            self._predictions[pred.id] = pred
            while len(self._predictions) > PREDICTIONS_KEPT:
                self._predictions.popitem(last=False)
        return pred, masks

    # ---- segment everything ------------------------------------------------------------------------------------
    def generate(self, name: str, options: dict[str, Any]) -> str:
        self.photos.path(name)
        job = Job(f"j{next(self._ids)}", name, dict(options))
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > JOBS_KEPT:
                self._jobs.popitem(last=False)

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            self.worker.run_urgent()

        def run():
            import sam2_jax

            try:
                generator = sam2_jax.Sam2AutomaticMaskGenerator(
                    predictor=self.predictor, output_mode="coco_rle", **job.options
                )
                job.records = generator.generate(self.photos.read(name), progress=progress)
                job.state = "done"
            except Exception as e:  # noqa: BLE001 - reported through the job
                job.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                job.state = "failed"

        self.worker.submit(GENERATE, run)
        return job.id

    def job(self, jid: str) -> Job:
        with self._lock:
            if jid not in self._jobs:
                raise KeyError(f"no job {jid!r}")
            return self._jobs[jid]

    def proposal(self, pid: str) -> tuple[Job, dict[str, Any]]:
        """A proposal id ``<job>.<k>`` -> (its job, the k-th record)."""
        jid, _, k = pid.partition(".")
        with self._lock:
            job = self._jobs.get(jid)
        if job is None or job.records is None or not k.isdigit() or int(k) >= len(job.records):
            raise KeyError(f"no proposal {pid!r}")
        return job, job.records[int(k)]

    def close(self) -> None:
        self.worker.close()
        self.background.close()
