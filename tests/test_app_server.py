"""``sam2-jax annotate``'s server (``sam2_jax.app``) on a randomised small checkpoint and photos made here.

Predictions through the API are ``Sam2ImagePredictor.predict``'s (clicks, negative clicks, a box, mask_input);
accepting, editing, relabelling and deleting objects rewrite annotations.json and masks/<stem>.png before the
answer; segment-everything jobs give ``Sam2AutomaticMaskGenerator.generate``'s records; a restart (and a COCO file
written elsewhere) carries on; ``sam2-jax finetune`` reads the output both ways; every bad request is a 4xx with
one line and writes nothing; the token, the lock, the CLI's first line and a SIGKILL during saves."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import TRUCK_JPG
from PIL import Image
from reference import random_params, tiny_test_config

import sam2_jax
from sam2_jax.app.server import create_app, start_server
from sam2_jax.app.store import OutDirLocked
from sam2_jax.processing.images import read_image
from sam2_jax.processing.rle import coco_encode_rle, mask_to_rle, rle_to_mask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("annotate") / "model"
    cfg = tiny_test_config()
    sam2_jax.save_converted(path, cfg, random_params(cfg, seed=0, video=False))
    return path


@pytest.fixture(scope="module")
def predictor(ckpt):
    return sam2_jax.Sam2ImagePredictor.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """DIR: truck.jpg, a.png (64 x 48), rotated.jpg (stored 40 x 30, EXIF 6: upright 30 x 40), and things that
    are not photos of the listing: notes.txt, a subdirectory, a symlink to a PNG outside DIR."""
    root = tmp_path_factory.mktemp("photos")
    d = root / "dir"
    d.mkdir()
    shutil.copy(TRUCK_JPG, d / "truck.jpg")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / "a.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(d / "rotated.jpg", exif=exif)
    (d / "notes.txt").write_text("not a photo")
    (d / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "sub" / "inner.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "secret.png")
    os.symlink(root / "secret.png", d / "outside.png")
    return d


@pytest.fixture
def server(photos, predictor, tmp_path):
    with start_server(photos, predictor, tmp_path / "out", categories=["cat", "dog"]) as handle:
        yield handle


OPEN_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


def client(handle, base: str | None = None) -> httpx.Client:
    """An HTTP client of the server (closed after the test)."""
    OPEN_CLIENTS.append(httpx.Client(base_url=base or f"http://127.0.0.1:{handle.port}", timeout=120))
    return OPEN_CLIENTS[-1]


def masks_of(answer) -> np.ndarray:
    return np.stack([rle_to_mask(m["rle"]) for m in answer["masks"]])


def test_listing_photos_and_embedding(server, photos):
    c = client(server)
    rows = c.get("/api/images").json()["images"]
    assert [r["name"] for r in rows] == ["a.png", "rotated.jpg", "truck.jpg"]
    assert [(r["width"], r["height"]) for r in rows] == [(64, 48), (30, 40), (1800, 1200)]
    info = c.get("/api/info").json()
    assert info["images"] == 3 and info["mode"] == "image" and [x["name"] for x in info["categories"]] == ["cat", "dog"]
    assert c.get("/api/images/a.png/file").content == (photos / "a.png").read_bytes()  # no rotation: as it is
    rotated = c.get("/api/images/rotated.jpg/file")
    assert rotated.headers["content-type"] == "image/png" and Image.open(io.BytesIO(rotated.content)).size == (30, 40)
    assert c.get("/api/images/a.png/embed").json()["state"] == "none"
    state = c.post("/api/images/a.png/embed").json()
    assert state["state"] in ("queued", "running", "ready")
    deadline = time.monotonic() + 120
    while c.get("/api/images/rotated.jpg/embed").json()["state"] != "ready":  # prefetched: the next photo
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ready = c.get("/api/images/a.png/embed").json()
    assert ready["state"] == "ready" and ready["progress"] == 1.0 and ready["elapsed_s"] > 0
    assert [r["embedded"] for r in c.get("/api/images").json()["images"]] == [True, True, False]


def test_predict_equals_predictor(server, predictor):
    c = client(server)
    predictor.set_image(read_image(TRUCK_JPG, "truck"))
    cases = [
        dict(points=[[500, 375]], labels=[1]),
        dict(points=[[500, 375], [1125, 625]], labels=[0, 1]),
        dict(box=[425, 600, 700, 875]),
        dict(points=[[575, 750]], labels=[1], box=[425, 600, 700, 875], multimask=False),
    ]
    first = None
    for case in cases:
        answer = c.post("/api/predict", json={"image": "truck.jpg", **case}).json()
        masks, scores, logits = predictor.predict(
            point_coords=np.asarray(case["points"], np.float32) if "points" in case else None,
            point_labels=np.asarray(case["labels"], np.int32) if "labels" in case else None,
            box=np.asarray(case["box"], np.float32) if "box" in case else None,
            multimask_output=case.get("multimask", True),
        )
        assert np.array_equal(masks_of(answer), masks)
        np.testing.assert_allclose([m["score"] for m in answer["masks"]], scores, atol=1e-6)
        assert answer["best"] == int(np.argmax(scores)) and (answer["width"], answer["height"]) == (1800, 1200)
        assert [m["area"] for m in answer["masks"]] == [int(m.sum()) for m in masks]
        first = first or (answer, logits, scores)
    answer0, logits0, scores0 = first
    best = int(np.argmax(scores0))
    body = {"image": "truck.jpg", "points": [[500, 375], [1125, 625]], "labels": [1, 1]}
    body["mask_input"] = {"prediction": answer0["prediction"], "index": best}
    refined = c.post("/api/predict", json=body)
    masks, scores, _ = predictor.predict(
        point_coords=np.asarray(body["points"], np.float32),
        point_labels=np.asarray(body["labels"], np.int32),
        mask_input=logits0[best][None],
    )
    assert np.array_equal(masks_of(refined.json()), masks)
    np.testing.assert_allclose([m["score"] for m in refined.json()["masks"]], scores, atol=1e-6)
    # candidates "best": only the best mask in the answer, the others one by one from the kept prediction
    lean = c.post("/api/predict", json={**body, "candidates": "best"}).json()
    k = lean["best"]
    assert [("rle" in m) for m in lean["masks"]] == [i == k for i in range(3)]
    assert np.array_equal(rle_to_mask(lean["masks"][k]["rle"]), masks[k])
    for i in range(3):
        one = c.get(f"/api/predictions/{lean['prediction']}/masks/{i}").json()
        assert np.array_equal(rle_to_mask(one["rle"]), masks[i]) and one["index"] == i
        assert one["area"] == lean["masks"][i]["area"] == int(masks[i].sum())
        assert one["bbox"] == lean["masks"][i]["bbox"] == refined.json()["masks"][i]["bbox"]
        np.testing.assert_allclose(one["score"], scores[i], atol=1e-6)
    for bad in (f"/api/predictions/{lean['prediction']}/masks/3", "/api/predictions/p99999/masks/0"):
        r = c.get(bad)
        assert r.status_code == 404 and "error" in r.json(), bad
    r = c.post("/api/predict", json={**body, "candidates": "some"})
    assert r.status_code == 400 and "candidates" in r.json()["error"]
    png = c.post("/api/predict", json={**body, "format": "png"}).json()["masks"][0]["png"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))) == 255, masks[0])
    # latency of one click through the API against the predictor's own predict (printed with -s)
    api_ms, own_ms = [], []
    for _ in range(20):
        t = time.perf_counter()
        c.post("/api/predict", json={"image": "truck.jpg", "points": [[500, 375]], "labels": [1]}).raise_for_status()
        api_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        predictor.predict(point_coords=np.asarray([[500, 375]], np.float32), point_labels=np.asarray([1], np.int32))
        own_ms.append((time.perf_counter() - t) * 1000)
    print(f"\n[latency] one click on truck.jpg: API {np.median(api_ms):.1f} ms, predict {np.median(own_ms):.1f} ms")


def read_out(out: Path):
    doc = json.loads((out / "annotations.json").read_text())
    return doc, {a["id"]: a for a in doc["annotations"]}


def test_accept_edit_delete_categories_done_and_restart(photos, predictor, tmp_path):
    out = tmp_path / "out"
    with start_server(photos, predictor, out, categories=["cat", "dog"]) as handle:
        c = client(handle)
        p = c.post("/api/predict", json={"image": "truck.jpg", "points": [[500, 375]], "labels": [1]}).json()
        t0 = time.monotonic()
        ann = c.post("/api/annotations", json={"image": "truck.jpg", "prediction": p["prediction"], "index": 1})
        assert ann.status_code == 201
        ann = ann.json()
        doc, anns = read_out(out)  # written before the answer
        assert time.monotonic() - t0 < 1.0
        saved = anns[ann["id"]]
        assert saved["category_id"] == 1 and saved["source"] == "click" and saved["prompts"]["points"] == [[500, 375]]
        assert np.array_equal(rle_to_mask(saved["segmentation"]), rle_to_mask(p["masks"][1]["rle"]))
        assert saved["score"] == pytest.approx(p["masks"][1]["score"]) and saved["color"].startswith("#")
        label = np.asarray(Image.open(out / "masks" / "truck.png"))
        assert label.dtype == np.uint8 and np.array_equal(label == 1, rle_to_mask(saved["segmentation"]))
        assert (out / "images" / "truck.jpg").resolve() == (photos / "truck.jpg").resolve()
        x, y, w, h = saved["bbox"]
        ys, xs = np.nonzero(label)
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max()) and saved["area"] == len(xs)
        # a second object (a mask made elsewhere), category by name, relabel, replace, delete
        square = np.zeros((1200, 1800), bool)
        square[100:200, 300:500] = True
        rle = coco_encode_rle(mask_to_rle(square[None])[0])
        cat = c.post("/api/categories", json={"name": "truck"})
        assert cat.status_code == 201 and c.post("/api/categories", json={"name": "truck"}).status_code == 200
        second = c.post("/api/annotations", json={"image": "truck.jpg", "rle": rle, "category_id": cat.json()["id"]})
        second = second.json()
        assert second["id"] == ann["id"] + 1 and second["source"] == "import"
        label = np.asarray(Image.open(out / "masks" / "truck.png"))
        assert np.array_equal(label == 2, square)  # later objects over earlier ones
        assert c.patch(f"/api/annotations/{ann['id']}", json={"category_id": 2}).json()["category_id"] == 2
        assert read_out(out)[1][ann["id"]]["category_id"] == 2
        q = c.post("/api/predict", json={"image": "truck.jpg", "box": [425, 600, 700, 875]}).json()
        edited = c.patch(f"/api/annotations/{ann['id']}", json={"prediction": q["prediction"], "index": 0}).json()
        assert np.array_equal(
            rle_to_mask(read_out(out)[1][ann["id"]]["segmentation"]), rle_to_mask(q["masks"][0]["rle"])
        )
        assert edited["prompts"]["box"] == [425, 600, 700, 875] and edited["category_id"] == 2
        assert c.delete(f"/api/annotations/{second['id']}").json() == {"deleted": second["id"]}
        assert set(read_out(out)[1]) == {ann["id"]}
        assert c.post("/api/images/truck.jpg/done", json={"done": True}).json()["done"] is True
        pa = c.post("/api/predict", json={"image": "a.png", "points": [[30, 20]], "labels": [1]}).json()
        c.post("/api/annotations", json={"image": "a.png", "prediction": pa["prediction"]}).raise_for_status()
        last = c.post("/api/annotations", json={"image": "a.png", "prediction": pa["prediction"], "index": 2}).json()
        c.delete(f"/api/annotations/{last['id']}").raise_for_status()  # the highest id: not reused after a restart
        before = c.get("/api/images/truck.jpg/annotations").json()
    with pytest.raises(OutDirLocked):  # the lock is held only while a server runs: stop() released it above,
        with start_server(photos, predictor, out), start_server(photos, predictor, out):
            pass
    with start_server(photos, predictor, out) as handle:
        c = client(handle)
        assert c.get("/api/images/truck.jpg/annotations").json() == before
        assert [x["name"] for x in c.get("/api/categories").json()["categories"]] == ["cat", "dog", "truck"]
        rows = {r["name"]: r for r in c.get("/api/images").json()["images"]}
        assert rows["truck.jpg"]["done"] and rows["truck.jpg"]["annotations"] == 1 and rows["a.png"]["annotations"] == 1
        corner = np.pad(np.ones((4, 4), bool), ((0, 44), (0, 60)))
        new = c.post("/api/annotations", json={"image": "a.png", "rle": mask_to_rle(corner[None])[0]}).json()
        assert new["id"] == last["id"] + 1


def test_generate_job_equals_generator(server, predictor):
    c = client(server)
    options = {"points_per_side": 4, "pred_iou_thresh": -100.0, "stability_score_thresh": 0.0}
    started = c.post("/api/images/truck.jpg/generate", json=options)
    assert started.status_code == 202
    jid = started.json()["job"]
    # a click while the job runs is answered (between batches, or before the job starts)
    c.post("/api/predict", json={"image": "truck.jpg", "points": [[500, 375]]}).raise_for_status()
    deadline = time.monotonic() + 300
    while (job := c.get(f"/api/jobs/{jid}").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["state"] == "done" and job["done"] == job["total"] > 0
    generator = sam2_jax.Sam2AutomaticMaskGenerator(predictor=predictor, output_mode="coco_rle", **options)
    records = generator.generate(read_image(TRUCK_JPG, "truck"))
    assert len(job["proposals"]) == len(records) > 0
    for prop, rec in zip(job["proposals"], records, strict=True):
        assert prop["rle"] == rec["segmentation"] and prop["area"] == rec["area"] and prop["bbox"] == rec["bbox"]
        assert prop["score"] == rec["predicted_iou"] and prop["stability_score"] == rec["stability_score"]
    accepted = c.post("/api/annotations", json={"image": "truck.jpg", "proposal": job["proposals"][0]["proposal"]})
    assert accepted.status_code == 201 and accepted.json()["source"] == "auto"
    assert accepted.json()["segmentation"] == records[0]["segmentation"]
    assert (
        c.post("/api/annotations", json={"image": "a.png", "proposal": job["proposals"][0]["proposal"]}).status_code
        == 400
    )


def test_existing_coco_file_is_loaded(photos, predictor, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    square = np.zeros((48, 64), bool)
    square[10:20, 5:25] = True
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}, {"id": 9, "file_name": "gone.jpg"}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 3, "segmentation": [[5, 10, 25, 10, 25, 20, 5, 20]], "iscrowd": 0},
            {"id": 12, "image_id": 7, "category_id": 3, "segmentation": mask_to_rle(square[None])[0]},
            {"id": 13, "image_id": 9, "category_id": 3, "segmentation": [[0, 0, 1, 0, 1, 1]]},
            {"image_id": 7, "segmentation": coco_encode_rle(mask_to_rle(square[None])[0])},  # no id: a new one
        ],
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    with start_server(photos, predictor, out) as handle:
        c = client(handle)
        anns = c.get("/api/images/a.png/annotations").json()["annotations"]
        assert [a["id"] for a in anns] == [11, 12, 14] and all(
            isinstance(a["segmentation"]["counts"], str) for a in anns
        )
        polygon = rle_to_mask(anns[0]["segmentation"])
        assert polygon[10:21, 5:26].all() and polygon.sum() == 11 * 21  # PIL fills the polygon's edges too
        assert np.array_equal(rle_to_mask(anns[1]["segmentation"]), square)
        assert anns[2]["segmentation"] == anns[1]["segmentation"] and anns[2]["category_id"] == 3
        assert c.get("/api/categories").json()["categories"] == [{"id": 3, "name": "thing"}]
        new = c.post("/api/annotations", json={"image": "a.png", "rle": anns[1]["segmentation"]}).json()
        assert new["id"] == 15 and new["category_id"] == 3
    doc, by_id = read_out(out)
    assert 13 in by_id and {"id": 9, "file_name": "gone.jpg"} in doc["images"]  # other photos' entries are kept


def test_finetune_reads_the_output(predictor, ckpt, tmp_path):
    """``sam2-jax finetune OUT`` (images/ + masks/) and ``finetune DIR --coco OUT/annotations.json`` both train on
    what the server wrote (one photo per device of the batch: the tests run on 8 host devices)."""
    import jax

    from sam2_jax.cli import main

    n = max(len(jax.devices()), 2)
    photos, out = tmp_path / "dir", tmp_path / "out"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    with start_server(photos, predictor, out) as handle:
        c = client(handle)
        p = c.post("/api/predict", json={"image": "p0.png", "points": [[30, 20]]}).json()
        c.post("/api/annotations", json={"image": "p0.png", "prediction": p["prediction"]}).raise_for_status()
        for i in range(1, n):
            mask = np.zeros((48, 64), bool)
            mask[5 + i : 30, 10 : 20 + 3 * i] = True
            rle = coco_encode_rle(mask_to_rle(mask[None])[0])
            c.post("/api/annotations", json={"image": f"p{i}.png", "rle": rle}).raise_for_status()
    small = ["--steps", "2", "--batch-size", str(len(jax.devices())), "--mask-size", "64", "--max-objects", "1",
             "--correction-steps", "0", "--checkpoint-every", "2", "--log-every", "1", "--no-progress",
             "--model", str(ckpt)]  # fmt: skip
    assert main(["finetune", str(out), "--out", str(tmp_path / "ft1"), *small]) == 0
    coco = ["--coco", str(out / "annotations.json")]
    assert main(["finetune", str(photos), *coco, "--out", str(tmp_path / "ft2"), *small]) == 0
    for ft in ("ft1", "ft2"):
        rows = (tmp_path / ft / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["step"] for r in rows] == [1, 2]


def files_of(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def test_bad_requests_are_4xx_and_write_nothing(server, photos):
    c = client(server)
    p = c.post("/api/predict", json={"image": "a.png", "points": [[30, 20]]}).json()
    ann = c.post("/api/annotations", json={"image": "a.png", "prediction": p["prediction"]}).json()
    out = server.app_state.store.out
    before = files_of(out)
    bad = [
        ("GET", "/api/images/..%2Fsecret.png/file", None, 404),
        ("GET", "/api/images/%2e%2e/file", None, 404),
        ("GET", f"/api/images/{photos}%2Ftruck.jpg/file", None, 404),  # an absolute path
        ("GET", "/api/images/outside.png/file", None, 404),  # a symlink out of DIR
        ("GET", "/api/images/notes.txt/file", None, 404),
        ("GET", "/api/images/sub%2Finner.png/file", None, 404),
        ("GET", "/api/images/missing.png/embed", None, 404),
        ("GET", "/static/..%2F..%2Fserver.py", None, 404),
        ("POST", "/api/predict", b"{not json", 400),
        ("POST", "/api/predict", b"[1, 2]", 400),
        ("POST", "/api/predict", b"", 400),
        ("POST", "/api/predict", {"image": "a.png"}, 400),
        ("POST", "/api/predict", {"image": 3, "points": [[1, 1]]}, 400),
        ("POST", "/api/predict", {"image": "nope.png", "points": [[1, 1]]}, 404),
        ("POST", "/api/predict", {"image": "a.png", "points": [[65, 1]]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[-1, 1]]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[1, 1]], "labels": [2]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[1, 1]], "labels": [1, 0]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [["1", 1]]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[True, 1]]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": "1,1"}, 400),
        ("POST", "/api/predict", {"image": "a.png", "box": [10, 10, 5, 20]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "box": [10, 10, 20]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "box": [0, 0, 10, 100]}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[1, 1]], "multimask": "yes"}, 400),
        ("POST", "/api/predict", {"image": "a.png", "points": [[1, 1]], "format": "gif"}, 400),
        ("POST", "/api/predict", {"image": "a.png", "mask_input": {"prediction": "p999999"}}, 404),
        ("POST", "/api/predict", {"image": "a.png", "mask_input": {"prediction": p["prediction"], "index": 5}}, 400),
        ("POST", "/api/predict", {"image": "truck.jpg", "mask_input": {"prediction": p["prediction"]}}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "prediction": "p999999"}, 404),
        ("POST", "/api/annotations", {"image": "a.png", "prediction": p["prediction"], "index": 3}, 400),
        ("POST", "/api/annotations", {"image": "truck.jpg", "prediction": p["prediction"]}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "prediction": p["prediction"], "category_id": 99}, 404),
        ("POST", "/api/annotations", {"image": "a.png", "prediction": p["prediction"], "category_id": "1"}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "proposal": "j1.0"}, 404),
        ("POST", "/api/annotations", {"image": "a.png"}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "rle": {"size": [2, 2], "counts": [1, 3]}}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "rle": {"size": [48, 64], "counts": "%%%"}}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "rle": {"size": [48, 64], "counts": [5]}}, 400),
        ("POST", "/api/annotations", {"image": "a.png", "png": "not base64!"}, 400),
        ("PATCH", f"/api/annotations/{ann['id']}", {}, 400),
        ("PATCH", f"/api/annotations/{ann['id']}", {"category_id": 42}, 404),
        ("PATCH", "/api/annotations/999", {"category_id": 1}, 404),
        ("PATCH", "/api/annotations/abc", {"category_id": 1}, 404),
        ("DELETE", "/api/annotations/999", None, 404),
        ("POST", "/api/categories", {"name": ""}, 400),
        ("POST", "/api/categories", {"name": 5}, 400),
        ("POST", "/api/images/a.png/done", {"done": "yes"}, 400),
        ("POST", "/api/images/a.png/generate", {"points_per_side": 0}, 400),
        ("POST", "/api/images/a.png/generate", {"points_per_side": 4.5}, 400),
        ("POST", "/api/images/a.png/generate", {"crop_n_layers": 1}, 400),
        ("GET", "/api/jobs/j999", None, 404),
        ("GET", "/api/nothing", None, 404),
        ("PUT", "/api/predict", {}, 405),
        ("POST", "/api/predict", b"x" * (1 << 20 | 1), 413),
    ]
    for method, url, body, status in bad:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
        r = c.request(method, url, **kw)
        assert r.status_code == status, (method, url, r.status_code, r.text)
        error = r.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error and "Traceback" not in error, (url, error)
    # a chunked body without a length is cut off at the limit too
    chunks = iter([b"{" + b" " * (1 << 19), b" " * (1 << 19), b"}"])
    r = c.post("/api/predict", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert files_of(out) == before  # nothing written
    assert c.get("/api/images").status_code == 200  # still up


def test_internal_errors_are_json(server, monkeypatch):
    c = client(server)
    monkeypatch.setattr(server.app_state.store, "categories", lambda: 1 / 0)
    r = c.get("/api/categories")
    assert r.status_code == 500 and r.json() == {"error": "internal error: ZeroDivisionError: division by zero"}


def test_token_off_loopback(photos, predictor, tmp_path):
    with start_server(photos, predictor, tmp_path / "out", host="127.0.0.2") as handle:
        assert handle.token and handle.url == f"http://127.0.0.2:{handle.port}/?token={handle.token}"
        base = f"http://127.0.0.2:{handle.port}"
        c = client(handle, base)
        for url in ("/api/images", "/api/images/a.png/file", "/", "/static/app.js"):
            r = c.get(url)
            assert r.status_code == 403 and r.json() == {"error": "missing or wrong token"}
        assert c.get("/api/images", params={"token": "wrong"}).status_code == 403
        assert c.get("/api/images", headers={"X-Sam2-Token": handle.token[:-1]}).status_code == 403
        assert c.post("/api/categories", json={"name": "x"}).status_code == 403
        assert c.get("/api/images", params={"token": handle.token}).status_code == 200
        assert c.get("/api/images", headers={"X-Sam2-Token": handle.token}).status_code == 200
        page = c.get("/", params={"token": handle.token})  # sets the cookie the page's <img> requests carry
        assert page.status_code in (200, 404) and c.cookies.get("sam2_token") == handle.token
        assert c.get("/api/images/a.png/file").status_code == 200
    assert not (tmp_path / "out" / "annotations.json").exists()
    with start_server(photos, predictor, tmp_path / "out2", token="secret") as handle:
        assert handle.url.endswith("/?token=secret")
        assert client(handle).get("/api/info").status_code == 403
        assert client(handle).get("/api/info", headers={"X-Sam2-Token": "secret"}).status_code == 200


def test_loopback_refuses_other_host_names(photos, predictor, tmp_path):
    """Without a token only loopback Host headers pass: a rebound DNS name pointing at 127.0.0.1 is refused."""
    with start_server(photos, predictor, tmp_path / "out") as handle:
        assert handle.token is None
        c = client(handle)
        for host in (f"127.0.0.1:{handle.port}", f"localhost:{handle.port}", "localhost"):
            assert c.get("/api/info", headers={"Host": host}).status_code == 200, host
        for host in (f"evil.example:{handle.port}", "127.0.0.1.evil.example", "10.0.0.1"):
            r = c.get("/api/images", headers={"Host": host})
            assert r.status_code == 403 and "is not a loopback address" in r.json()["error"], host
            assert c.post("/api/categories", json={"name": "x"}, headers={"Host": host}).status_code == 403
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_photo_listing_refusals_and_cache(photos, predictor, tmp_path):
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("x.png", "x.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(dup / name)
    with pytest.raises(ValueError, match="x.jpg and x.png have one stem"):
        create_app(dup, predictor, tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no photo"):
        create_app(tmp_path / "empty", predictor, tmp_path / "o2")
    with pytest.raises(ValueError, match="is not a directory"):
        create_app(tmp_path / "missing", predictor, tmp_path / "o3")
    # a cache of one embedding: opening a photo evicts the last one
    with start_server(photos, predictor, tmp_path / "o4", cache_mb=0.001, prefetch=False) as handle:
        c = client(handle)
        for name in ("a.png", "truck.jpg"):
            c.post("/api/predict", json={"image": name, "points": [[1, 1]]}).raise_for_status()
        assert [r["embedded"] for r in c.get("/api/images").json()["images"]] == [False, False, True]
        assert c.get("/api/images/a.png/embed").json()["state"] == "none"


def annotate_argv(photos, ckpt, out, *extra) -> list[str]:
    argv = [sys.executable, "-m", "sam2_jax", "annotate", str(photos), "--model", str(ckpt), "--out", str(out)]
    return [*argv, *extra]


CLI_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def test_cli_url_lock_and_sigkill_during_saves(photos, ckpt, predictor, tmp_path):
    out = tmp_path / "out"
    argv = annotate_argv(photos, ckpt, out, "--port", "0", "--categories", "cat,dog")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLI_ENV, cwd=ROOT)
    try:
        url = proc.stdout.readline().strip()  # the first line
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), (url, proc.stderr.read())
        c = client(None, url.rstrip("/"))
        assert [x["name"] for x in c.get("/api/categories").json()["categories"]] == ["cat", "dog"]
        second = subprocess.run(annotate_argv(photos, ckpt, out), capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert second.returncode == 1
        lines = (second.stdout + second.stderr).strip().splitlines()
        assert lines == [f"error: {out} is in use by another sam2-jax annotate server ({out / '.lock'})"]
        # accept objects in a loop, then SIGKILL the server in the middle of it
        accepted, stop = [], threading.Event()

        def accept_loop():
            rng = np.random.default_rng(0)
            while not stop.is_set():
                mask = rng.random((48, 64)) < 0.3
                try:
                    rle = coco_encode_rle(mask_to_rle(mask[None])[0])
                    r = c.post("/api/annotations", json={"image": "a.png", "rle": rle})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    accepted.append(r.json()["id"])

        thread = threading.Thread(target=accept_loop)
        thread.start()
        deadline = time.monotonic() + 60
        while len(accepted) < 20:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        thread.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    doc, anns = read_out(out)  # complete COCO: every answered accept is in it (maybe one more)
    assert set(accepted) <= set(anns) and len(anns) <= len(accepted) + 1
    assert {"images", "categories", "annotations"} <= set(doc)
    with start_server(photos, predictor, out) as handle:  # the lock died with the process
        c = client(handle)
        assert len(c.get("/api/images/a.png/annotations").json()["annotations"]) == len(anns)
        label = np.asarray(Image.open(out / "masks" / "a.png"))
        assert label.max() == len(anns)
    assert not list(out.rglob("*.partial"))


def test_column_rle_is_mask_to_rle():
    from sam2_jax.app.masks import column_rle, encode_masks

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(1, 12, 2)
        mask = rng.random((h, w)) < rng.random()
        assert column_rle(mask) == mask_to_rle(mask[None])[0]
    mask = np.zeros((30, 40), bool)
    mask[3:9, 5:21] = True
    assert encode_masks(mask[None]) == [
        {"segmentation": coco_encode_rle(mask_to_rle(mask[None])[0]), "area": 96, "bbox": [5, 3, 16, 6]}
    ]
