"""``sam2_jax.processing.video.frames.VideoFrames`` against the official ``load_video_frames`` on the bundled
bedroom frames (tests/data/videos/bedroom, 48 frames of 960x540), ordering, laziness, the LRU cache and the errors.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_jax.processing.video.frames import IMAGENET_MEAN, IMAGENET_STD, VideoFrames

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"


@pytest.fixture(scope="module")
def official_256():
    from sam2.utils.misc import load_video_frames

    images, height, width = load_video_frames(
        str(BEDROOM), 256, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    return images.numpy().transpose(0, 2, 3, 1), height, width


def _write_frames(directory, names, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        rgb = np.full((size[1], size[0], 3), 10 * i, np.uint8) + rng.integers(0, 8, (size[1], size[0], 3), np.uint8)
        Image.fromarray(rgb).save(directory / name, format="JPEG")
    return directory


# ---- parity with the official loader ---------------------------------------------------------------------------


def test_bundled_frames():
    names = sorted(p.name for p in BEDROOM.iterdir() if p.suffix == ".jpg")
    assert names == [f"{i:05d}.jpg" for i in range(48)]


def test_parity_with_official_loader(official_256):
    ref, height, width = official_256
    frames = VideoFrames.from_directory(BEDROOM, image_size=256)
    assert (len(frames), frames.num_frames, frames.image_size) == (48, 48, 256)
    assert (frames.video_height, frames.video_width) == (height, width) == (540, 960)
    assert frames.frame_names == [f"{i:05d}.jpg" for i in range(48)]
    ours = np.stack([frames.pixel_values(i) for i in range(48)])
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (48, 256, 256, 3)
    err = np.abs(ours - ref).max()
    print(f"[official load_video_frames, 256] max abs diff {err:.2e}")
    assert err <= 1e-6


def test_parity_at_model_size(tmp_path):
    """Two frames at the model's 1024: the official loader on a two-frame copy of the directory."""
    from sam2.utils.misc import load_video_frames

    for i, src in enumerate((0, 47)):
        shutil.copy(BEDROOM / f"{src:05d}.jpg", tmp_path / f"{i}.jpg")
    ref, _, _ = load_video_frames(str(tmp_path), 1024, offload_video_to_cpu=True, compute_device=torch.device("cpu"))
    frames = VideoFrames.from_directory(BEDROOM)
    assert frames.image_size == 1024
    ours = np.stack([frames.pixel_values(0), frames.pixel_values(47)])
    err = np.abs(ours - ref.numpy().transpose(0, 2, 3, 1)).max()
    print(f"[official load_video_frames, 1024] max abs diff {err:.2e}")
    assert err <= 1e-6


def test_from_array_matches_directory():
    decoded = [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB")) for i in range(4)]
    stacked = np.stack(decoded)
    pils = [Image.fromarray(f) for f in decoded]
    by_dir = VideoFrames.from_directory(BEDROOM, image_size=128)
    for source in (stacked, decoded, pils, torch.from_numpy(stacked)):
        frames = VideoFrames.open(source, image_size=128)
        assert (frames.num_frames, frames.video_height, frames.video_width) == (4, 540, 960)
        assert frames.frame_names is None
        for i in range(4):
            np.testing.assert_array_equal(frames.pixel_values(i), by_dir.pixel_values(i))


def test_normalisation_by_hand():
    rgb = np.random.default_rng(3).integers(0, 256, (2, 5, 7, 3), np.uint8)
    frames = VideoFrames.from_array(rgb, image_size=9)
    resized = np.asarray(Image.fromarray(rgb[1]).resize((9, 9), Image.Resampling.BICUBIC)) / 255.0
    expected = (resized - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(frames.pixel_values(1), expected, atol=1e-6)


def test_from_pixel_values():
    px = np.random.default_rng(0).standard_normal((3, 16, 16, 3)).astype(np.float32)
    frames = VideoFrames.from_pixel_values(px, 540, 960)
    assert (frames.num_frames, frames.image_size, frames.video_height, frames.video_width) == (3, 16, 540, 960)
    out = frames.pixel_values(2)
    assert np.shares_memory(out, px) and not out.flags.writeable  # a view, not a copy
    np.testing.assert_array_equal(out, px[2])
    for bad in (px[0], px[:, :, :8], px[..., :2], px.astype(np.int32), px[:0]):
        with pytest.raises(ValueError, match="pixel values"):
            VideoFrames.from_pixel_values(bad, 540, 960)


def test_open():
    frames = VideoFrames.from_directory(BEDROOM, image_size=64)
    assert VideoFrames.open(frames, image_size=64) is frames
    with pytest.raises(ValueError, match="64x64, not 128"):
        VideoFrames.open(frames, image_size=128)
    assert VideoFrames.open(str(BEDROOM), image_size=64).frame_names == frames.frame_names
    assert VideoFrames.open(BEDROOM, image_size=64).num_frames == 48


# ---- ordering, laziness, cache --------------------------------------------------------------------------------


def test_ordering_by_integer(tmp_path):
    d = _write_frames(tmp_path / "v", ["2.jpg", "10.jpg", "1.jpg", "3.JPEG", "notes.txt.bak"])
    (d / "readme.txt").write_text("not a frame")
    frames = VideoFrames.from_directory(d, image_size=8)
    assert frames.frame_names == ["1.jpg", "2.jpg", "3.JPEG", "10.jpg"]
    assert (frames.video_height, frames.video_width) == (30, 40)
    # frame 3 is 10.jpg (written second: values around 10)
    direct = VideoFrames.from_array([np.asarray(Image.open(d / "10.jpg"))], image_size=8)
    np.testing.assert_array_equal(frames.pixel_values(3), direct.pixel_values(0))
    from sam2.utils.misc import load_video_frames

    ref, _, _ = load_video_frames(str(d), 8, offload_video_to_cpu=True, compute_device=torch.device("cpu"))
    np.testing.assert_array_equal(
        np.stack([frames.pixel_values(i) for i in range(4)]), ref.numpy().transpose(0, 2, 3, 1)
    )


def test_lazy_decoding_and_bounded_cache(monkeypatch):
    opened = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(pathlib.Path(fp).name)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    frames = VideoFrames.from_directory(BEDROOM, image_size=32, cache_size=2)
    assert opened == ["00000.jpg"]  # frame 0's header only
    a = frames.pixel_values(5)
    assert opened[1:] == ["00005.jpg"]
    assert frames.pixel_values(5) is a and len(opened) == 2  # cached
    frames.pixel_values(6)
    frames.pixel_values(5)  # 5 is now the most recent
    frames.pixel_values(7)  # evicts 6
    assert len(frames._cache) == 2 and list(frames._cache) == [5, 7]
    assert frames.pixel_values(5) is a and len(opened) == 4
    frames.pixel_values(6)
    assert opened[1:] == ["00005.jpg", "00006.jpg", "00007.jpg", "00006.jpg"]
    assert not a.flags.writeable
    for i in range(48):
        frames.pixel_values(i)
    assert len(frames._cache) == 2

    uncached = VideoFrames.from_directory(BEDROOM, image_size=32, cache_size=0)
    n = len(opened)
    uncached.pixel_values(1)
    uncached.pixel_values(1)
    assert len(opened) == n + 2 and not uncached._cache


def test_check_index():
    frames = VideoFrames.from_array(np.zeros((3, 4, 4, 3), np.uint8), image_size=4)
    assert frames.check_index(2) == 2 and frames.check_index(np.int64(0)) == 0
    assert type(frames.check_index(np.int32(1))) is int
    for bad in (3, -1, 100):
        with pytest.raises(IndexError, match=rf"frame index {bad} .*0\.\.2"):
            frames.pixel_values(bad)
    for bad in (True, np.bool_(False), 1.0, "1", None):
        with pytest.raises(TypeError, match="integer"):
            frames.check_index(bad)


# ---- errors ----------------------------------------------------------------------------------------------------


def test_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFrames.from_directory(tmp_path / "missing")
    (tmp_path / "video.mp4").write_bytes(b"\0")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        VideoFrames.from_directory(tmp_path / "video.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no <int>.jpg frames found.*empty"):
        VideoFrames.from_directory(empty)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(7):
        Image.new("RGB", (4, 4)).save(pngs / f"{i}.png")
    with pytest.raises(ValueError, match=r"no <int>.jpg frames found.*0\.png, 1\.png.*\(7 files\)"):
        VideoFrames.from_directory(pngs)
    named = _write_frames(tmp_path / "named", ["0.jpg", "frame.jpg"])
    with pytest.raises(ValueError, match="'frame.jpg'.*<int>.jpg"):
        VideoFrames.from_directory(named)
    for bad in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="image_size"):
            VideoFrames.from_directory(BEDROOM, image_size=bad)
    with pytest.raises(ValueError, match="cache_size"):
        VideoFrames.from_directory(BEDROOM, cache_size=-1)


def test_corrupt_and_mismatched_frames(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(3):
        shutil.copy(BEDROOM / f"{i:05d}.jpg", d / f"{i}.jpg")
    (d / "3.jpg").write_bytes(b"this is not a jpeg")
    data = (BEDROOM / "00004.jpg").read_bytes()
    (d / "4.jpg").write_bytes(data[: len(data) // 3])  # truncated: the header reads, the pixels do not
    Image.open(BEDROOM / "00005.jpg").resize((480, 270)).save(d / "5.jpg")
    frames = VideoFrames.from_directory(d, image_size=32)  # frame 0's header only: no error yet
    first = frames.pixel_values(0)
    cache = dict(frames._cache)
    for idx, message in ((3, "cannot read video frame .*3.jpg"), (4, "cannot decode video frame .*4.jpg")):
        with pytest.raises(ValueError, match=message):
            frames.pixel_values(idx)
        assert dict(frames._cache) == cache  # state untouched
    with pytest.raises(ValueError, match=r"5.jpg' is 480x270 .* first frame '0.jpg' is 960x540"):
        frames.pixel_values(5)
    assert frames.pixel_values(0) is first and frames.pixel_values(2).shape == (32, 32, 3)
    # frame 0 unreadable: the header read at open time fails, naming the file
    shutil.copy(d / "3.jpg", d / "0.jpg")
    with pytest.raises(ValueError, match="cannot read video frame .*0.jpg"):
        VideoFrames.from_directory(d)


def test_array_errors():
    ok = np.zeros((2, 6, 8, 3), np.uint8)
    for bad in (ok[0], ok[..., :1], ok.astype(np.float32), ok[None]):
        with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8 array, got \w+ " + re.escape(str(bad.shape))):
            VideoFrames.from_array(bad)
    with pytest.raises(ValueError, match="no frames"):
        VideoFrames.from_array(ok[:0])
    with pytest.raises(ValueError, match="no frames"):
        VideoFrames.from_array([])
    with pytest.raises(ValueError, match="empty"):
        VideoFrames.from_array(np.zeros((2, 0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"video frame 1 must be an \(H, W, 3\) uint8 array, got float64 \(6, 8, 3\)"):
        VideoFrames.from_array([ok[0], np.zeros((6, 8, 3))])
    with pytest.raises(ValueError, match="video frame 2 is 5x6 .* frame 0 is 8x6"):
        VideoFrames.from_array([ok[0], Image.new("RGB", (8, 6)), np.zeros((6, 5, 3), np.uint8)])
    with pytest.raises(TypeError, match="single PIL image"):
        VideoFrames.from_array(Image.new("RGB", (8, 6)))
    with pytest.raises(TypeError, match="not a path"):
        VideoFrames.from_array(str(BEDROOM))


def test_array_frames_not_copied(monkeypatch):
    video = np.random.default_rng(1).integers(0, 256, (5, 12, 10, 3), np.uint8)
    seen = []
    real = Image.fromarray

    def spy(arr, *args, **kwargs):
        seen.append(arr)
        return real(arr, *args, **kwargs)

    monkeypatch.setattr(Image, "fromarray", spy)
    frames = VideoFrames.from_array(video, image_size=16)
    assert not seen  # nothing converted up front
    frames.pixel_values(3)
    assert len(seen) == 1 and np.shares_memory(seen[0], video)  # frame 3 is a view into the caller's array


# ---- video files (PyAV) and iterators --------------------------------------------------------------------------

VIDEO_FPS = 12


def _source_frames(n=12):
    return [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB")) for i in range(n)]


def encode_video(path, frames, codec, fps=VIDEO_FPS, gop=4):
    """Encode (H, W, 3) uint8 frames with PyAV: a keyframe every ``gop`` frames, B-frames where the codec has them."""
    import av

    options = {
        "libx264": {"g": str(gop), "crf": "18", "bf": "2", "preset": "ultrafast"},
        "mpeg4": {"g": str(gop), "b": "8M"},
        "libvpx-vp9": {"g": str(gop), "crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    }[codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module", params=[("mp4", "libx264"), ("avi", "mpeg4"), ("webm", "libvpx-vp9")])
def video_file(request, tmp_path_factory):
    av = pytest.importorskip("av")
    ext, codec = request.param
    if codec not in av.codecs_available:
        pytest.skip(f"this FFmpeg build has no {codec} encoder")
    path = tmp_path_factory.mktemp("video") / f"bedroom.{ext}"
    return encode_video(path, _source_frames(), codec)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_video_file_frames(video_file):
    frames = VideoFrames.open(video_file, image_size=64)
    assert (frames.num_frames, frames.video_height, frames.video_width, frames.fps) == (12, 540, 960, VIDEO_FPS)
    assert frames.frame_names is None and "12 fps" in repr(frames)
    source = _source_frames()
    decoded = [frames.image(i) for i in range(12)]
    psnr = [_psnr(d, s) for d, s in zip(decoded, source, strict=True)]
    print(f"[{video_file.suffix}] PSNR of decoded frames vs source: min {min(psnr):.1f} dB, mean {np.mean(psnr):.1f}")
    assert all(d.shape == (540, 960, 3) and d.dtype == np.uint8 for d in decoded)
    assert min(psnr) >= 35
    by_array = VideoFrames.from_array(decoded, image_size=64)  # the same preprocessing as every other source
    for i in range(12):
        np.testing.assert_array_equal(frames.pixel_values(i), by_array.pixel_values(i))


def test_video_file_random_access_equals_sequential(video_file):
    from sam2_jax.processing.video.files import VideoFileReader

    forward = VideoFileReader(video_file)
    sequential = [forward.frame(i) for i in range(12)]
    assert forward.decoded == 12  # one decode per frame walking forward
    assert forward.frame(5) is sequential[5]  # cached
    backward = VideoFileReader(video_file, cache_bytes=4 * 960 * 540 * 3)  # four frames: one group of 4
    for i in reversed(range(12)):
        np.testing.assert_array_equal(backward.frame(i), sequential[i])
    assert backward.decoded == 12  # one seek per group, each frame decoded once
    tiny = VideoFileReader(video_file, cache_bytes=0)  # two frames kept
    for i in (7, 3, 11, 0, 5, 4, 2, 9, 10, 1, 6, 8, 8, 0):
        np.testing.assert_array_equal(tiny.frame(i), sequential[i])
    assert len(tiny._cache) == 2
    with pytest.raises(IndexError, match=r"frame index 12 .*0\.\.11"):
        tiny.frame(12)


def test_video_file_errors(tmp_path, monkeypatch):
    pytest.importorskip("av")
    with pytest.raises(FileNotFoundError, match="video file .*missing.mp4.* does not exist"):
        VideoFrames.open(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\0" * 100)
    (tmp_path / "notes.txt").write_text("not a video")
    for name in ("bad.mp4", "notes.txt"):
        with pytest.raises(ValueError, match=f"cannot read video file .*{name}"):
            VideoFrames.open(tmp_path / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")  # FFmpeg reads it: a one-frame video
    assert VideoFrames.open(tmp_path / "still.png", image_size=8).num_frames == 1
    with pytest.raises(IsADirectoryError, match="is a directory"):
        VideoFrames.from_file(BEDROOM)
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # PyAV not installed
    with pytest.raises(ImportError, match=r"pip install 'sam2-jax\[video\]'"):
        VideoFrames.from_file(tmp_path / "bad.mp4")


def test_from_iterator_reads_once_in_order():
    source = _source_frames(6)
    consumed = []

    def generate():
        for i, f in enumerate(source):
            consumed.append(i)
            yield f if i % 2 else Image.fromarray(f)

    frames = VideoFrames.from_iterator(generate(), image_size=32, num_frames=6, fps=25)
    assert consumed == [0] and (frames.num_frames, frames.video_width, frames.fps) == (6, 960, 25.0)
    by_array = VideoFrames.from_array(source, image_size=32)
    np.testing.assert_array_equal(frames.pixel_values(0), by_array.pixel_values(0))
    np.testing.assert_array_equal(frames.pixel_values(3), by_array.pixel_values(3))
    assert consumed == [0, 1, 2, 3]  # lazily, up to the frame asked for
    np.testing.assert_array_equal(frames.image(3), source[3])
    np.testing.assert_array_equal(frames.pixel_values(2), by_array.pixel_values(2))  # still kept
    frames.pixel_values(5)
    with pytest.raises(ValueError, match="frame 1 of the frame iterator was read already"):
        frames.pixel_values(1)
    with pytest.raises(ValueError, match="num_frames is needed"):
        VideoFrames.open(iter(source), image_size=32)  # open: an iterator goes to from_iterator
    short = VideoFrames.from_iterator(iter(source), image_size=32, num_frames=8)
    with pytest.raises(ValueError, match="ended after 6 frames, but num_frames is 8"):
        short.pixel_values(7)
    bad = VideoFrames.from_iterator(iter([source[0], source[1][:10]]), image_size=32, num_frames=2)
    with pytest.raises(ValueError, match=r"video frame 1 is 960x10 \(WxH\), but frame 0 is 960x540"):
        bad.pixel_values(1)
    assert VideoFrames.from_iterator(source, image_size=32).num_frames == 6  # a sized iterable: its len()
    with pytest.raises(ValueError, match="fps must be a positive number"):
        VideoFrames.from_array(source, fps=0)
    assert VideoFrames.from_directory(BEDROOM).fps is None
