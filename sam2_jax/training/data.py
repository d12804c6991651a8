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
  Subset(dataset, indices) -> some of a dataset's examples, with the same methods
  header_size(path) -> (H, W) upright, from the file's header (``image_headers.py``, shared with ``coco.py``)

Bad input. Errors (``ValueError`` naming the file), all found at construction from file names, JSON and image
headers (sizes, EXIF orientation; no pixel is decoded): no images at all (or none with masks); a mask whose
(upright) size differs from its image's; masks for an unknown image (a mask with no image of that name); two images
of one name; both mask forms for one image; a non-single-channel label image; in COCO, annotations for an unknown
image id and images listed but missing on disk. Counted skips (in ``skipped`` and ``report()``): an image without
masks (no mask file or an empty mask folder, as COCO images without annotations), an empty mask (dropped), an image
left with no object, a COCO crowd annotation. Empty masks need pixels: ``check_empty=True`` decodes every mask once
at construction (on a few threads) so the skips are known before training; with ``False`` they are dropped when read
(and counted then), and an image left with no object comes out with K = 0 (all padding in the loader).

The loader over a dataset (``DataLoader``, ``resize_masks``: grain) is ``loader.py``; datasets pickle (for its
worker processes).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..processing.images import open_upright, read_image
from .coco import load_coco
from .image_headers import header_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")
__all__ = ["Example", "SegmentationDataset", "Subset", "header_size"]


@dataclass
class Example:
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (K, H, W) bool


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

    def __getstate__(self) -> dict:  # picklable for the loader's worker processes (each counts its own skips)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

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


class Subset:
    """Some examples of a dataset (e.g. a held-out split) as a dataset: ``len``, ``[i]``, ``load``, ``size`` and
    ``image_path`` (what ``DataLoader`` and ``Trainer.evaluate`` use), index i meaning ``dataset[indices[i]]``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]

    def load(self, i: int, select=None):
        return self.dataset.load(self.indices[i], select)

    def size(self, i: int):
        return self.dataset.size(self.indices[i])

    def image_path(self, i: int):
        return self.dataset.image_path(self.indices[i])
