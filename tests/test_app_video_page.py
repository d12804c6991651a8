"""The page's video view in headless Chromium (as ``test_app_page.py``): ``t`` before any prompt shows the server's
reason; a click on frame 0 and, for a new object, a box on frame 5 (a negative click there taken back with
Backspace); ``t`` tracks, streamed to the page; Esc cancels and ``t`` again finishes; scrubbing to the last frame
draws its overlay; the label images written equal ``Sam2VideoPredictor``'s for the same calls."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image
from test_app_page import WAIT_S, driver, pointer, press  # noqa: F401 - the browser fixture

from sam2_jax.app.server import start_server
from sam2_jax.cli.track import labels_from_logits
from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

W, H, N = 480, 270, 12


@pytest.fixture(scope="module")
def predictor():
    from reference import random_params, tracking_test_config

    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel

    config = tracking_test_config()
    return Sam2VideoPredictor(Sam2VideoModel(config), random_params(config, score_shift=5.0))


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    from reference import write_bedroom_frames

    return write_bedroom_frames(tmp_path_factory.mktemp("frames"), N, W, H)


def wait(drv, condition: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    script = f"const s = window.sam2Video; return !!(s && ({condition}));"
    try:
        WebDriverWait(drv, timeout, poll_frequency=0.02).until(lambda d: d.execute_script(script))
    except Exception as err:
        text = drv.execute_script("return document.getElementById('status').textContent")
        where = drv.execute_script("const s = window.sam2Video; return s && [s.frame, s.drawn, s.tracked.size]")
        raise AssertionError(f"timed out waiting for {condition}; status: {text!r}; frame, drawn: {where}") from err


def client_at(drv, x: float, y: float) -> tuple[int, int]:
    """Viewport coordinates of video pixel (x, y), by the convention of element ``frame``."""
    r = drv.execute_script(
        "const e = document.getElementById('frame'); const r = e.getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, e.width, e.height];"
    )
    return int(round(r[0] + x * r[2] / r[4])), int(round(r[1] + y * r[3] / r[5]))


def to_video(drv, cx: int, cy: int) -> list[float]:
    r = drv.execute_script(
        "const e = document.getElementById('frame'); const r = e.getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, e.width, e.height];"
    )
    return [(cx - r[0]) * r[4] / r[2], (cy - r[1]) * r[5] / r[3]]


def test_video_page_tracks_scrubs_and_writes_labels(driver, predictor, frames_dir, tmp_path):  # noqa: F811
    from selenium.webdriver.common.actions.mouse_button import MouseButton
    from selenium.webdriver.common.keys import Keys

    out = tmp_path / "out"
    left = MouseButton.LEFT
    with start_server(frames_dir, predictor, out, video=True) as handle:
        driver.get(handle.url)
        wait(driver, "s.ready && s.drawn === '0:0'")
        press(driver, "t")  # nothing prompted yet: the server's 400 and its reason, shown in the page
        status = "document.getElementById('status')"
        wait(driver, f"{status}.textContent.includes('nothing to track') && {status}.className === 'error'")
        a = client_at(driver, 240, 130)
        pointer(driver, [("move", *a), ("down", left), ("up", left)])
        wait(driver, "s.drawn === '0:1' && s.objects.length === 1")
        point = to_video(driver, *a)
        for _ in range(5):
            press(driver, Keys.ARROW_RIGHT)
        wait(driver, "s.frame === 5 && s.drawn === '5:0'")
        press(driver, "o")
        b0, b1 = client_at(driver, 300, 150), client_at(driver, 420, 260)
        mid = ((b0[0] + b1[0]) // 2, (b0[1] + b1[1]) // 2)
        pointer(driver, [("move", *b0), ("down", left), ("move", *mid), ("move", *b1), ("up", left)])
        wait(driver, "s.drawn === '5:1' && s.objects.length === 2")
        c = client_at(driver, 330, 200)  # a negative click, then Backspace takes it back
        pointer(driver, [("move", *c), ("down", MouseButton.RIGHT), ("up", MouseButton.RIGHT)])
        wait(driver, "s.drawn === '5:2'")
        press(driver, Keys.BACKSPACE)
        wait(driver, "s.undone === 1 && s.drawn === '5:3' && s.prompts[5].length === 0")
        p0, p1 = to_video(driver, *b0), to_video(driver, *b1)
        box = [min(p0[0], p1[0]), min(p0[1], p1[1]), max(p0[0], p1[0]), max(p0[1], p1[1])]

        press(driver, "t")
        wait(driver, "s.job && s.job.done >= 2")
        press(driver, Keys.ESCAPE)
        wait(driver, "s.job && !s.job.running")
        cancelled = driver.execute_script("return window.sam2Video.job")
        press(driver, "t")
        wait(driver, "s.job && !s.job.running && s.tracked.size === 12", timeout=300)
        from selenium.webdriver.common.action_chains import ActionChains

        for _ in range(2):  # Shift+Right: ten frames (5 -> 15, held at the last frame, 11)
            ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
        wait(driver, "s.frame === 11 && s.drawn && s.drawn.startsWith('11:') && s.drawn !== '11:0'")
        shot = tmp_path / "video.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("SAM2_JAX_SCREENSHOTS"):  # as test_app_page.py: where to keep a copy
            shutil.copy(shot, pathlib.Path(os.environ["SAM2_JAX_SCREENSHOTS"]) / "annotate_video.png")
        refused = "/api/video/track - Failed to load resource: the server responded with a status of 400"
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and refused not in e["message"]]
    assert cancelled["cancelled"] and cancelled["done"] < cancelled["total"], cancelled
    assert errors == [], errors

    state = predictor.init_state(frames_dir)
    predictor.add_new_points_or_box(state, 0, 1, points=[point], labels=[1], clear_old_points=False)
    predictor.add_new_points_or_box(state, 5, 2, box=box)
    ref = {t: labels_from_logits(m, ids, np.uint8) for t, ids, m in predictor.propagate_in_video(state)}
    ours = {t: np.asarray(Image.open(out / f"{t:05d}.png")) for t in range(N)}
    assert {1, 2} <= set(np.unique(np.stack(list(ref.values()))))
    differ = np.mean([(ours[t] != ref[t]).mean() for t in range(N)])
    print(f"page labels against the predictor's: {differ:.2e} of the pixels differ")
    assert differ <= 1e-4  # resumed after the cancel: equal to rounding (test_app_video_tracking.py)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 10  # something was drawn
