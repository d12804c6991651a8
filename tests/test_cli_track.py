"""``sam2-jax track``: label PNGs, overlays and preview for a video file and a JPEG directory, a run interrupted and
resumed giving the same bytes as an uninterrupted one, refusing another job's state, bad input, and the tracking
checkpoint's round trip. A randomised 256-px video model (``reference.tracking_test_config``), 12 frames."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

from sam2_jax.cli import main
from sam2_jax.cli import track as track_cli
from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"
W, H = 480, 270  # the bedroom frames at half size: a cheaper test


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Random NumPy params (``reference.random_params``) with the object-score bias shifted by +5: objects seen."""
    from reference import random_params, tracking_test_config

    from sam2_jax import save_converted

    config = tracking_test_config()
    params = random_params(config, score_shift=5.0)
    return save_converted(tmp_path_factory.mktemp("model") / "ckpt", config, params)


@pytest.fixture(scope="module")
def predictors():
    return {}


@pytest.fixture(autouse=True)
def shared_predictor(monkeypatch, predictors):
    """One loaded predictor (and its compiled steps) per model for the whole module, as if each run loaded it."""
    real = Sam2VideoPredictor.from_pretrained.__func__

    def cached(cls, src, **kwargs):
        if src not in predictors:
            predictors[src] = real(cls, src, **kwargs)
        return predictors[src]

    monkeypatch.setattr(Sam2VideoPredictor, "from_pretrained", classmethod(cached))


def _frames(n=12):
    return [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB").resize((W, H))) for i in range(n)]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    av = pytest.importorskip("av")
    from test_video_frames import encode_video

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    return encode_video(tmp_path_factory.mktemp("video") / "bedroom.mp4", _frames(), codec, fps=12)


def _files(directory: pathlib.Path) -> dict:
    """Every output's bytes; the tracking state's arrays (an npz's zip entries carry their write time)."""
    files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    if "track_state.npz" in files:
        with np.load(directory / "track_state.npz") as data:
            files["track_state.npz"] = {k: (v.dtype, v.tobytes()) for k, v in data.items()}
    return files


class Killed(BaseException):
    """A kill: not an error the command reports."""


def test_track_video_file_kill_and_resume(model_dir, video, tmp_path, monkeypatch, capsys):
    prompts = ["--point", "3:240,130", "--negative", "3:60,40", "--box", "5:300,150,420,260:2"]
    argv = ["track", str(video), *prompts, "--model", str(model_dir), "--overlay", "--checkpoint-every", "4"]
    ref = tmp_path / "uninterrupted"
    assert main([*argv, "--out", str(ref)]) == 0
    assert "12 label images of objects 1, 2" in capsys.readouterr().out
    files = _files(ref)
    names = [f"{i:05d}" for i in range(12)]
    assert sorted(files) == sorted(
        [f"{n}.png" for n in names] + [f"overlay/{n}.jpg" for n in names] + ["preview.gif", "track_state.npz"]
    )
    labels = np.stack([np.asarray(Image.open(ref / f"{n}.png")) for n in names])
    assert labels.dtype == np.uint8 and labels.shape == (12, H, W) and set(np.unique(labels)) <= {0, 1, 2}
    assert (labels == 1).any() and (labels == 2).any()
    with Image.open(ref / "preview.gif") as gif:
        assert (gif.n_frames, gif.size) == (12, (W, H)) and gif.info["duration"] == 80  # 12 fps, in 1/100 s
    assert np.asarray(Image.open(ref / "overlay/00004.jpg")).shape == (H, W, 3)

    # killed after 6 label images (inside the third chunk: frames 3..6, 7..10, 11, then 2..0 backward)
    out = tmp_path / "resumed"
    from sam2_jax.cli import common

    real_save = common.save_png
    written = []

    def killing_save(path, array, **kw):
        if len(written) == 6:
            raise Killed
        written.append(path)
        real_save(path, array, **kw)

    monkeypatch.setattr(common, "save_png", killing_save)
    with pytest.raises(Killed):
        main([*argv, "--out", str(out)])
    from sam2_jax.frontends.video.checkpoint import load_tracking_state

    saved = load_tracking_state(out / "track_state.npz")
    assert saved.info["frames_done"] == 4 and saved.info["next_chunk"] == 1  # the first chunk's state
    (out / ".00009.png.1.deadbeef.partial").write_bytes(b"half a PNG")  # as a kill mid-write leaves

    # the rerun continues from the saved chunk and writes the same bytes as the uninterrupted run
    written.clear()
    monkeypatch.setattr(common, "save_png", lambda p, a, **kw: (written.append(p), real_save(p, a, **kw)))
    assert main([*argv, "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().err
    assert len(written) == 8  # frames 7..11 and 2..0: nothing before the checkpoint again
    resumed = _files(out)
    assert sorted(resumed) == sorted(files)
    for name in files:
        assert resumed[name] == files[name], name

    # the same --out with other prompts: refused, untouched; --restart starts over
    other = [a.replace("3:240,130", "3:200,100") for a in argv]
    assert main([*other, "--out", str(out)]) == 1
    assert "different tracking job" in capsys.readouterr().err
    assert _files(out) == resumed
    assert main([*other, "--out", str(out), "--restart", "--no-progress"]) == 0
    restarted = load_tracking_state(out / "track_state.npz").info["manifest"]["prompts"]
    assert restarted[0][2] == [[200.0, 100.0], [60.0, 40.0]] and len(list(out.glob("*.png"))) == 12


def test_track_jpeg_directory_frame_range_uint16(model_dir, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(_frames(6)):
        Image.fromarray(f).save(frames / f"{i}.jpg", quality=95)
    out = tmp_path / "out"
    argv = ["track", str(frames), "--point", "3:240,130:300", "--point", "2:100,200:7", "--frames", "1:5"]
    assert main([*argv, "--model", str(model_dir), "--out", str(out), "--overlay", "--preview", "webp"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["00001.png", "00002.png", "00003.png", "00004.png"]  # backward from 2 to 1, forward to 4
    labels = [np.asarray(Image.open(out / name)) for name in pngs]
    assert all(x.dtype == np.uint16 and x.shape == (H, W) and set(np.unique(x)) <= {0, 7, 300} for x in labels)
    with Image.open(out / "preview.webp") as webp:
        assert (webp.n_frames, webp.size) == (4, (W, H))  # fps unknown for a directory: 10


def test_track_palette_pngs(model_dir, tmp_path):
    """``--palette``: DAVIS / YouTube-VOS palette PNGs holding the same values as the grey-level ones."""
    from sam2_jax.processing.palette import davis_palette

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(_frames(3)):
        Image.fromarray(f).save(frames / f"{i}.jpg", quality=95)
    argv = ["track", str(frames), "--point", "0:240,130:2", "--point", "1:100,200:5", "--model", str(model_dir)]
    assert main([*argv, "--out", str(tmp_path / "grey"), "--no-progress"]) == 0
    assert main([*argv, "--out", str(tmp_path / "davis"), "--palette", "--no-progress"]) == 0
    for t in range(3):
        with Image.open(tmp_path / "davis" / f"{t:05d}.png") as im, Image.open(tmp_path / "grey" / f"{t:05d}.png") as g:
            assert im.mode == "P" and g.mode == "L"
            np.testing.assert_array_equal(np.asarray(im), np.asarray(g))
            assert np.array_equal(np.asarray(im.getpalette()[:768]).reshape(256, 3), davis_palette())
    assert {2, 5} <= set(np.unique(np.asarray(Image.open(tmp_path / "davis" / "00001.png"))))
    assert davis_palette()[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]  # the VOC colours


def test_labels_from_logits():
    logits = np.full((3, 1, 2, 3), -5.0, np.float32)
    logits[0, 0, 0] = [1.0, 2.0, -1.0]
    logits[1, 0, 0] = [3.0, 2.0, -0.5]  # pixel (0, 1): a tie between objects 0 and 1 -> the first
    logits[2, 0, 1] = [0.5, -1.0, 4.0]
    labels = track_cli.labels_from_logits(logits, [4, 9, 300], np.uint16)
    np.testing.assert_array_equal(labels, [[9, 4, 0], [300, 0, 300]])
    assert labels.dtype == np.uint16


@pytest.mark.parametrize(
    "args, message",
    [
        (["--point", "12:10,10"], "frame 12 is past the end of the video (frames 0..11)"),
        (["--point", "0:500,10"], "outside the 480x270 frame"),
        (["--box", "0:50,50,10,10"], "X1 <= X2"),
        (["--negative", "0:10,10"], "at least one --point"),
        (["--point", "0:10,10", "--frames", "4:2"], "--frames 4:2 is not a range"),
        (["--point", "1:10,10", "--frames", "2:5"], "outside --frames 2:5"),
        (["--point", "0:10,10", "--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
        (["--point", "3;10,10"], "--point must be FRAME:X,Y[:OBJ]"),
        (["--point", "3:10,10:0"], "OBJ in 1..65535"),
        (["--box", "3:10,10,20"], "--box must be FRAME:X1,Y1,X2,Y2[:OBJ]"),
        (["--point", "3:10,10:300", "--palette"], "--palette: a palette PNG holds object ids up to 255"),
    ],
)
def test_track_bad_input(video, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    try:
        code = main(["track", str(video), *args, "--out", str(out), "--model", str(tmp_path / "no-model")])
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    assert code not in (0, None) and message in err, err
    assert err.strip().splitlines()[-1].startswith(("error:", "sam2-jax track: error:"))
    assert not out.exists()


def test_track_unreadable_video(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    base = ["--point", "0:1,1", "--out", str(tmp_path / "out")]
    for video, message in (
        (tmp_path / "broken.mp4", "cannot read video file"),
        (tmp_path / "missing.mp4", "does not exist"),
        (tmp_path, "no <int>.jpg frames found"),
    ):
        assert main(["track", str(video), *base]) == 1
        assert message in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    assert main(["track", str(tmp_path / "broken.mp4"), *base]) == 1
    assert "pip install 'sam2-jax[video]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_refuses_a_foreign_directory(video, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    assert main(["track", str(video), "--point", "0:1,1", "--out", str(out)]) == 1
    assert "not the output of sam2-jax track" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]


def test_checkpoint_round_trip(tmp_path):
    import ml_dtypes

    from sam2_jax.frontends.video.checkpoint import load_tracking_state, save_tracking_state
    from sam2_jax.frontends.video.state import VideoInferenceState
    from sam2_jax.processing.video.frames import VideoFrames
    from sam2_jax.tracking.records import FrameRecord, ObjectTrack

    rng = np.random.default_rng(0)
    state = VideoInferenceState(VideoFrames.from_array(np.zeros((5, 4, 4, 3), np.uint8), image_size=4))
    a = ObjectTrack(5)
    a.points[1] = (rng.random((2, 2), np.float32), np.array([1, 0], np.int32))
    a.cond[1] = FrameRecord(rng.random((4, 4), np.float32), rng.random(8, np.float32), 1.25,
                            rng.random((2, 2, 3)).astype(ml_dtypes.bfloat16))  # fmt: skip
    a.non_cond[3] = FrameRecord(None, rng.random(8).astype(ml_dtypes.bfloat16), None, None)
    a.tracked[1:4] = [0, 0, 1]
    b = ObjectTrack(5)
    b.masks[0] = (rng.random((4, 4)) > 0.5).astype(np.float32)
    b.cond[0] = FrameRecord(rng.random((4, 4), np.float32), rng.random(8, np.float32), -3.5)
    state.obj_ids, state.objects = [7, "car"], [a, b]
    save_tracking_state(tmp_path / "s.npz", state, {"next": 3})
    loaded = load_tracking_state(tmp_path / "s.npz")
    fresh = VideoInferenceState(state.frames)
    loaded.restore(fresh)
    assert loaded.info == {"next": 3} and fresh.obj_ids == [7, "car"]
    for x, y in zip(state.objects, fresh.objects, strict=True):
        assert x.points.keys() == y.points.keys() and x.masks.keys() == y.masks.keys()
        np.testing.assert_array_equal(x.tracked, y.tracked)
        for t in x.points:
            for u, v in zip(x.points[t], y.points[t], strict=True):
                assert u.dtype == v.dtype and u.tobytes() == v.tobytes()
        for kind in ("cond", "non_cond"):
            assert getattr(x, kind).keys() == getattr(y, kind).keys()
            for t, r in getattr(x, kind).items():
                s = getattr(y, kind)[t]
                assert r.object_score == s.object_score
                for name in ("low_res_mask", "pointer", "features"):
                    u, v = getattr(r, name), getattr(s, name)
                    assert (u is None) == (v is None)
                    if u is not None:
                        assert u.dtype == v.dtype and u.tobytes() == v.tobytes(), (kind, t, name)
    state.objects[0].temp_cond[2] = a.cond[1]
    with pytest.raises(ValueError, match="not propagated yet"):
        save_tracking_state(tmp_path / "t.npz", state)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable tracking checkpoint"):
        load_tracking_state(tmp_path / "bad.npz")
