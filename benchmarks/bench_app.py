"""What a user of ``sam2-jax annotate`` waits for, measured in the page: click to mask drawn, and next photo.

    python benchmarks/bench_app.py [--model CHECKPOINT] [--clicks 30] [--image examples/truck.jpg]
        [--switches 3] [--stay 3.0]
    python benchmarks/bench_app.py --video [--model CHECKPOINT] [--frames 16] [--scrubs 30] [--repeats 3]:
        the video view against ``sam2-jax track`` (``bench_app_video.py``)

``--model``: anything ``sam2_jax.load`` reads; by default a randomised model of the real tiny size
(``sam2_jax.get_config("tiny")``, 1024 px input, random params from ``tests.reference.random_params``; speed does
not depend on the values). The server (``sam2_jax.app.server.start_server`` on a free loopback port, a temporary
OUT) serves ``--switches + 1`` copies of the photo (examples/truck.jpg is 1800 x 1200); headless Chromium (Debian's
``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, driven by Selenium) opens the page and:

  click to mask      ``--clicks`` clicks at various points of the photo, as objects of three prompts each (two
                     positive points and a negative one, then Escape); ``window.sam2Debug.timings`` holds, for each
                     click, the ms from the click event to its mask drawn on the overlay canvas, measured in the
                     page with ``performance.now()``: p50 and p95, beside the server's own ``predict_ms`` (median)
                     and ``Sam2ImagePredictor.predict`` for one click in this process (median of 10): the ratio
                     page / predict is what the HTTP round trip, the RLE decoding and the drawing add
  next photo         after staying ``--stay`` s on a photo (its successor is embedded in the background), the
                     time from pressing ``n`` to the next photo being clickable (``state.ready``: embedded, the
                     photo decoded and drawn, its objects loaded), from the page's own clock (median of
                     ``--switches``), beside the first photo's open (embedding in the foreground) and
                     ``set_image`` in this process

A warm-up object (three clicks, compiling the decoder for one to three points) comes first and is not counted;
the measured clicks wait until the background embedding of the next photo has ended (the steady state of a person
who stays more than a few seconds on a photo). Six clicks made right after opening the second photo, while the
third is embedded in the background on the same two cores, are reported apart.
Times are wall times on this machine; prints one table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_predictor(model: str | None):
    import sam2_jax

    if model:
        m, params = sam2_jax.load(model)
        return sam2_jax.Sam2ImagePredictor(m, params), model
    from tests.reference import random_params

    config = sam2_jax.get_config("tiny")
    params = random_params(config, video=False)
    return sam2_jax.Sam2ImagePredictor(sam2_jax.Sam2Model(config), params), "random tiny (1024 px)"


def make_driver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    drv = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    drv.set_script_timeout(600)
    return drv


def poll_js(drv, script: str, condition: str, timeout: float, interval: float = 0.005) -> None:
    """Run ``script`` every ``interval`` s until it returns true; after ``timeout`` s a TimeoutError with the page's
    status. Each call goes through chromedriver (a few ms of CPU over three processes): waits that are not timed
    poll slowly, or the polling itself takes a core from what runs meanwhile."""
    deadline = time.monotonic() + timeout
    while not drv.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{condition}: {drv.find_element('id', 'status').text}")
        time.sleep(interval)


def wait_js(drv, condition: str, timeout: float = 600.0) -> None:
    script = f"const d = window.sam2Debug; if (!d) return false; const s = d.state; return !!({condition});"
    poll_js(drv, script, condition, timeout)


def click_at(drv, fx: float, fy: float, negative: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton

    r = drv.execute_script(
        "const r = document.getElementById('image').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]"
    )
    x, y = int(r[0] + fx * r[2]), int(r[1] + fy * r[3])
    button = MouseButton.RIGHT if negative else MouseButton.LEFT
    n = drv.execute_script("return window.sam2Debug.timings.length")
    ab = ActionBuilder(drv)
    ab.pointer_action.move_to_location(x, y)
    ab.pointer_action.pointer_down(button)
    ab.pointer_action.pointer_up(button)
    ab.perform()
    wait_js(drv, f"d.timings.length > {n} && s.settled")


def press(drv, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(key).perform()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a checkpoint sam2_jax.load reads (default: random tiny)")
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--image", default=str(ROOT / "examples" / "truck.jpg"))
    ap.add_argument("--switches", type=int, default=3)
    ap.add_argument("--stay", type=float, default=3.0, help="seconds on a photo before pressing n")
    ap.add_argument("--video", action="store_true", help="the video view against sam2-jax track (bench_app_video)")
    ap.add_argument("--frames", type=int, default=16, help="--video: frames of the clip")
    ap.add_argument("--scrubs", type=int, default=30, help="--video: arrow steps and timeline jumps")
    ap.add_argument("--repeats", type=int, default=3, help="--video: rounds of track and page, interleaved")
    args = ap.parse_args()
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        sys.exit("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    if args.video:
        import bench_app_video

        return bench_app_video.main(args)

    from sam2_jax.app.server import start_server
    from sam2_jax.processing.images import read_image

    t = time.perf_counter()
    predictor, model_name = make_predictor(args.model)
    print(f"model: {model_name} (built in {time.perf_counter() - t:.1f} s)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sam2-bench-app-"))
    photos = work / "photos"
    photos.mkdir()
    src = Path(args.image)
    names = [f"photo{k:02d}{src.suffix.lower()}" for k in range(args.switches + 1)]
    for name in names:
        shutil.copy(src, photos / name)
    image = read_image(src, str(src))
    h, w = image.shape[:2]

    server = start_server(photos, predictor, work / "out", port=0)
    drv = make_driver(str(work / "profile"))
    try:
        t = time.perf_counter()
        drv.get(server.url)
        wait_js(drv, "s.ready")
        first_open = drv.execute_script("return window.sam2Debug.openMs[0][1]")
        print(f"first photo open (embedding in the foreground, compiles included): {first_open:.0f} ms", flush=True)

        rng = np.random.default_rng(0)
        clicks_per_object = 3

        def one_object():
            for j in range(clicks_per_object):
                fx, fy = rng.uniform(0.1, 0.9, size=2)
                click_at(drv, float(fx), float(fy), negative=(j == clicks_per_object - 1))
            press(drv, "\ue00c")  # Escape
            wait_js(drv, "s.prompts.length === 0 && s.settled")

        one_object()  # warm-up: compiles for 1, 2 and 3 points

        def next_embedded(k):  # photo k + 1, embedded in the background since photo k opened
            url = f"{server.url.split('?')[0].rstrip('/')}/api/images/{names[k + 1]}/embed"
            with httpx.Client(timeout=60) as c:
                while c.get(url).json()["state"] != "ready":
                    time.sleep(0.05)

        next_embedded(0)  # steady state: the clicks below do not share the CPUs with the background embedding
        drv.execute_script(
            "const d = window.sam2Debug; d.timings.length = 0; d.predictMs.length = 0; d.breakdown.length = 0"
        )
        done = 0
        while done < args.clicks:
            for j in range(min(clicks_per_object, args.clicks - done)):
                fx, fy = rng.uniform(0.1, 0.9, size=2)
                click_at(drv, float(fx), float(fy), negative=(j == clicks_per_object - 1))
                done += 1
            press(drv, "\ue00c")
            wait_js(drv, "s.prompts.length === 0 && s.settled")
        timings = np.asarray(drv.execute_script("return window.sam2Debug.timings"), float)
        server_ms = np.asarray(drv.execute_script("return window.sam2Debug.predictMs"), float)
        parts = drv.execute_script("return window.sam2Debug.breakdown")
        request_ms = float(np.median([p["request_ms"] for p in parts]))
        draw_ms = float(np.median([p["draw_ms"] for p in parts]))

        switch_ms = []
        for k in range(args.switches):
            time.sleep(args.stay)  # on photo k; photo k + 1 is embedded in the background meanwhile
            n_open = drv.execute_script("return window.sam2Debug.openMs.length")
            press(drv, "n")
            wait_js(drv, f"s.image === {names[k + 1]!r} && s.ready && d.openMs.length > {n_open}")
            switch_ms.append(drv.execute_script("return window.sam2Debug.openMs.at(-1)[1]"))
            if k == 0:  # right after opening: photo k + 2 is being embedded in the background meanwhile
                drv.execute_script("window.sam2Debug.timings.length = 0")
                for _ in range(2):
                    one_object()
                busy_ms = np.asarray(drv.execute_script("return window.sam2Debug.timings"), float)
                next_embedded(1)
            assert not drv.execute_script("return window.sam2Debug.jsErrors.length")
    finally:
        drv.quit()
        server.stop()

    # the predictor itself, in this process, after the server is gone
    import jax

    predictor.set_image(image)
    jax.block_until_ready(predictor.get_image_embedding())
    other = np.ascontiguousarray(image[:, ::-1])
    t = time.perf_counter()
    predictor.set_image(other)  # JAX dispatches asynchronously: wait for the embedding itself
    jax.block_until_ready(predictor.get_image_embedding())
    set_image_ms = (time.perf_counter() - t) * 1000
    predictor.predict(point_coords=[[w / 2, h / 2]], point_labels=[1])
    own = []
    for _ in range(10):
        x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        t = time.perf_counter()
        predictor.predict(point_coords=[[x, y]], point_labels=[1], multimask_output=True)
        own.append((time.perf_counter() - t) * 1000)
    own_ms = float(np.median(own))
    shutil.rmtree(work, ignore_errors=True)

    p50, p95 = np.percentile(timings, [50, 95])
    print()
    print(f"photo {src.name} {w}x{h}, model {model_name}, {len(timings)} clicks, {os.cpu_count()} CPUs")
    print(f"{'click to mask drawn (page)':<44} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms")
    print(f"{'  request: sent to answer parsed (median)':<44}     {request_ms:8.1f} ms")
    print(f"{'  of which the server predict_ms (median)':<44}     {np.median(server_ms):8.1f} ms")
    print(f"{'  RLE decoding and drawing (median)':<44}     {draw_ms:8.1f} ms")
    bp50, bp95 = np.percentile(busy_ms, [50, 95])
    print(f"{'same, while the next photo embeds':<44} p50 {bp50:8.1f} ms   p95 {bp95:8.1f} ms   ({len(busy_ms)})")
    print(
        f"{'  Sam2ImagePredictor.predict, 1 click':<44}     {own_ms:8.1f} ms   page p50 / predict = {p50 / own_ms:.2f}"
    )
    sw = float(np.median(switch_ms))
    print(
        f"{'n to next photo clickable (after ' + f'{args.stay:g}' + ' s)':<44}     {sw:8.1f} ms   "
        f"(each: {', '.join(f'{v:.0f}' for v in switch_ms)})"
    )
    print(f"{'  first photo open (foreground embedding)':<44}     {first_open:8.1f} ms")
    print(
        f"{'  set_image in this process':<44}     {set_image_ms:8.1f} ms   next / set_image = {sw / set_image_ms:.2f}"
    )


if __name__ == "__main__":
    main()
