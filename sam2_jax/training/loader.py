"""The fine-tuning loader: batches of a ``SegmentationDataset`` (``data.py``), deterministic and resumable.

DataLoader(dataset, batch_size, image_size=1024, mask_size=256, max_objects=4, seed=0, shuffle=True,
           num_threads=2, prefetch=2, drop_last=True, state=None, epochs=None, rows=None): iterating yields dicts:
  pixel_values    (B, S, S, 3) float32: ``Sam2Processor(image_size).preprocess_image``, exactly
  masks           (B, P, M, M) bool, P = max_objects, M = mask_size: each target resized from the original
                  (H, W) to M x M (the image's squash, no aspect kept) by area coverage (Pillow's box filter;
                  bilinear when M exceeds H or W), then coverage > 0.5; a non-empty object that would vanish
                  keeps its pixels of at least half its maximum coverage (thin objects survive)
  valid           (B, P) bool, False = padding (an all-False mask)
  index           (B,) int64 dataset indices; original_sizes (B, 2) int64 (H, W)
An image with more than P objects gets P of them chosen at random, from (seed, epoch, position in the epoch);
an epoch visits the images in a permutation from (seed, epoch) (in order without ``shuffle``). The k-th batch
depends only on (dataset, seed, k), never on thread timing: examples are prepared on a thread pool
(``num_threads``, ``prefetch`` batches ahead) and collected in order. ``state()`` -> {"epoch", "position"
(examples of that epoch consumed), "seed", "num_examples"}, JSON-serialisable, the position after the last
batch yielded; ``DataLoader(..., state=s)`` resumes there (the state's seed wins). Iteration runs over epochs
forever (or ``epochs``); ``drop_last=False`` ends an epoch with a smaller batch; ``batches_per_epoch``,
``order(epoch)`` the visiting order. A worker's error is re-raised in the consumer as ``RuntimeError`` naming
the image file; the state stays before that batch, so the next call (or a resume) retries it. ``close()`` (or
``with``) cancels the prefetched work and joins the threads; an unclosed loader does not hold up the exit.
``rows=(start, stop)`` yields only rows ``start:stop`` of every batch, exactly those of the whole batch, preparing
only them (a process's share in multi-host training, ``Trainer.data_loader``; needs ``drop_last``); ``state()`` is
still the whole loader's, so every process holds the same position.
"""

from __future__ import annotations

import collections
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
    ):
        n = len(dataset)
        if batch_size < 1 or max_objects < 1 or (drop_last and n < batch_size):
            raise ValueError(f"batch_size {batch_size} / max_objects {max_objects} impossible for {n} examples")
        self.rows = (0, batch_size) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= self.rows[0] < self.rows[1] <= batch_size:
            raise ValueError(f"rows {self.rows[0]}:{self.rows[1]} are not a part of a batch of {batch_size}")
        if rows is not None and not drop_last:
            raise ValueError("a share of every batch (rows=) needs full batches: drop_last must be True")
        self.dataset, self.batch_size, self.mask_size, self.max_objects = dataset, batch_size, mask_size, max_objects
        self.processor = Sam2Processor(image_size)
        self.shuffle, self.drop_last, self.epochs, self.prefetch = shuffle, drop_last, epochs, max(prefetch, 1)
        self.seed, self._epoch, self._position = int(seed), 0, 0
        if state is not None:
            if int(state["num_examples"]) != n:
                raise ValueError(f"the state is for {state['num_examples']} examples, the dataset has {n}")
            self.seed, self._epoch, self._position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._cursor = (self._epoch, self._position)  # the next batch to submit
        self._pending: collections.deque = collections.deque()
        self._orders: dict[int, np.ndarray] = {}
        self._executor = ThreadPoolExecutor(max(num_threads, 1), thread_name_prefix="sam2-data")
        self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)

    @property
    def batches_per_epoch(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _epoch_end(self) -> int:
        return self.batches_per_epoch * self.batch_size if self.drop_last else len(self.dataset)

    def order(self, epoch: int) -> np.ndarray:
        """The dataset indices of an epoch, in visiting order."""
        if epoch not in self._orders:
            n = len(self.dataset)
            rng = np.random.default_rng([self.seed, epoch])
            self._orders = {epoch: rng.permutation(n) if self.shuffle else np.arange(n)}
        return self._orders[epoch]

    def state(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "position": self._position, "seed": self.seed, "num_examples": len(self.dataset)}

    def _advance(self, epoch: int, position: int) -> tuple[int, int]:
        position = min(position + self.batch_size, len(self.dataset))
        return (epoch + 1, 0) if position >= self._epoch_end() else (epoch, position)

    def _example(self, epoch: int, slot: int, index: int):
        try:

            def select(k: int) -> np.ndarray:
                if k <= self.max_objects:
                    return np.arange(k)
                rng = np.random.default_rng([self.seed, epoch, slot])
                return np.sort(rng.choice(k, self.max_objects, replace=False))

            ex = self.dataset.load(index, select)
            masks = ex.masks[: self.max_objects]  # (lazily dropped empty masks can only make fewer)
            padded = np.zeros((self.max_objects, self.mask_size, self.mask_size), bool)
            padded[: len(masks)] = resize_masks(masks, self.mask_size)
            valid = np.arange(self.max_objects) < len(masks)
            pixels, size = self.processor.preprocess_image(ex.image, ex.name)
            return pixels, padded, valid, index, size
        except Exception as e:
            raise RuntimeError(f"{self.dataset.image_path(index)}: {type(e).__name__}: {e}") from e

    def _submit(self) -> None:
        while len(self._pending) < self.prefetch:
            epoch, position = self._cursor
            if self.epochs is not None and epoch >= self.epochs:
                return
            order = self.order(epoch)
            end = min(position + self.rows[1], len(order))
            slots = range(position + self.rows[0], end)
            futures = [self._executor.submit(self._example, epoch, s, int(order[s])) for s in slots]
            self._pending.append(futures)
            self._cursor = self._advance(epoch, position)

    def __iter__(self) -> DataLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._executor is None:
            raise RuntimeError("the DataLoader is closed")
        self._submit()
        if not self._pending:
            raise StopIteration
        try:
            results = [f.result() for f in self._pending.popleft()]
        except BaseException:  # drop the prefetched batches: the next call retries this one
            for futures in self._pending:
                for f in futures:
                    f.cancel()
            self._pending.clear()
            self._cursor = (self._epoch, self._position)
            raise
        self._epoch, self._position = self._advance(self._epoch, self._position)
        self._submit()
        pixels, masks, valid, index, sizes = zip(*results, strict=True)
        return {
            "pixel_values": np.stack(pixels),
            "masks": np.stack(masks),
            "valid": np.stack(valid),
            "index": np.asarray(index, np.int64),
            "original_sizes": np.asarray(sizes, np.int64),
        }

    def close(self) -> None:
        """Cancel the prefetched work and join the threads."""
        if self._executor is not None:
            for futures in self._pending:
                for f in futures:
                    f.cancel()
            self._pending.clear()
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._finalizer.detach()
            self._executor = None

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
