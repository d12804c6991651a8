"""The fine-tuning loader on grain: batches of a ``SegmentationDataset`` (``data.py``), deterministic, resumable.

DataLoader(dataset, batch_size, image_size=1024, mask_size=256, max_objects=4, seed=0, shuffle=True,
           num_threads=2, prefetch=2, drop_last=True, state=None, epochs=None, rows=None, worker_count=0):
iterating yields dicts:
  pixel_values    (B, S, S, 3) float32: ``Sam2Processor(image_size).preprocess_image``, exactly
  masks           (B, P, M, M) bool, P = max_objects, M = mask_size: each target resized from the original
                  (H, W) to M x M (the image's squash, no aspect kept) by area coverage (Pillow's box filter;
                  bilinear when M exceeds H or W), then coverage > 0.5; a non-empty object that would vanish
                  keeps its pixels of at least half its maximum coverage (thin objects survive)
  valid           (B, P) bool, False = padding (an all-False mask)
  index           (B,) int64 dataset indices; original_sizes (B, 2) int64 (H, W)

The pipeline is a ``grain.MapDataset``: ``range(n)``, ``shuffle(seed)`` (grain reseeds each epoch: epoch e visits
a permutation from (seed, e); in order without ``shuffle``), ``batch(batch_size, drop_remainder=drop_last)``,
``repeat(epochs)`` (forever when None), then ``map_with_index`` decoding the k-th batch's rows. An image with more
than P objects gets P of them chosen at random from (seed, k, row in the batch). Batches are decoded on grain's
threads (``num_threads``, ``prefetch`` batches ahead; ``ReadOptions``) or, with ``worker_count`` > 0, in that many
worker processes (``mp_prefetch``); the k-th batch depends only on (dataset, seed, k) either way.

``state()`` -> {"iterator": grain's iterator state (``get_state()``, e.g. {"next_index": batches consumed}),
"seed", "num_examples"}, JSON-serialisable; ``DataLoader(..., state=s)`` resumes there (``set_state``; the state's
seed wins; its ``worker_count`` must be the same). A decoding error is re-raised as ``RuntimeError`` naming the
image file and the iterator is put back before that batch, so the next call (or a resume) retries it. ``close()``
(or ``with``) stops the prefetching (``state()`` stays readable); an unclosed loader does not hold up the exit.
``rows=(start, stop)`` yields only rows ``start:stop`` of every batch, decoding only them (a process's share in
multi-host training, ``Trainer.data_loader``; needs ``drop_last``); ``state()`` is the same on every process.
``batches_per_epoch``. ``prepare``: a picklable ``(k, the k-th batch's dataset indices) -> batch dict`` to run
instead of decoding ``dataset``'s images (``dataset`` then needs only ``len``; the video trainer's clips).
Note grain's per-epoch seed is ``seed + epoch``: seed s's epoch 1 is seed s + 1's epoch 0.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from ..processing.processor import Sam2Processor
from .data import SegmentationDataset

__all__ = ["DataLoader", "resize_masks"]


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(K, H, W) bool -> (K, size, size) bool by area coverage > 0.5, thin objects kept (module docstring)."""
    from PIL import Image

    out = np.zeros((len(masks), size, size), bool)
    h, w = masks.shape[1:]
    method = Image.BOX if size <= min(h, w) else Image.BILINEAR
    for k, m in enumerate(masks):
        cov = np.asarray(Image.fromarray(m.astype(np.float32)).resize((size, size), method))
        out[k] = cov > 0.5
        if not out[k].any() and m.any():
            out[k] = cov >= 0.5 * cov.max() if cov.max() > 0 else False
    return out


class _PrepareBatch:
    """(k, the k-th batch's dataset indices) -> the loader's dict of rows ``start:stop`` (picklable for workers)."""

    def __init__(self, dataset, image_size: int, mask_size: int, max_objects: int, seed: int, rows, threads=1):
        self.dataset, self.image_size, self.mask_size, self.max_objects = dataset, image_size, mask_size, max_objects
        self.seed, self.rows, self.threads = seed, rows, threads
        self.processor = Sam2Processor(image_size)
        self._pool = None  # the rows of a batch decode in parallel (made where it runs: not pickled to workers)

    def __getstate__(self):
        return {**self.__dict__, "_pool": None}

    def _map(self, fn, items):
        if self.threads <= 1:
            return [fn(*x) for x in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sam2-decode")
        return list(self._pool.map(lambda x: fn(*x), items))

    def example(self, k: int, slot: int, index: int):
        try:

            def select(count: int) -> np.ndarray:
                if count <= self.max_objects:
                    return np.arange(count)
                rng = np.random.default_rng([self.seed, k, slot])
                return np.sort(rng.choice(count, self.max_objects, replace=False))

            ex = self.dataset.load(index, select)
            masks = ex.masks[: self.max_objects]  # (lazily dropped empty masks can only make fewer)
            padded = np.zeros((self.max_objects, self.mask_size, self.mask_size), bool)
            padded[: len(masks)] = resize_masks(masks, self.mask_size)
            valid = np.arange(self.max_objects) < len(masks)
            pixels, size = self.processor.preprocess_image(ex.image, ex.name)
            return pixels, padded, valid, index, size
        except Exception as e:
            raise RuntimeError(f"{self.dataset.image_path(index)}: {type(e).__name__}: {e}") from e

    def __call__(self, k: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        start, stop = self.rows
        slots = range(start, min(stop, len(indices)))
        rows = self._map(self.example, [(k, s, int(indices[s])) for s in slots])
        pixels, masks, valid, index, sizes = zip(*rows, strict=True)
        return {
            "pixel_values": np.stack(pixels),
            "masks": np.stack(masks),
            "valid": np.stack(valid),
            "index": np.asarray(index, np.int64),
            "original_sizes": np.asarray(sizes, np.int64),
        }


class DataLoader:
    """See the module docstring."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        batch_size: int,
        image_size: int = 1024,
        mask_size: int = 256,
        max_objects: int = 4,
        seed: int = 0,
        shuffle: bool = True,
        num_threads: int = 2,
        prefetch: int = 2,
        drop_last: bool = True,
        state: dict | None = None,
        epochs: int | None = None,
        rows: tuple[int, int] | None = None,
        worker_count: int = 0,
        prepare=None,
    ):
        n = len(dataset)
        if batch_size < 1 or max_objects < 1 or (drop_last and n < batch_size):
            raise ValueError(f"batch_size {batch_size} / max_objects {max_objects} impossible for {n} examples")
        self.rows = (0, batch_size) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= self.rows[0] < self.rows[1] <= batch_size:
            raise ValueError(f"rows {self.rows[0]}:{self.rows[1]} are not a part of a batch of {batch_size}")
        if rows is not None and not drop_last:
            raise ValueError("a share of every batch (rows=) needs full batches: drop_last must be True")
        if state is not None and int(state["num_examples"]) != n:
            raise ValueError(f"the state is for {state['num_examples']} examples, the dataset has {n}")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.seed = int(seed if state is None else state["seed"])
        order = grain.MapDataset.range(n)
        order = order.shuffle(seed=self.seed) if shuffle else order
        batches = order.batch(batch_size, drop_remainder=drop_last).repeat(epochs)
        if prepare is None:
            prepare = _PrepareBatch(dataset, image_size, mask_size, max_objects, self.seed, self.rows, num_threads)
        self._prepare = prepare
        read = grain.ReadOptions(num_threads=max(num_threads, 1), prefetch_buffer_size=max(prefetch, 1))
        pipeline = batches.map_with_index(prepare).to_iter_dataset(read)
        if worker_count > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's worker processes read its absl flags (their defaults here)
                flags.FLAGS.mark_as_parsed()
            pipeline = pipeline.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
        self._iterator = iter(pipeline)
        if state is not None:
            self._iterator.set_state(state["iterator"])

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state(self) -> dict[str, Any]:
        """Where the next batch comes from: grain's iterator state, the seed and the dataset's size."""
        state = self._final_state if self._iterator is None else self._iterator.get_state()
        return {"iterator": state, "seed": self.seed, "num_examples": len(self.dataset)}

    def _check_open(self) -> None:
        if self._iterator is None:
            raise RuntimeError("the DataLoader is closed")

    def __iter__(self) -> DataLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        self._check_open()
        before = self._iterator.get_state()
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except BaseException:
            self._iterator.set_state(before)  # the prefetched batches are dropped: the next call retries this one
            raise

    def close(self) -> None:
        """Stop the prefetching (threads or worker processes)."""
        if self._iterator is not None:
            self._final_state = self._iterator.get_state()
            self._iterator.close()
            self._iterator = None
        if getattr(self._prepare, "_pool", None) is not None:
            self._prepare._pool.shutdown(wait=True)
            self._prepare._pool = None

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
