"""The annotations of the server, kept in OUT: ``AnnotationStore(out_dir, photos, categories=None)``.

In OUT (see ``docs/annotate_api.md``):
  annotations.json   COCO: ``images`` [{id, file_name, width, height, done}], ``categories`` [{id, name}],
                     ``annotations`` [{id, image_id, image, category_id, segmentation: {size: [H, W], counts: str}
                     (COCO compressed RLE), area, bbox [x, y, w, h] (w = x1 - x0 + 1, pycocotools' toBbox), score,
                     iscrowd: 0, prompts, source, color}], and ``sam2_jax`` {next_annotation_id, ...} so that ids are
                     never reused; rewritten atomically (``utils.atomic.atomic_write``) after every change
  masks/<stem>.png   a label image per photo with objects: 0 background, the k-th object (in id order) k, later
                     objects over earlier ones; uint8, 16-bit (PIL ``I;16``) above 255 objects
  images/<file>      a symlink to each photo with objects (``sam2-jax finetune OUT`` reads images/ + masks/)
  .lock              ``fcntl.flock``-ed for the store's lifetime: a second store on OUT raises ``OutDirLocked``

An existing annotations.json is loaded: photos matched by ``file_name``; polygon and uncompressed-RLE
segmentations become compressed RLEs; images and annotations of photos not in DIR are kept as they are.
Methods (thread-safe; ``KeyError`` for unknown ids, ``ValueError`` for bad input; on a failed write the state
before the call is restored): ``categories()``, ``category_id(id)``, ``add_category(name) -> (category, created)``,
``image(name)``, ``counts()``, ``annotations_of(name)``, ``annotation(id)``, ``add(name, mask, ...)``,
``update(id, ...)``, ``delete(id)``, ``set_done(name, done)``, ``document()``, ``close()``.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..processing.rle import area_from_rle, coco_encode_rle, mask_to_rle, rle_to_mask
from ..utils.atomic import atomic_write
from .masks import color_of, encode_mask, polygons_to_mask
from .photos import PhotoLibrary

ANNOTATIONS = "annotations.json"
LOCK = ".lock"


class OutDirLocked(OSError):
    """OUT is held by another server."""


def lock_out(out: Path):
    """Take OUT's ``.lock`` (``fcntl.flock``, released when the returned file is closed) or raise ``OutDirLocked``."""
    f = open(out / LOCK, "a+")  # noqa: SIM115 - held by the caller
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise OutDirLocked(f"{out} is in use by another sam2-jax annotate server ({out / LOCK})") from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class AnnotationStore:
    """See the module docstring."""

    def __init__(self, out_dir: str | os.PathLike, photos: PhotoLibrary, categories: list[str] | None = None):
        self.out = Path(out_dir).expanduser()
        self.out.mkdir(parents=True, exist_ok=True)
        self.photos = photos
        self._lock = threading.RLock()
        self._lock_file = lock_out(self.out)
        try:
            self._load(categories or [])
        except BaseException:
            self.close()
            raise

    # ---- loading -----------------------------------------------------------------------------------------------
    def _load(self, names: list[str]) -> None:
        for folder in (self.out, self.out / "masks"):  # what a killed server left half-written
            for leftover in folder.glob(".*.partial") if folder.is_dir() else []:
                leftover.unlink(missing_ok=True)
        path = self.out / ANNOTATIONS
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                assert isinstance(data, dict)
            except (ValueError, AssertionError):
                raise ValueError(f"{path} is not a COCO JSON object") from None
        self.extra = {k: v for k, v in data.items() if k not in ("images", "categories", "annotations", "sam2_jax")}
        self.cats = [{"id": int(c["id"]), "name": str(c["name"])} for c in data.get("categories", [])]
        for name in names or ([] if self.cats else ["object"]):
            self.add_category(name, save=False)
        by_name, self.foreign_images = {}, []
        for im in data.get("images", []):
            if im.get("file_name") in self.photos:
                by_name[im["file_name"]] = im
            else:
                self.foreign_images.append(im)
        next_image = max([int(im["id"]) for im in data.get("images", [])] + [0]) + 1
        self.imgs: dict[str, dict[str, Any]] = {}
        for name in self.photos.names:
            h, w = self.photos.size(name)
            old = by_name.get(name, {})
            entry = {**old, "id": int(old["id"]) if "id" in old else next_image, "file_name": name}
            entry.update(width=w, height=h, done=bool(old.get("done", False)))
            next_image += "id" not in old
            self.imgs[name] = entry
        id_to_name = {im["id"]: n for n, im in self.imgs.items()}
        self.anns: list[dict[str, Any]] = []
        self.foreign_anns: list[dict[str, Any]] = []
        for ann in data.get("annotations", []):
            name = id_to_name.get(ann.get("image_id"))
            if name is None:
                self.foreign_anns.append(ann)
                continue
            self.anns.append(self._imported(ann, name))
        ids = [int(a["id"]) for a in self.anns + self.foreign_anns if isinstance(a.get("id"), int)]
        state = data.get("sam2_jax", {}) if isinstance(data.get("sam2_jax"), dict) else {}
        self.next_id = max([int(state.get("next_annotation_id", 1))] + [i + 1 for i in ids])
        for ann in self.anns:  # an imported annotation without an id gets a new one
            if not isinstance(ann.get("id"), int):
                ann["id"], ann["color"] = self.next_id, color_of(self.next_id)
                self.next_id += 1

    def _imported(self, ann: dict[str, Any], name: str) -> dict[str, Any]:
        h, w = self.photos.size(name)
        segm, where = ann.get("segmentation"), f"{ANNOTATIONS} annotation {ann.get('id')}"
        if isinstance(segm, list):
            segm = coco_encode_rle(mask_to_rle(polygons_to_mask(segm, h, w)[None])[0])
        elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
            segm = coco_encode_rle(segm)
        if not isinstance(segm, dict) or [int(v) for v in segm.get("size", [])] != [h, w]:
            raise ValueError(f"{where}: segmentation does not fit photo {name} ({h} x {w})")
        out = {**ann, "image": name, "segmentation": {"size": [h, w], "counts": segm["counts"]}}
        out.setdefault("area", area_from_rle(out["segmentation"]))
        out.setdefault("iscrowd", 0)
        out.setdefault("score", None)
        out.setdefault("prompts", None)
        out.setdefault("source", "import")
        out.setdefault("category_id", self.cats[0]["id"] if self.cats else None)
        out.setdefault("color", color_of(ann["id"]) if isinstance(ann.get("id"), int) else None)
        if "bbox" not in out:
            out["bbox"] = encode_mask(rle_to_mask(out["segmentation"]))["bbox"]
        return out

    # ---- reading -----------------------------------------------------------------------------------------------
    def categories(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self.cats]

    def category_id(self, cid: Any) -> int:
        """A known category id (``None``: the first category); else ``KeyError``."""
        with self._lock:
            if cid is None:
                return self.cats[0]["id"]
            if isinstance(cid, bool) or not isinstance(cid, int) or cid not in {c["id"] for c in self.cats}:
                raise KeyError(f"no category {cid!r}")
            return cid

    def image(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.imgs[name])

    def annotations_of(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            image_id = self.imgs[name]["id"]
            return [copy.deepcopy(a) for a in self.anns if a["image_id"] == image_id]

    def counts(self) -> dict[str, int]:
        """Objects per photo name."""
        with self._lock:
            per_id: dict[int, int] = {}
            for a in self.anns:
                per_id[a["image_id"]] = per_id.get(a["image_id"], 0) + 1
            return {name: per_id.get(im["id"], 0) for name, im in self.imgs.items()}

    def annotation(self, ann_id: int) -> dict[str, Any]:
        with self._lock:
            for a in self.anns:
                if a["id"] == ann_id:
                    return a
        raise KeyError(f"no annotation {ann_id!r}")

    # ---- changes -----------------------------------------------------------------------------------------------
    def _commit(self, change, names: list[str]):
        """Apply ``change()`` and write OUT; restore the previous state if anything fails."""
        with self._lock:
            # changes replace top-level fields only, so copies one level deep restore them
            saved = (
                [dict(a) for a in self.anns],
                [dict(c) for c in self.cats],
                {k: dict(i) for k, i in self.imgs.items()},
                self.next_id,
            )
            try:
                result = change()
                for name in names:
                    self._write_mask(name)
                self._write_json()
            except BaseException:
                self.anns, self.cats, self.imgs, self.next_id = saved
                raise
            return result

    def add_category(self, name: str, save: bool = True) -> tuple[dict[str, Any], bool]:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError("a category name must have 1 to 200 characters")
        with self._lock:
            for c in self.cats:
                if c["name"] == name:
                    return dict(c), False
            cat = {"id": max([c["id"] for c in self.cats] + [0]) + 1, "name": name}
            if not save:
                self.cats.append(cat)
                return dict(cat), True
            self._commit(lambda: self.cats.append(cat), [])
            return dict(cat), True

    def add(self, name: str, mask, category_id=None, score=None, prompts=None, source="click") -> dict[str, Any]:
        """A new object of photo ``name`` from its (H, W) bool mask; returns the annotation."""
        cid = self.category_id(category_id)
        h, w = self.photos.size(name)
        if np.shape(mask) != (h, w):
            raise ValueError(f"the mask is {np.shape(mask)}, photo {name} is {(h, w)}")

        def change():
            ann_id = self.next_id
            self.next_id += 1
            ann = {"id": ann_id, "image_id": self.imgs[name]["id"], "image": name, "category_id": cid}
            ann.update(encode_mask(mask), score=score, iscrowd=0, prompts=prompts, source=source)
            ann["color"] = color_of(ann_id)
            self.anns.append(ann)
            return copy.deepcopy(ann)

        return self._commit(change, [name])

    def update(self, ann_id: int, category_id=None, mask=None, score=None, prompts=None, source=None):
        """Relabel (``category_id``) and/or replace the mask (with its score, prompts and source)."""
        with self._lock:
            ann = self.annotation(ann_id)
            cid = None if category_id is None else self.category_id(category_id)
            name = ann["image"]

            def change():
                if cid is not None:
                    ann["category_id"] = cid
                if mask is not None:
                    ann.update(encode_mask(mask), score=score, prompts=prompts, source=source or ann["source"])
                return copy.deepcopy(ann)

            return self._commit(change, [name] if mask is not None else [])

    def delete(self, ann_id: int) -> None:
        with self._lock:
            ann = self.annotation(ann_id)
            self._commit(lambda: self.anns.remove(ann), [ann["image"]])

    def set_done(self, name: str, done: bool) -> dict[str, Any]:
        with self._lock:
            self.imgs[name]  # noqa: B018 - KeyError for an unknown photo
            return self._commit(lambda: self.imgs[name].update(done=bool(done)) or dict(self.imgs[name]), [])

    # ---- files -------------------------------------------------------------------------------------------------
    def _write_mask(self, name: str) -> None:
        from PIL import Image

        stem = Path(name).stem
        mask_path, link = self.out / "masks" / f"{stem}.png", self.out / "images" / name
        objects = self.annotations_of(name)
        if not objects:
            for p in (mask_path, link):
                if p.is_symlink() or p.exists():
                    p.unlink()
            return
        h, w = self.photos.size(name)
        label = np.zeros((h, w), np.uint8 if len(objects) <= 255 else np.uint16)
        for k, ann in enumerate(sorted(objects, key=lambda a: a["id"]), start=1):
            label[rle_to_mask(ann["segmentation"])] = k
        mask_path.parent.mkdir(exist_ok=True)
        atomic_write(mask_path, lambda f: Image.fromarray(label).save(f, format="PNG"))
        link.parent.mkdir(exist_ok=True)
        target = self.photos.path(name)
        if not link.is_symlink() or Path(os.readlink(link)) != target:
            tmp = link.with_name(f".{name}.{os.getpid()}.link")
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, link)

    def document(self) -> dict[str, Any]:
        """annotations.json's content."""
        with self._lock:
            images = sorted(self.imgs.values(), key=lambda im: im["id"]) + self.foreign_images
            return {
                **self.extra,
                "images": images,
                "categories": self.cats,
                "annotations": sorted(self.anns, key=lambda a: a["id"]) + self.foreign_anns,
                "sam2_jax": {"next_annotation_id": self.next_id},
            }

    def _write_json(self) -> None:
        text = json.dumps(self.document(), separators=(",", ":")).encode()
        atomic_write(self.out / ANNOTATIONS, lambda f: f.write(text))

    def close(self) -> None:
        """Release OUT's lock (idempotent)."""
        f, self._lock_file = getattr(self, "_lock_file", None), None
        if f is not None and not f.closed:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
