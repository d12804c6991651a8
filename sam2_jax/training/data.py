"""Fine-tuning data: instance-segmentation datasets read lazily from disk, and a deterministic, resumable loader.

Layouts (``<name>`` an image file's stem; images .jpg .jpeg .png .bmp .webp .tif .tiff, read upright by EXIF):
  SegmentationDataset.from_directory(root, check_empty=True)
        root/images/<name>.<ext> with either root/masks/<name>.png, a label image (0 background, every other
        value one instance, in ascending order; single-channel: L, P (palette indices), I, I;16), or
        root/masks/<name>/<k>.png, one binary mask per instance (nonzero = object; sorted by k numerically);
        masks are PNG (other files in masks/ are ignored); names and indices in sorted name order
  SegmentationDataset.from_coco(annotation_file, images_dir, include_crowd=False)   (see ``coco.py``;
        names are the ``file_name`` entries, indices in ascending image id order)
  dataset[i] -> Example(name, image (H, W, 3) uint8, masks (K, H, W) bool), K >= 1; len(dataset); names;
        skipped: [(file, reason)]; report() -> a one-line summary; image_path(i); size(i) -> (H, W);
        load(i, select) -> Example with only the objects ``select(K) -> indices`` picks (decodes only those)
  resize_masks(masks (K, H, W) bool, M) -> (K, M, M) bool, the loader's target resizing (below)
  header_size(path) -> (H, W) upright, from the file's header

Bad input. Errors (``ValueError`` naming the file), all found at construction from file names, JSON and image
headers (sizes, EXIF orientation; no pixel is decoded): no images at all (or none with masks); a mask whose
(upright) size differs from its image's; masks for an unknown image (a mask with no image of that name); two images
of one name; both mask forms for one image; a non-single-channel label image; in COCO, annotations for an unknown
image id and images listed but missing on disk. Counted skips (in ``skipped`` and ``report()``): an image without
masks (no mask file or an empty mask folder, as COCO images without annotations), an empty mask (dropped), an image
left with no object, a COCO crowd annotation. Empty masks need pixels: ``check_empty=True`` decodes every mask once
at construction (on a few threads) so the skips are known before training; with ``False`` they are dropped when read
(and counted then), and an image left with no object comes out with K = 0 (all padding in the loader).

DataLoader(dataset, batch_size, image_size=1024, mask_size=256, max_objects=4, seed=0, shuffle=True,
           num_threads=2, prefetch=2, drop_last=True, state=None, epochs=None): iterating yields dicts:
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
"""

from __future__ import annotations

import collections
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..processing.images import open_upright, read_image
from ..processing.processor import Sam2Processor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")
__all__ = ["DataLoader", "Example", "SegmentationDataset", "header_size"]


@dataclass
class Example:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (K, H, W) bool


def header_size(path: str | os.PathLike, mode: bool = False):
    """(height, width) of an image file once turned upright by its EXIF orientation, from its header only
    (with ``mode=True``: ((height, width), PIL mode))."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            (w, h), pil_mode = im.size, im.mode
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e
    size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    return (size, pil_mode) if mode else size


class _Label:
    def __init__(self, path: Path):
        self.path = path

    def load(self, select=None) -> tuple[np.ndarray, list[tuple[str, str]]]:
        label = np.asarray(open_upright(self.path))
        if label.ndim != 2:
            raise ValueError(f"{self.path}: a label image must be single-channel, got shape {label.shape}")
        label = label.view(np.uint8) if label.dtype == bool else label  # mode "1"
        small = label.dtype.kind == "u" and label.dtype.itemsize <= 2
        values = np.flatnonzero(np.bincount(label.ravel())) if small else np.unique(label)
        values = values[values != 0]
        values = values if select is None else values[select(len(values))]
        return label[None] == values[:, None, None].astype(label.dtype), []


class _Files:
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def load(self, select=None) -> tuple[np.ndarray, list[tuple[str, str]]]:
        masks, dropped = [], []
        for p in self.paths if select is None else [self.paths[j] for j in select(len(self.paths))]:
            im = open_upright(p)
            m = np.asarray(im if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("L")) > 0
            if m.any():
                masks.append(m)
            else:
                dropped.append((str(p), "empty mask"))
        return np.stack(masks) if masks else np.zeros((0, *header_size(self.paths[0])), bool), dropped


def _mask_number(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


class SegmentationDataset:
    """See the module docstring. Records are (name, image path, (H, W), masks source with ``load()``)."""

    def __init__(self, records: list, skipped: list[tuple[str, str]] | None = None, source: str = ""):
        self._records = list(records)
        self.skipped = list(skipped or [])
        self.source = source
        self._lock = threading.Lock()
        self._seen = set(self.skipped)

    @classmethod
    def from_directory(cls, root: str | os.PathLike, check_empty: bool = True) -> SegmentationDataset:
        root = Path(root)
        images_dir, masks_dir = root / "images", root / "masks"
        files = sorted(images_dir.iterdir()) if images_dir.is_dir() else []
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
        if not images:
            raise ValueError(f"{images_dir}: no images ({'/'.join(IMAGE_SUFFIXES)})")
        by_name: dict[str, Path] = {}
        for p in images:
            if p.stem in by_name:
                raise ValueError(f"{p}: two images named {p.stem!r} ({by_name[p.stem].name} and {p.name})")
            by_name[p.stem] = p
        entries = sorted(masks_dir.iterdir()) if masks_dir.is_dir() else []
        for e in entries:
            stem = e.name if e.is_dir() else e.stem
            if not e.name.startswith(".") and (e.is_dir() or e.suffix.lower() == ".png") and stem not in by_name:
                raise ValueError(f"{e}: masks for an unknown image (no {images_dir}/{stem}.<ext>)")
        records, skipped = [], []
        for name, path in by_name.items():
            label, folder = masks_dir / f"{name}.png", masks_dir / name
            if label.is_file() and folder.is_dir():
                raise ValueError(f"{label}: {name} has both a label image and a mask folder {folder}")
            if label.is_file():
                mask_files, source = [label], _Label(label)
            else:
                mask_files = sorted(folder.glob("*.png"), key=_mask_number) if folder.is_dir() else []
                mask_files = [p for p in mask_files if not p.name.startswith(".")]
                source = _Files(mask_files)
            if not mask_files:
                skipped.append((str(path), "no masks"))
                continue
            size = header_size(path)
            for m in mask_files:
                m_size, m_mode = header_size(m, mode=True)
                if m_size != size:
                    raise ValueError(f"{m}: mask (height, width) {m_size} differs from its image's {size}")
                if m is label and m_mode not in LABEL_MODES:
                    raise ValueError(
                        f"{m}: a label image must be single-channel ({'/'.join(LABEL_MODES)}), not {m_mode}"
                    )
            records.append((name, path, size, source))
        if not records:
            raise ValueError(f"{masks_dir}: no masks for any of the {len(by_name)} images in {images_dir}")
        dataset = cls(records, skipped, str(root))
        return dataset._drop_empty() if check_empty else dataset

    @classmethod
    def from_coco(
        cls, annotation_file: str | os.PathLike, images_dir: str | os.PathLike, include_crowd: bool = False
    ) -> SegmentationDataset:
        from .coco import load_coco

        records, skipped = load_coco(annotation_file, images_dir, include_crowd)
        if not records:
            raise ValueError(f"{annotation_file}: no image with an object ({len(skipped)} skips)")
        return cls(records, skipped, str(annotation_file))

    def _drop_empty(self) -> SegmentationDataset:
        keep = []
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
            loaded = list(pool.map(lambda rec: rec[3].load(), self._records))
        for (name, path, size, source), (masks, dropped) in zip(self._records, loaded, strict=True):
            self.skipped += dropped
            if not len(masks):
                self.skipped.append((str(path), "no objects"))
            elif dropped:  # keep only the non-empty files, so that K is known without decoding
                keep.append(
                    (name, path, size, _Files([p for p in source.paths if (str(p), "empty mask") not in dropped]))
                )
            else:
                keep.append((name, path, size, source))
        if not keep:
            raise ValueError(f"{self.source}: no image with an object ({len(self.skipped)} skips)")
        return type(self)(keep, self.skipped, self.source)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def names(self) -> list[str]:
        return [r[0] for r in self._records]

    def image_path(self, i: int) -> Path:
        return self._records[i][1]

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of example ``i``, from its header."""
        return self._records[i][2]

    def __getitem__(self, i: int) -> Example:
        return self.load(i)

    def load(self, i: int, select: Callable[[int], np.ndarray] | None = None) -> Example:
        """Example ``i``; ``select(K) -> indices`` picks the objects to decode (the loader's choice of P)."""
        name, path, size, source = self._records[i]
        image = read_image(path, name)
        masks, dropped = source.load(select)
        if image.shape[:2] != masks.shape[1:] or image.shape[:2] != size:
            raise ValueError(f"{path}: image {image.shape[:2]} and masks {masks.shape[1:]} differ in size")
        if dropped or not len(masks):
            with self._lock:
                for item in dropped + ([] if len(masks) else [(str(path), "no objects")]):
                    if item not in self._seen:
                        self._seen.add(item)
                        self.skipped.append(item)
        return Example(name, image, masks)

    def report(self) -> str:
        reasons = collections.Counter(reason for _, reason in self.skipped)
        detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return f"{len(self)} images from {self.source}; skipped: {detail}"


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
    ):
        n = len(dataset)
        if batch_size < 1 or max_objects < 1 or (drop_last and n < batch_size):
            raise ValueError(f"batch_size {batch_size} / max_objects {max_objects} impossible for {n} examples")
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
            end = min(position + self.batch_size, len(order))
            futures = [self._executor.submit(self._example, epoch, s, int(order[s])) for s in range(position, end)]
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
