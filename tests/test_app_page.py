"""The page of ``sam2-jax annotate`` (``sam2_jax/app/static/``) driven in headless Chromium with Selenium.

Every test starts its own server (``start_server`` on a free loopback port, a fresh OUT) over one randomised
small model; the masks the page accepts are compared with ``Sam2ImagePredictor.predict`` (and the automatic mask
generator) on the same photo. Waits are on ``window.sam2Debug`` (``state.ready``, ``state.settled``, the click
timings), never fixed sleeps.

Screenshots go to the test's tmp dir (and to ``$SAM2_JAX_SCREENSHOTS`` when set, to look at them);
``SAM2_JAX_SCREENSHOT=docs/annotate.png`` makes ``test_screenshot`` write the documentation's screenshot there.
Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")
pytest.importorskip("uvicorn", reason="needs uvicorn and starlette (pip install 'sam2-jax[app]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.mouse_button import MouseButton  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import sam2_jax  # noqa: E402
from sam2_jax.app.server import start_server  # noqa: E402
from sam2_jax.processing.images import read_image  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = ("groceries.jpg", "truck.jpg")  # the listing is sorted: groceries first
WAIT_S = 60
# "Segment everything" options: a coarse grid, and thresholds the random model's masks pass
# box_nms_thresh 1: the random model's masks all span the photo, so NMS would leave one proposal
GENERATE = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def predictor():
    from tests.reference import random_params, tiny_test_config

    config = tiny_test_config()
    params = random_params(config, video=False)
    return sam2_jax.Sam2ImagePredictor(sam2_jax.Sam2Model(config), params)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(EXAMPLES / name, d / name)
    return d


@pytest.fixture(scope="module")
def photos(images_dir):
    return {name: read_image(images_dir / name, name) for name in PHOTOS}


@pytest.fixture(scope="module")
def driver():
    profile = tempfile.mkdtemp(prefix="sam2-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    drv.set_script_timeout(WAIT_S)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def out_dir(tmp_path):
    return tmp_path / "out"


@pytest.fixture
def server(images_dir, predictor, out_dir):
    handle = start_server(images_dir, predictor, out_dir, port=0)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def shots(tmp_path):
    """save(driver, name): a screenshot into the test's tmp dir (and $SAM2_JAX_SCREENSHOTS)."""
    extra = os.environ.get("SAM2_JAX_SCREENSHOTS")

    def save(drv, name):
        path = tmp_path / f"{name}.png"
        assert drv.save_screenshot(str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    return save


# ------------------------------------------------------------------------------------------------ helpers
def state(drv) -> dict:
    return drv.execute_script("return JSON.parse(JSON.stringify(window.sam2Debug.state))")


def debug(drv, key):
    return drv.execute_script(f"return window.sam2Debug && window.sam2Debug[{json.dumps(key)}]")


def wait_js(drv, condition: str, timeout: float = WAIT_S):
    """Wait until the JavaScript expression is truthy (sam2Debug is ``d``, its state ``s``)."""
    script = f"const d = window.sam2Debug; if (!d) return false; const s = d.state; return !!({condition});"
    try:
        WebDriverWait(drv, timeout, poll_frequency=0.02).until(lambda d: d.execute_script(script))
    except Exception as err:
        status = drv.find_element(By.ID, "status").text
        raise AssertionError(f"timed out waiting for {condition}; status line: {status!r}") from err


def open_page(drv, url: str, image: str | None = None):
    drv.get(url + (f"{'&' if '?' in url else '?'}image={image}" if image else ""))
    wait_js(drv, "s.ready")
    return state(drv)


def image_rect(drv) -> dict:
    return drv.execute_script(
        "const e = document.getElementById('image'); const r = e.getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, height: r.height,"
        " nw: e.naturalWidth, nh: e.naturalHeight};"
    )


def client_at(drv, fx: float, fy: float) -> tuple[int, int]:
    """Integer viewport coordinates at the fraction (fx, fy) of the photo."""
    r = image_rect(drv)
    return int(round(r["left"] + fx * r["width"])), int(round(r["top"] + fy * r["height"]))


def to_image(drv, cx: int, cy: int) -> list[float]:
    """The convention: image x = (client x - element left) * natural width / element width, the same for y."""
    r = image_rect(drv)
    return [(cx - r["left"]) * r["nw"] / r["width"], (cy - r["top"]) * r["nh"] / r["height"]]


def pointer(drv, steps, keys=()):
    """Run pointer steps ("move", x, y) | ("down", button) | ("up", button) with ``keys`` held throughout."""
    ab = ActionBuilder(drv)
    for k in keys:
        ab.key_action.key_down(k)
        ab.pointer_action.pause(0)
    for s in steps:
        if s[0] == "move":
            ab.pointer_action.move_to_location(s[1], s[2])
        elif s[0] == "down":
            ab.pointer_action.pointer_down(s[1])
        else:
            ab.pointer_action.pointer_up(s[1])
        ab.key_action.pause(0)
    for k in keys:
        ab.key_action.key_up(k)
        ab.pointer_action.pause(0)
    ab.perform()


def click(drv, cx, cy, button=MouseButton.LEFT, keys=()):
    """Click at viewport (cx, cy) and wait for its mask to be drawn; the image point it stands for."""
    n = len(debug(drv, "timings"))
    pointer(drv, [("move", cx, cy), ("down", button), ("up", button)], keys)
    wait_js(drv, f"d.timings.length > {n} && s.settled")
    return to_image(drv, cx, cy)


def drag(drv, a, b):
    n = len(debug(drv, "timings"))
    mid = ((a[0] + b[0]) // 2, (a[1] + b[1]) // 2)
    left = MouseButton.LEFT
    pointer(drv, [("move", *a), ("down", left), ("move", *mid), ("move", *b), ("up", left)])
    wait_js(drv, f"d.timings.length > {n} && s.settled")
    pa, pb = to_image(drv, *a), to_image(drv, *b)
    return [min(pa[0], pb[0]), min(pa[1], pb[1]), max(pa[0], pb[0]), max(pa[1], pb[1])]


def press(drv, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(drv)
    for k in keys:
        chain.send_keys(k)
    chain.perform()


def ctrl_z(drv):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()


def accept(drv, key=Keys.ENTER) -> int:
    """Press Enter and wait for the page to list the new object; its id."""
    n = len(state(drv)["annotations"])
    press(drv, key)
    wait_js(drv, f"s.annotations.length > {n} && !s.accepting")
    return state(drv)["annotations"][-1]


def stored(out_dir: Path, ann_id: int) -> dict:
    """The annotation in OUT/annotations.json, which is written before the accept is answered (read within 1 s)."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            doc = json.loads((out_dir / "annotations.json").read_text())
            found = [a for a in doc["annotations"] if a["id"] == ann_id]
            if found:
                return found[0]
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"annotation {ann_id} not in {out_dir / 'annotations.json'} within 1 s")
        time.sleep(0.05)


def decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts})


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def reference(predictor, photo, index=None, **prompts):
    """``predict``'s mask (the best score's, or candidate ``index``) and the candidates' scores."""
    predictor.set_image(photo)
    masks, scores, _ = predictor.predict(**prompts, multimask_output=True)
    return np.asarray(masks[int(np.argmax(scores)) if index is None else index]), np.asarray(scores)


def assert_same(out_dir, ann_id, expected):
    got = decode(stored(out_dir, ann_id)["segmentation"])
    assert got.shape == expected.shape
    assert expected.sum() > 0, "the reference mask is empty: pick another prompt"
    value = iou(got, expected)
    assert value >= 0.99, f"IoU {value:.4f} of annotation {ann_id} with predict's mask"


def assert_clean(drv, allow_http_errors=False):
    """No uncaught error in the page; no console error but (where a test provokes them) failed requests."""
    assert debug(drv, "jsErrors") == []
    try:
        logs = drv.get_log("browser")
    except Exception:  # a driver without the log endpoint
        logs = []
    bad = [e for e in logs if e.get("level") == "SEVERE"]
    if allow_http_errors:
        bad = [e for e in bad if "the server responded with a status of 4" not in e.get("message", "")]
    assert bad == [], bad


def post(server, path, body):
    req = urllib.request.Request(
        server.url.split("?")[0].rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


# ------------------------------------------------------------------------------------------------ tests
def test_click_enter_stores_predict_mask(driver, server, out_dir, predictor, photos, shots):
    s = open_page(driver, server.url, "truck.jpg")
    assert s["image"] == "truck.jpg" and s["prompts"] == []
    r = image_rect(driver)
    assert (r["nw"], r["nh"]) == (1800, 1200)
    assert abs(r["width"] / r["nw"] - r["height"] / r["nh"]) < 1e-3, "the photo is not scaled uniformly"
    # fitted: inside the viewport, touching it on one axis
    vp = driver.execute_script(
        "const r = document.getElementById('viewport').getBoundingClientRect(); return [r.width, r.height]"
    )
    assert r["width"] <= vp[0] + 1 and r["height"] <= vp[1] + 1
    assert max(r["width"] / vp[0], r["height"] / vp[1]) > 0.98

    cx, cy = client_at(driver, 0.45, 0.55)
    x, y = click(driver, cx, cy)
    s = state(driver)
    assert s["points"] == [pytest.approx([x, y], abs=1e-6)] and s["labels"] == [1]
    expected, scores = reference(predictor, photos["truck.jpg"], point_coords=[[x, y]], point_labels=[1])
    assert s["candidate"] == int(np.argmax(scores))
    assert s["prediction"]
    shots(driver, "click")
    ann = accept(driver)
    assert_same(out_dir, ann, expected)
    rec = stored(out_dir, ann)
    assert rec["image"] == "truck.jpg" and rec["source"] == "click"
    assert rec["prompts"]["points"] == [pytest.approx([x, y], abs=1e-3)]
    s = state(driver)
    assert s["prompts"] == [] and s["prediction"] is None
    # the object is listed, and drawn in its colour on the objects layer
    rows = driver.find_elements(By.CSS_SELECTOR, "#objects li")
    assert len(rows) == 1 and f"#{ann}" in rows[0].text
    drawn = driver.execute_script(
        "const c = document.getElementById('objects-layer'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;"
        "return n"
    )
    assert drawn == int(expected.sum())
    timings = debug(driver, "timings")
    assert len(timings) == 1 and 0 < timings[0] < 60_000
    shots(driver, "accepted")
    assert_clean(driver)


def test_negative_click_and_box(driver, server, out_dir, predictor, photos):
    open_page(driver, server.url, "truck.jpg")
    photo = photos["truck.jpg"]
    p1 = click(driver, *client_at(driver, 0.3, 0.4))
    p2 = click(driver, *client_at(driver, 0.6, 0.5), keys=(Keys.SHIFT,))
    assert state(driver)["labels"] == [1, 0]
    expected, _ = reference(predictor, photo, point_coords=[p1, p2], point_labels=[1, 0])
    assert_same(out_dir, accept(driver), expected)

    # a right click is a negative point too, and no context menu swallows the next events
    p1 = click(driver, *client_at(driver, 0.7, 0.3))
    p2 = click(driver, *client_at(driver, 0.2, 0.7), button=MouseButton.RIGHT)
    assert state(driver)["labels"] == [1, 0]
    expected, _ = reference(predictor, photo, point_coords=[p1, p2], point_labels=[1, 0])
    assert_same(out_dir, accept(driver), expected)

    box = drag(driver, client_at(driver, 0.15, 0.2), client_at(driver, 0.65, 0.8))
    s = state(driver)
    assert s["points"] == [] and s["box"] == pytest.approx(box, abs=1e-6)
    expected, _ = reference(predictor, photo, box=box)
    assert_same(out_dir, accept(driver), expected)
    assert_clean(driver)


def test_undo_and_candidates(driver, server, out_dir, predictor, photos):
    open_page(driver, server.url, "truck.jpg")
    photo = photos["truck.jpg"]
    for undo in (lambda: press(driver, Keys.BACKSPACE), lambda: ctrl_z(driver)):
        p1 = click(driver, *client_at(driver, 0.5, 0.5))
        one = state(driver)["prediction"]
        click(driver, *client_at(driver, 0.25, 0.3))
        two = state(driver)["prediction"]
        assert two != one and len(state(driver)["points"]) == 2
        undo()
        wait_js(driver, f"s.settled && s.prediction && s.prediction !== {json.dumps(two)}")
        assert state(driver)["points"] == [pytest.approx(p1, abs=1e-6)]
        expected, _ = reference(predictor, photo, point_coords=[p1], point_labels=[1])
        assert_same(out_dir, accept(driver), expected)
    # undo down to nothing clears the mask
    click(driver, *client_at(driver, 0.5, 0.5))
    press(driver, Keys.BACKSPACE)
    wait_js(driver, "s.settled && s.prompts.length === 0 && s.prediction === null")
    empty = driver.execute_script(
        "const c = document.getElementById('current-layer'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; for (let i = 3; i < d.length; i += 4) if (d[i]) return false;"
        "return true"
    )
    assert empty

    # Tab cycles the three candidates; the accepted mask is the one shown
    p = click(driver, *client_at(driver, 0.4, 0.6))
    first = state(driver)["candidate"]
    press(driver, Keys.TAB)
    wait_js(driver, f"s.candidate === {(first + 1) % 3}")
    press(driver, Keys.TAB)
    wait_js(driver, f"s.candidate === {(first + 2) % 3}")
    index = state(driver)["candidate"]
    expected, _ = reference(predictor, photo, index=index, point_coords=[p], point_labels=[1])
    best, _ = reference(predictor, photo, point_coords=[p], point_labels=[1])
    ann = accept(driver)
    assert_same(out_dir, ann, expected)
    if iou(expected, best) < 0.99:  # the candidates differ: the best one is not what was stored
        assert iou(decode(stored(out_dir, ann)["segmentation"]), best) < 0.99
    # Escape clears the prompts
    click(driver, *client_at(driver, 0.5, 0.5))
    press(driver, Keys.ESCAPE)
    wait_js(driver, "s.prompts.length === 0 && s.prediction === null")
    assert_clean(driver)


def test_next_and_previous_photo(driver, server):
    s = open_page(driver, server.url)
    assert s["image"] == "groceries.jpg"
    press(driver, "n")
    wait_js(driver, "s.image === 'truck.jpg' && s.ready")
    assert image_rect(driver)["nw"] == 1800
    click(driver, *client_at(driver, 0.5, 0.5))  # it takes clicks
    press(driver, "n")  # the last photo: stays
    wait_js(driver, "s.image === 'truck.jpg' && s.ready")
    press(driver, "p")
    wait_js(driver, "s.image === 'groceries.jpg' && s.ready")
    assert state(driver)["prompts"] == []
    r = image_rect(driver)
    assert (r["nw"], r["nh"]) == photo_size(server, "groceries.jpg")
    # the photos list opens a photo too
    driver.find_elements(By.CSS_SELECTOR, "#photos li")[1].click()
    wait_js(driver, "s.image === 'truck.jpg' && s.ready")
    assert_clean(driver)


def test_categories_relabel_and_done(driver, server, out_dir):
    open_page(driver, server.url, "truck.jpg")
    box = driver.find_element(By.ID, "new-category")
    box.send_keys("truck")
    driver.find_element(By.ID, "btn-add-category").click()
    wait_js(driver, "[...document.getElementById('category').options].some(o => o.text === 'truck' && o.selected)")
    click(driver, *client_at(driver, 0.5, 0.5))
    ann = accept(driver)
    doc = json.loads((out_dir / "annotations.json").read_text())
    cats = {c["name"]: c["id"] for c in doc["categories"]}
    assert stored(out_dir, ann)["category_id"] == cats["truck"]
    # relabel with the object's dropdown
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.CSS_SELECTOR, "#objects li select")).select_by_visible_text("object")
    deadline = time.monotonic() + 5
    while stored(out_dir, ann)["category_id"] != cats["object"]:
        assert time.monotonic() < deadline, "the relabel did not reach annotations.json"
        time.sleep(0.05)
    # mark the photo done
    driver.find_element(By.ID, "btn-done").click()
    wait_js(driver, "document.getElementById('btn-done').textContent === 'mark not done'")
    doc = json.loads((out_dir / "annotations.json").read_text())
    assert [i["done"] for i in doc["images"] if i["file_name"] == "truck.jpg"] == [True]
    truck = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#photos li") if "truck" in li.text]
    assert "\u2713" in truck[0]
    # keys still reach the page after using the form controls
    click(driver, *client_at(driver, 0.3, 0.3))
    press(driver, Keys.ESCAPE)
    wait_js(driver, "s.prompts.length === 0")
    assert_clean(driver)


def test_token(driver, images_dir, predictor, out_dir):
    """With a token, the page (opened with ?token=) sends it on every request, and works."""
    handle = start_server(images_dir, predictor, out_dir, port=0, token="s3cret-token")
    try:
        assert "token=s3cret-token" in handle.url
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(handle.url.split("?")[0] + "api/images", timeout=30)
        assert err.value.code == 403
        open_page(driver, handle.url, "truck.jpg")
        click(driver, *client_at(driver, 0.5, 0.5))
        ann = accept(driver)
        assert stored(out_dir, ann)["image"] == "truck.jpg"
        assert_clean(driver)
    finally:
        handle.stop()


def photo_size(server, name):
    with urllib.request.urlopen(server.url.split("?")[0] + "api/images", timeout=30) as r:
        for p in json.loads(r.read())["images"]:
            if p["name"] == name:
                return p["width"], p["height"]
    raise AssertionError(name)


def test_segment_everything(driver, server, out_dir, predictor, photos, shots):
    """Three runs over the generator's proposals (several: NMS off): reject each (r), accept each (a), reject the
    first and accept the rest (the button); each accepted one equals its generator record."""
    url = server.url + "?" + "&".join(f"{k}={v}" for k, v in GENERATE.items())
    open_page(driver, url + "&image=truck.jpg")
    assert driver.find_element(By.ID, "pps").get_attribute("value") == "2"
    records = sam2_jax.Sam2AutomaticMaskGenerator(predictor=predictor, output_mode="coco_rle", **GENERATE).generate(
        photos["truck.jpg"]
    )
    n = len(records)
    assert n >= 3, f"{n} proposals: pick options that several of the random model's masks pass"
    shot = []

    def run(finish):
        before = len(state(driver)["annotations"])
        driver.find_element(By.ID, "btn-generate").click()
        wait_js(driver, "s.proposalIndex === 0 && s.jobState === 'done'")
        assert state(driver)["proposals"] == n
        assert driver.find_element(By.ID, "review").is_displayed()
        if not shot:
            shots(driver, "proposal")
            shot.append(1)
        finish()
        wait_js(driver, "s.proposalIndex === -1 && !s.accepting")
        assert not driver.find_element(By.ID, "review").is_displayed()
        return state(driver)["annotations"][before:]

    def check(ids, expected):
        assert len(ids) == len(expected)
        for ann_id, rec in zip(ids, expected, strict=True):
            a = stored(out_dir, ann_id)
            assert a["source"] == "auto" and a["image"] == "truck.jpg"
            assert iou(decode(a["segmentation"]), decode(rec["segmentation"])) >= 0.99

    def each(key):  # one proposal at a time: the next key once the page shows the next proposal
        for k in range(n):
            press(driver, key)
            wait_js(driver, f"s.proposalIndex === {k + 1 if k + 1 < n else -1} && !s.accepting")

    assert run(lambda: each("r")) == []  # reject every proposal
    check(run(lambda: press(driver, *"a" * n)), records)  # accept them one by one, keys pressed faster than saves
    shots(driver, "everything-one")

    # the first rejected, the others accepted with "accept all"
    def reject_then_all():
        press(driver, "r")
        wait_js(driver, "s.proposalIndex === 1")
        driver.find_element(By.ID, "btn-proposal-all").click()

    check(run(reject_then_all), records[1:])
    doc = json.loads((out_dir / "annotations.json").read_text())
    assert len(doc["annotations"]) == len(state(driver)["annotations"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#objects li")) == len(doc["annotations"])
    shots(driver, "everything")
    assert_clean(driver)


def test_restart_keeps_objects(driver, images_dir, predictor, out_dir, shots):
    first = start_server(images_dir, predictor, out_dir, port=0)
    try:
        open_page(driver, first.url, "truck.jpg")
        click(driver, *client_at(driver, 0.4, 0.5))
        a = accept(driver)
        click(driver, *client_at(driver, 0.8, 0.3))
        b = accept(driver)
    finally:
        first.stop()
    ids = [a, b]
    second = start_server(images_dir, predictor, out_dir, port=0)
    try:
        s = open_page(driver, second.url, "truck.jpg")
        assert s["annotations"] == ids
        rows = driver.find_elements(By.CSS_SELECTOR, "#objects li")
        assert [r.get_attribute("data-id") for r in rows] == [str(i) for i in ids]
        doc = json.loads((out_dir / "annotations.json").read_text())
        union = np.zeros((1200, 1800), bool)
        for ann in doc["annotations"]:
            union |= decode(ann["segmentation"]).astype(bool)
        drawn = driver.execute_script(
            "const c = document.getElementById('objects-layer'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n"
        )
        assert drawn == int(union.sum()) > 0
        # the photos list counts them
        truck = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#photos li") if "truck" in li.text]
        assert truck and "2 obj" in truck[0]
        # selecting one and pressing Delete removes it (and from the file)
        rows[0].click()
        wait_js(driver, f"s.selected === {a}")
        press(driver, Keys.DELETE)
        wait_js(driver, f"s.annotations.length === 1 && s.annotations[0] === {b}")
        doc = json.loads((out_dir / "annotations.json").read_text())
        assert [x["id"] for x in doc["annotations"]] == [b]
        shots(driver, "restart")
        assert_clean(driver)
    finally:
        second.stop()


def test_bad_requests_do_not_break_the_page(driver, server, out_dir, predictor, photos):
    open_page(driver, server.url, "truck.jpg")
    p1 = click(driver, *client_at(driver, 0.5, 0.5))
    # 64 predictions of another client push the page's prediction out of the server's memory
    for k in range(70):
        post(server, "/api/predict", {"image": "truck.jpg", "points": [[10 + k, 10]], "labels": [1]})
    press(driver, Keys.ENTER)
    wait_js(driver, "d.lastError !== null && !s.accepting")
    status = driver.find_element(By.ID, "status")
    assert "error" in status.get_attribute("class")
    assert status.text.startswith("4") and "p" in status.text
    color = status.value_of_css_property("color")
    assert color.startswith("rgba(255, 107, 107") or color.startswith("rgb(255, 107, 107"), color
    assert state(driver)["annotations"] == []
    # the page goes on: the next click predicts again from all the prompts, and Enter accepts
    p2 = click(driver, *client_at(driver, 0.3, 0.3))
    expected, _ = reference(predictor, photos["truck.jpg"], point_coords=[p1, p2], point_labels=[1, 1])
    assert_same(out_dir, accept(driver), expected)
    assert "error" not in driver.find_element(By.ID, "status").get_attribute("class")
    # an object deleted by another client: Delete in the page answers 404, shown, and the page still works
    ann = state(driver)["annotations"][0]
    req = urllib.request.Request(server.url.split("?")[0] + f"api/annotations/{ann}", method="DELETE")
    urllib.request.urlopen(req, timeout=30).close()
    driver.find_elements(By.CSS_SELECTOR, "#objects li")[0].click()
    wait_js(driver, f"s.selected === {ann}")
    errors = len(debug(driver, "errors"))
    press(driver, Keys.DELETE)
    wait_js(driver, f"d.errors.length > {errors}")
    assert "404" in driver.find_element(By.ID, "status").text
    click(driver, *client_at(driver, 0.6, 0.4))
    assert_clean(driver, allow_http_errors=True)


def test_zoom_and_pan_keep_the_convention(driver, server, out_dir, predictor, photos, shots):
    open_page(driver, server.url, "truck.jpg")
    before = image_rect(driver)
    press(driver, "+", "+")
    wait_js(driver, f"document.getElementById('image').getBoundingClientRect().width > {before['width'] * 1.5}")
    press(driver, Keys.ARROW_LEFT, Keys.ARROW_UP)
    r = image_rect(driver)
    # the overlays lie exactly over the photo
    layers = driver.execute_script(
        "return [...document.querySelectorAll('.layer')].map(c => { const r = c.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })"
    )
    for lr in layers:
        assert lr == pytest.approx([r["left"], r["top"], r["width"], r["height"]], abs=0.5)
    cx, cy = client_at(driver, 0.45, 0.5)
    vp = driver.execute_script(
        "const r = document.getElementById('viewport').getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom]"
    )
    assert vp[0] < cx < vp[2] and vp[1] < cy < vp[3]
    x, y = click(driver, cx, cy)
    shots(driver, "zoomed")
    expected, _ = reference(predictor, photos["truck.jpg"], point_coords=[[x, y]], point_labels=[1])
    assert_same(out_dir, accept(driver), expected)
    driver.find_element(By.ID, "btn-fit").click()
    wait_js(driver, f"Math.abs(document.getElementById('image').getBoundingClientRect().width - {before['width']}) < 1")

    # the wheel zooms about the pointer: the image point under it stays there
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    cx, cy = client_at(driver, 0.3, 0.6)
    under = to_image(driver, cx, cy)
    pointer(driver, [("move", cx, cy)])
    vp = driver.find_element(By.ID, "viewport")
    origin = ScrollOrigin.from_viewport(cx, cy)
    ActionChains(driver).scroll_from_origin(origin, 0, -300).perform()
    wait_js(driver, f"document.getElementById('image').getBoundingClientRect().width > {before['width'] * 1.2}")
    assert to_image(driver, cx, cy) == pytest.approx(under, abs=1.0)
    # a middle-button drag and a drag with space held pan; neither adds a prompt
    for how in ("middle", "space"):
        r0 = image_rect(driver)
        a, b = (cx, cy), (cx + 120, cy - 40)
        if how == "middle":
            m = MouseButton.MIDDLE
            pointer(driver, [("move", *a), ("down", m), ("move", cx + 60, cy - 20), ("move", *b), ("up", m)])
        else:
            ActionChains(driver).key_down(" ").perform()
            left = MouseButton.LEFT
            pointer(driver, [("move", *a), ("down", left), ("move", cx + 60, cy - 20), ("move", *b), ("up", left)])
            ActionChains(driver).key_up(" ").perform()
        r1 = image_rect(driver)
        assert (r1["left"] - r0["left"], r1["top"] - r0["top"]) == pytest.approx((120, -40), abs=1.0), how
        assert r1["width"] == pytest.approx(r0["width"])
        assert state(driver)["prompts"] == []
    assert vp.is_displayed()
    assert_clean(driver)


def test_screenshot(driver, server, shots):
    """truck.jpg with two accepted objects and a current mask; ``SAM2_JAX_SCREENSHOT=docs/annotate.png`` keeps it."""
    open_page(driver, server.url, "truck.jpg")

    def smallest():  # the random model's masks are noise: show its smallest candidate
        areas = state(driver)["areas"]
        while state(driver)["candidate"] != int(np.argmin(areas)):
            press(driver, Keys.TAB)

    for f in ((0.3, 0.45), (0.72, 0.62)):
        click(driver, *client_at(driver, *f))
        smallest()
        accept(driver)
    click(driver, *client_at(driver, 0.5, 0.35))
    click(driver, *client_at(driver, 0.56, 0.3), keys=(Keys.SHIFT,))
    smallest()
    path = shots(driver, "screenshot")
    target = os.environ.get("SAM2_JAX_SCREENSHOT")
    if target:
        from PIL import Image

        with Image.open(path) as im:
            im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
        assert os.path.getsize(target) < 300_000
    assert_clean(driver)
