"""The JSON API of the annotation server (``docs/annotate_api.md``), as functions of an ``AnnotateState``.

Each handler takes (state, path parameters dict, body dict or None) and returns a JSON-able dict, or
(status, dict); it raises ``validation.ApiError`` for a refused request (``KeyError`` from the engine or store is
answered 404, ``ValueError`` 400 by ``server``). ``ROUTES`` lists (method, path, handler, body), body True (a
JSON object required), "optional" (no body reads as {}) or False. ``AnnotateState`` bundles the photo library,
the model engine and the annotation store of one server.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import validation as v
from .engine import ModelEngine
from .masks import encode_masks, mask_area_bbox
from .photos import PhotoLibrary
from .store import AnnotationStore

FORMATS = ("rle", "png")
CANDIDATES = ("all", "best")  # which candidates' masks a prediction's answer carries
GENERATE_OPTIONS = {  # Sam2AutomaticMaskGenerator's arguments a request may set: (type, lowest, highest)
    "points_per_side": (int, 1, 64),
    "pred_iou_thresh": (float, -1e9, 1e9),
    "stability_score_thresh": (float, -1e9, 1e9),
    "box_nms_thresh": (float, 0.0, 1.0),
    "min_mask_region_area": (int, 0, 1 << 30),
}


@dataclass
class AnnotateState:
    photos: PhotoLibrary
    engine: ModelEngine
    store: AnnotationStore
    model_name: str
    token: str | None = None

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def photo(state: AnnotateState, name: str) -> str:
    if name not in state.photos:
        raise v.ApiError(404, f"no photo {name!r} in the listing")
    return name


def png_b64(mask: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---- photos --------------------------------------------------------------------------------------------------------
def info(state, params, body):
    import sam2_jax

    return {
        "mode": "image",
        "model": state.model_name,
        "out": str(state.store.out),
        "categories": state.store.categories(),
        "images": len(state.photos),
        "version": sam2_jax.__version__,
    }


def images(state, params, body):
    rows, counts = [], state.store.counts()
    for name in state.photos.names:
        entry = state.store.image(name)
        rows.append(
            {
                "name": name,
                "width": entry["width"],
                "height": entry["height"],
                "annotations": counts[name],
                "done": entry["done"],
                "embedded": state.engine.is_embedded(name),
            }
        )
    return {"images": rows}


def embed(state, params, body):
    return state.engine.embed(photo(state, params["name"]))


def embed_state(state, params, body):
    return state.engine.embed_state(photo(state, params["name"]))


def done(state, params, body):
    name = photo(state, params["name"])
    entry = state.store.set_done(name, v.boolean(body, "done", default=True))
    return {"name": name, "done": entry["done"]}


# ---- predictions ---------------------------------------------------------------------------------------------------
def candidate_row(pred, i: int, mask: np.ndarray, fmt: str | None) -> dict[str, Any]:
    """{"index", "score", "area", "bbox"} of candidate i, with its mask as "rle" or "png" unless ``fmt`` is None."""
    row = {"index": i, "score": float(pred.scores[i])}
    if fmt is None:
        row.update(mask_area_bbox(mask))
        return row
    enc = encode_masks(mask[None])[0]
    row.update({"area": enc["area"], "bbox": enc["bbox"]})
    row.update({"png": png_b64(mask)} if fmt == "png" else {"rle": enc["segmentation"]})
    return row


def candidate(state, params, body):
    """One candidate of a kept prediction, with its mask as COCO RLE (the page asks for it on Tab)."""
    pred = state.engine.prediction(params["id"])
    i = int(params["index"])
    if not 0 <= i < len(pred.scores):
        raise v.ApiError(404, f"prediction {pred.id} has no candidate {i}")
    return candidate_row(pred, i, pred.mask(i), "rle")


def predict(state, params, body):
    name = photo(state, v.string(body, "image"))
    size = state.photos.size(name)
    points, labels = v.points(body, size)
    box, ref = v.box(body, size), v.mask_ref(body)
    multimask = v.boolean(body, "multimask", default=True)
    fmt = v.string(body, "format", default="rle")
    if fmt not in FORMATS:
        raise v.ApiError(400, f"'format' must be one of {FORMATS}, got {fmt!r}")
    if points is None and box is None and ref is None:
        raise v.ApiError(400, "give 'points' (with 'labels'), a 'box' or a 'mask_input'")
    candidates = v.string(body, "candidates", default="all")
    if candidates not in CANDIDATES:
        raise v.ApiError(400, f"'candidates' must be one of {CANDIDATES}, got {candidates!r}")
    pred, masks = state.engine.predict(name, points, labels, box, ref, multimask)
    best = int(np.argmax(pred.scores))
    out = []
    for i, mask in enumerate(masks):  # "best": the others' masks only on request (candidate), ~3x less to encode
        out.append(candidate_row(pred, i, mask, fmt if candidates == "all" or i == best else None))
    h, w = pred.size
    return {"prediction": pred.id, "image": name, "width": w, "height": h, "best": best,
            "predict_ms": round(pred.predict_ms, 3), "masks": out}  # fmt: skip


# ---- annotations ---------------------------------------------------------------------------------------------------
def annotations_of(state, params, body):
    return {"annotations": state.store.annotations_of(photo(state, params["name"]))}


def _candidate(state, body, name):
    """(mask, score, prompts, source) of a prediction's candidate named in ``body``."""
    pred = state.engine.prediction(v.string(body, "prediction"))
    if pred.image != name:
        raise v.ApiError(400, f"prediction {pred.id} is of photo {pred.image!r}, not {name!r}")
    index = v.integer(body, "index", 0, len(pred.scores) - 1, default=int(np.argmax(pred.scores)))
    return pred.mask(index), float(pred.scores[index]), {**pred.prompts, "candidate": index}, "click"


def _category(state, body):
    cid = body.get("category_id")
    if cid is not None:
        v.integer(body, "category_id")
    return state.store.category_id(cid)


def accept(state, params, body):
    name = photo(state, v.string(body, "image"))
    cid = _category(state, body)
    if body.get("prediction") is not None:
        mask, score, prompts, source = _candidate(state, body, name)
    elif body.get("proposal") is not None:
        job, rec = state.engine.proposal(v.string(body, "proposal"))
        if job.image != name:
            raise v.ApiError(400, f"proposal {body['proposal']} is of photo {job.image!r}, not {name!r}")
        from ..processing.rle import rle_to_mask

        mask, score, source = rle_to_mask(rec["segmentation"]), float(rec["predicted_iou"]), "auto"
        prompts = {"points": rec["point_coords"], "labels": [1], "box": None, "mask_input": None}
    else:
        mask, score, source = v.decode_mask(body, state.photos.size(name)), None, "import"
        prompts = body.get("prompts")
        if prompts is not None and not isinstance(prompts, dict):
            raise v.ApiError(400, "'prompts' must be an object")
    if not mask.any():
        raise v.ApiError(400, "the mask is empty")
    return 201, state.store.add(name, mask, cid, score, prompts, source)


def _ann_id(params) -> int:
    text = params["id"]
    if not text.isdigit():
        raise v.ApiError(404, f"no annotation {text!r}")
    return int(text)


def edit(state, params, body):
    ann = state.store.annotation(_ann_id(params))
    if body.get("category_id") is None and body.get("prediction") is None:
        raise v.ApiError(400, "give 'category_id' and/or 'prediction' (with 'index')")
    cid = _category(state, body) if body.get("category_id") is not None else None
    if body.get("prediction") is None:
        return state.store.update(ann["id"], category_id=cid)
    mask, score, prompts, source = _candidate(state, body, ann["image"])
    if not mask.any():
        raise v.ApiError(400, "the mask is empty")
    return state.store.update(ann["id"], cid, mask, score, prompts, source)


def delete(state, params, body):
    ann_id = _ann_id(params)
    state.store.delete(ann_id)
    return {"deleted": ann_id}


# ---- categories ----------------------------------------------------------------------------------------------------
def categories(state, params, body):
    return {"categories": state.store.categories()}


def add_category(state, params, body):
    cat, created = state.store.add_category(v.string(body, "name"))
    return (201 if created else 200), cat


# ---- segment everything --------------------------------------------------------------------------------------------
def generate(state, params, body):
    name = photo(state, params["name"])
    unknown = sorted(set(body) - set(GENERATE_OPTIONS))
    if unknown:
        raise v.ApiError(400, f"unknown option {unknown[0]!r}; known: {', '.join(GENERATE_OPTIONS)}")
    options = {}
    for key, (kind, lo, hi) in GENERATE_OPTIONS.items():
        if body.get(key) is not None:
            options[key] = (v.integer if kind is int else v.number)(body, key, lo, hi)
    return 202, {"job": state.engine.generate(name, options)}


def job(state, params, body):
    j = state.engine.job(params["job"])
    out: dict[str, Any] = {"state": j.state, "done": j.done, "total": j.total, "image": j.image}
    if j.error is not None:
        out["error"] = j.error
    if j.records is not None:
        out["proposals"] = [
            {
                "proposal": f"{j.id}.{k}",
                "score": r["predicted_iou"],
                "stability_score": r["stability_score"],
                "area": r["area"],
                "bbox": r["bbox"],
                "point_coords": r["point_coords"],
                "rle": r["segmentation"],
            }
            for k, r in enumerate(j.records)
        ]
    return out


ROUTES = [
    ("GET", "/api/info", info, False),
    ("GET", "/api/images", images, False),
    ("POST", "/api/images/{name:path}/embed", embed, False),
    ("GET", "/api/images/{name:path}/embed", embed_state, False),
    ("POST", "/api/images/{name:path}/done", done, True),
    ("GET", "/api/images/{name:path}/annotations", annotations_of, False),
    ("POST", "/api/images/{name:path}/generate", generate, "optional"),
    ("POST", "/api/predict", predict, True),
    ("GET", "/api/predictions/{id}/masks/{index:int}", candidate, False),
    ("POST", "/api/annotations", accept, True),
    ("PATCH", "/api/annotations/{id}", edit, True),
    ("DELETE", "/api/annotations/{id}", delete, False),
    ("GET", "/api/categories", categories, False),
    ("POST", "/api/categories", add_category, True),
    ("GET", "/api/jobs/{job}", job, False),
]
