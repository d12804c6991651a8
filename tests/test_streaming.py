"""Streaming segmentation of a directory / iterator: results, prefetch overlap, one compile, kill-and-resume, RLE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from compile_count import jit_compiles
from PIL import Image

from sam2_jax.frontends.image.batch_segmenter import BatchSegmenter
from sam2_jax.frontends.image.streaming import read_png_scores, segment_stream
from sam2_jax.processing.processor import Sam2Processor
from sam2_jax.processing.rle import rle_to_mask

# name -> (height, width, file format, PIL mode); different sizes, lossy and lossless, grey and alpha
IMAGES = {
    "a": (64, 96, "png", "RGB"),
    "b": (120, 80, "jpeg", "RGB"),
    "c": (100, 100, "png", "L"),
    "d": (48, 160, "png", "RGBA"),
    "e": (150, 130, "jpeg", "RGB"),
    "f": (90, 70, "bmp", "RGB"),
}
EXT = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp"}
# different object and point counts, boxes, boxes with and without clicks; at most 4 objects of 4 tokens
PROMPTS = {
    "a": {"points": [[[10, 20]]]},
    "b": {"points": [[[30, 40], [50, 60]]], "labels": [[1, 0]]},  # batch 1 (a, b) has 1 object: padded to 4
    "c": {"boxes": [[10, 10, 60, 70]]},
    "d": {"points": [[[5, 5]], [[100, 30]], [[150, 40], [20, 10]]]},
    "e": {"boxes": [[5, 5, 60, 60], [40, 50, 120, 140]], "points": [[[30, 30]], []], "labels": [[1], []]},
    "f": {"points": [[[10, 10]], [[60, 80]], [[35, 45]], [[5, 85], [50, 50]]]},
}
MAX_MISMATCH = 1e-3  # fraction of pixels allowed to flip (logits within float error of the threshold)


def _make_image(h, w, mode, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1)
    rgb = np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    if mode == "L":
        return im.convert("L")
    if mode == "RGBA":
        alpha = (rng.uniform(size=(h, w)) * 255).astype(np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return im


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for i, (name, (h, w, fmt, mode)) in enumerate(IMAGES.items()):
        _make_image(h, w, mode, i).save(d / f"{name}{EXT[fmt]}", format=fmt.upper())
    (d / "notes.txt").write_text("not an image: ignored")
    return d


@pytest.fixture(scope="module")
def seg(small_ref):
    """One segmenter for the module, on 2 of the simulated devices: every test below reuses its one compile."""
    return BatchSegmenter(small_ref.model, small_ref.params, devices=jax.devices()[:2], multimask_output=False)


@pytest.fixture(scope="module")
def expected(small_ref, image_dir):
    """Per image: (P, H, W) full-size logits and (P,) IoU scores, one object per unpadded model call."""
    proc = Sam2Processor(image_size=small_ref.size)
    out = {}
    for name, (_, _, fmt, _) in IMAGES.items():
        with Image.open(image_dir / f"{name}{EXT[fmt]}") as im:
            inputs = proc(images=im)
        emb = small_ref.embed(small_ref.params, inputs["pixel_values"])
        size = inputs["original_sizes"]
        prompt = PROMPTS[name]
        n = max(len(prompt.get("points", [])), len(prompt.get("boxes", [])))
        logits, scores = [], []
        for j in range(n):
            pts = prompt.get("points", [[]] * n)[j]
            labels = prompt["labels"][j] if "labels" in prompt else [1] * len(pts)
            p = proc.process_prompts(
                size,
                [[pts]] if pts else None,
                [[labels]] if pts else None,
                [[prompt["boxes"][j]]] if "boxes" in prompt else None,
            )
            res = small_ref.apply(small_ref.params, image_embeddings=emb, multimask_output=False, **p)
            up = proc.post_process_masks(np.asarray(res.pred_masks), size, binarize=False)[0]
            logits.append(up[0, 0])
            scores.append(float(res.iou_scores[0, 0, 0]))
        out[name] = (np.stack(logits), np.asarray(scores))
    return out


def _label(logits):
    masks = logits > 0
    if len(logits) == 1:
        return masks[0].astype(np.uint8) * 255
    winner = np.argmax(np.where(masks, logits, -np.inf), axis=0)
    return np.where(masks.any(0), winner + 1, 0)


def _check_png(path, logits, scores):
    with Image.open(path) as im:
        assert im.size == logits.shape[:0:-1]
        got = np.asarray(im)
    want = _label(logits)
    assert np.mean(got != want) <= MAX_MISMATCH, f"{path.name}: {np.mean(got != want):.4f} of pixels differ"
    assert len(np.unique(want)) > 1, "a degenerate test: the expected mask is constant"
    np.testing.assert_allclose(read_png_scores(path)["scores"], scores, rtol=1e-4, atol=1e-5)


def test_directory_matches_model_with_prefetch_and_one_compile(seg, image_dir, expected, tmp_path, monkeypatch, capsys):
    calls, prompt_log = [], []
    real = seg._fn

    def slow_device(*args):  # a slower "device", so that host work during its calls is measurable
        t0 = time.perf_counter()
        out = jax.block_until_ready(real(*args))
        time.sleep(0.3)
        calls.append((t0, time.perf_counter()))
        return out

    def prompts(name):
        prompt_log.append((time.perf_counter(), threading.current_thread() is threading.main_thread()))
        return PROMPTS[name]

    monkeypatch.setattr(seg, "_fn", slow_device)
    summary = segment_stream(seg, image_dir, prompts, tmp_path / "out", batch_size=2, prefetch=2, progress=True)
    assert (summary.done, summary.skipped) == (6, 0)
    assert sorted(os.listdir(tmp_path / "out")) == [f"{n}.png" for n in IMAGES]
    for name in IMAGES:
        _check_png(tmp_path / "out" / f"{name}.png", *expected[name])
    assert jit_compiles(real) == 1, "a stream of mixed prompt counts must compile once"
    assert len(calls) == 3
    assert not any(on_main for _, on_main in prompt_log), "preprocessing must run on the prefetch thread"
    overlapped = [t for t, _ in prompt_log if any(t0 < t < t1 for t0, t1 in calls)]
    assert overlapped, "no image was preprocessed while the device was busy"
    assert "6/6" in capsys.readouterr().err  # the progress bar


def test_rle_from_iterator_decodes_to_the_same_masks(seg, image_dir, expected, tmp_path):
    def pairs():  # in-memory arrays this time, consumed lazily
        for name, (_, _, fmt, _) in IMAGES.items():
            with Image.open(image_dir / f"{name}{EXT[fmt]}") as im:
                yield name, np.asarray(im)

    summary = segment_stream(seg, pairs(), PROMPTS, tmp_path, batch_size=2, fmt="rle", progress=False)
    assert summary.done == 6
    for name in IMAGES:
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        logits, scores = expected[name]
        assert (doc["name"], doc["height"], doc["width"]) == (name, *logits.shape[1:])
        assert len(doc["objects"]) == len(logits)
        for obj, want in zip(doc["objects"], logits, strict=True):
            got = rle_to_mask(obj["segmentation"])
            assert np.mean(got != (want > 0)) <= MAX_MISMATCH
        np.testing.assert_allclose([o["score"] for o in doc["objects"]], scores, rtol=1e-4, atol=1e-5)
    assert jit_compiles(seg._fn) == 1


CHILD = """
import json, sys, time
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import sam2_jax
from sam2_jax.frontends.image.batch_segmenter import BatchSegmenter
from sam2_jax.frontends.image.streaming import segment_stream

ckpt, images, prompts_file, out = sys.argv[1:]
model, params = sam2_jax.load(ckpt)
seg = BatchSegmenter(model, params, devices=jax.devices()[:1], multimask_output=False)
prompts = json.load(open(prompts_file))

def slow(name):  # a slow host: the run is still going when the parent kills it
    time.sleep(0.4)
    return prompts[name]

segment_stream(seg, images, slow, out, batch_size=1, progress=False)
print("finished")
"""


def test_killed_run_resumes_with_one_output_per_input(small_ref, seg, image_dir, expected, tmp_path):
    import sam2_jax

    ckpt = sam2_jax.save_converted(tmp_path / "ckpt", small_ref.config, small_ref.params)
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    out = tmp_path / "out"
    args = [str(ckpt), str(image_dir), str(tmp_path / "prompts.json"), str(out)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and list(out.glob("*.png"))):
            assert child.poll() is None, f"the run ended before writing anything:\n{child.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no output after 240 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert 1 <= len(visible) < len(IMAGES), "the run should have been killed midway"
    for p in visible:  # anything under an output name is a complete PNG
        assert p.suffix == ".png" and p.stem in IMAGES
        with Image.open(p) as im:
            im.load()
    assert all(p.name.endswith(".partial") for p in out.iterdir() if p.name.startswith("."))
    (out / ".a.png.99999.deadbeef.partial").write_bytes(b"half a PNG")  # as a kill mid-write would leave
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in visible}

    summary = segment_stream(seg, image_dir, PROMPTS, out, batch_size=2, progress=False)
    assert summary.skipped == len(before)
    assert summary.done == len(IMAGES) - len(before)
    assert sorted(os.listdir(out)) == [f"{n}.png" for n in IMAGES], "exactly one output per input, nothing else"
    for name, stat in before.items():
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat, f"{name} was rewritten"
    for name in IMAGES:  # the killed child's outputs (from the saved checkpoint) and the resumed ones
        _check_png(out / f"{name}.png", *expected[name])
    assert jit_compiles(seg._fn) == 1


def test_bad_inputs(seg, image_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        segment_stream(seg, tmp_path / "nowhere", PROMPTS, tmp_path / "o1", progress=False)
    missing = {k: v for k, v in PROMPTS.items() if k != "c"}
    with pytest.raises(ValueError, match=r"no prompt for 1 image\(s\): c.png"):
        segment_stream(seg, image_dir, missing, tmp_path / "o2", progress=False)
    with pytest.raises(ValueError, match="fmt must be one of"):
        segment_stream(seg, image_dir, PROMPTS, tmp_path / "o3", fmt="tiff", progress=False)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"broken: cannot read image .*broken\.png"):
        segment_stream(seg, bad, {"broken": PROMPTS["a"]}, tmp_path / "o4", progress=False)
    assert not [p for p in (tmp_path / "o4").iterdir()]

    def bad_prompt(prompt):
        return segment_stream(
            seg, [("x", np.zeros((20, 30, 3), np.uint8))], {"x": prompt}, tmp_path / "o5", progress=False
        )

    with pytest.raises(ValueError, match=r"x: .*\(40.0, 5.0\) lies outside the 30x20 image"):
        bad_prompt({"points": [[[40, 5]]]})
    with pytest.raises(ValueError, match="x: object 1 has no points and no box"):
        bad_prompt({"points": [[[1, 1]], []]})
    with pytest.raises(ValueError, match="x: 2 point lists for 1 boxes"):
        bad_prompt({"points": [[[1, 1]], [[2, 2]]], "boxes": [[0, 0, 5, 5]]})
    with pytest.raises(ValueError, match=r"x: labels\[0\]\[0\] is 2"):
        bad_prompt({"points": [[[1, 1]]], "labels": [[2]]})
    with pytest.raises(ValueError, match="appears twice"):
        img = np.zeros((20, 30, 3), np.uint8)
        segment_stream(seg, [("x", img), ("x", img)], {"x": PROMPTS["a"]}, tmp_path / "o6", progress=False)

    # an image without a prompt half-way through a stream: the batches before it are kept, and a rerun resumes
    out = tmp_path / "o7"
    with pytest.raises(ValueError, match="c: no prompt for this image"):
        segment_stream(seg, image_dir, lambda n: PROMPTS.get(n) if n != "c" else None, out, batch_size=2)
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    summary = segment_stream(seg, image_dir, PROMPTS, out, batch_size=2, progress=False)
    assert (summary.done, summary.skipped) == (4, 2)
    assert jit_compiles(seg._fn) == 1


def test_failed_write_leaves_no_output_and_is_redone(seg, tmp_path, monkeypatch):
    img = np.full((20, 30, 3), 128, np.uint8)
    real_save = Image.Image.save

    def crash(self, fp, *args, **kwargs):  # dies half-way through writing the file
        fp.write(b"\x89PNG\r\n\x1a\n half")
        raise OSError("disk on fire")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk on fire"):
        segment_stream(seg, [("x", img)], {"x": PROMPTS["a"]}, tmp_path, progress=False)
    assert os.listdir(tmp_path) == []  # neither x.png nor a temporary file
    monkeypatch.setattr(Image.Image, "save", real_save)
    summary = segment_stream(seg, [("x", img)], {"x": PROMPTS["a"]}, tmp_path, progress=False)
    assert (summary.done, summary.skipped) == (1, 0)
    assert os.listdir(tmp_path) == ["x.png"]


def test_padding_grows_once_and_is_sized_up_front(small_ref, tmp_path):
    """A fresh segmenter: 5 objects (bucket 16) first, then 1; and a directory whose big prompt comes last."""
    seg1 = BatchSegmenter(small_ref.model, small_ref.params, devices=jax.devices()[:1], multimask_output=False)
    img = np.full((32, 32, 3), 100, np.uint8)
    big = {"points": [[[i + 1, i + 1]] for i in range(5)]}
    small = {"points": [[[3, 3]]]}
    pairs = [("big", img), ("s1", img), ("s2", img)]
    summary = segment_stream(seg1, pairs, {"big": big, "s1": small, "s2": small}, tmp_path / "o1", progress=False)
    assert summary.done == 3
    assert jit_compiles(seg1._fn) == 1, "the padding must not shrink back (and recompile) within a stream"
    d = tmp_path / "images"
    d.mkdir()
    Image.fromarray(img).save(d / "1_small.png")
    Image.fromarray(img).save(d / "2_big.png")
    segment_stream(seg1, d, {"1_small": small, "2_big": big}, tmp_path / "o2", batch_size=1, progress=False)
    assert jit_compiles(seg1._fn) == 1, "with a mapping of prompts the padding is sized for the largest one up front"
    with Image.open(tmp_path / "o2" / "2_big.png") as im:
        assert np.asarray(im).max() <= 5  # a label image of 5 objects
