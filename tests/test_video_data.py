"""Video fine-tuning data: DAVIS / YouTube-VOS, SA-V and annotate layouts, their structural errors, the clip sampler."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_jax.processing.rle import coco_encode_rle, mask_to_rle
from sam2_jax.processing.video.frames import VideoFrames
from sam2_jax.training.video_data import VideoDataset
from sam2_jax.training.video_sampling import NoClip, VideoClipSource, sample_clip

BEDROOM = Path(__file__).parent / "data" / "videos" / "bedroom"
H, W = 48, 64
IDS = (1, 2, 5)  # label values: 2 is absent from frames 0 and 1, 5 from frames before 6
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [255] * (3 * 250)


def label(t: int) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    out[5:20, 5 + t : 20 + t] = 1
    if t >= 2:
        out[25:40, 30:45] = 2
    if t >= 6:
        out[30:46, 2 + t : 10 + t] = 5  # overlaps nothing of 1, some of 2 at t > 20 only
    return out


@pytest.fixture(scope="module")
def frames():
    return [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB").resize((W, H))) for i in range(17)]


def write_frames(folder: Path, frames, indices):
    folder.mkdir(parents=True, exist_ok=True)
    for t in indices:
        Image.fromarray(frames[t]).save(folder / f"{t:05d}.jpg", quality=95)


def write_label(path: Path, array: np.ndarray, mode: str = "P"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        im = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array, np.uint8).tobytes())
        im.putpalette(PALETTE)
    else:
        im = Image.fromarray(array)
    im.save(path)


def read_jpg(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def davis_video(root: Path, frames, name: str, n: int, annotated=None, mode: str = "P", blank: bool = False):
    write_frames(root / "JPEGImages" / name, frames, range(n))
    (root / "Annotations" / name).mkdir(parents=True, exist_ok=True)
    for t in range(n) if annotated is None else annotated:
        write_label(root / "Annotations" / name / f"{t:05d}.png", label(t) * (not blank), mode)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("davis")
    davis_video(root, frames, "dense", 12)
    davis_video(root, frames, "sparse", 12, annotated=[0, 5, 10], mode="L")  # YouTube-VOS: every 5th annotated
    davis_video(root, frames, "short", 3)
    davis_video(root, frames, "blank", 4, blank=True)
    davis_video(root, frames, "unlabeled", 4, annotated=[])
    return root


@pytest.fixture(scope="module")
def davis(davis_root):
    return VideoDataset.from_davis(davis_root)


def test_davis_layout(davis, davis_root):
    assert davis.videos == ["dense", "short", "sparse"]
    assert [davis.num_frames(i) for i in range(3)] == [12, 3, 12]
    assert davis.annotated(2) == [0, 5, 10] and davis.annotated(0) == list(range(12))
    assert davis.objects(0) == [1, 2, 5] and davis.objects(1) == [1, 2] and davis.size(0) == (H, W)
    assert davis.present(0, 0) == (1,) and davis.present(0, 7) == (1, 2, 5)
    assert sorted(davis.skipped) == [
        (str(davis_root / "Annotations" / "blank"), "no objects"),
        (str(davis_root / "Annotations" / "unlabeled"), "no annotated frames"),
    ]
    assert davis.report().endswith("3 videos (18 annotated frames) from " + str(davis_root) + "; skipped: "
                                   "1 no annotated frames, 1 no objects")  # fmt: skip


def test_davis_clip_exact(davis, davis_root):
    clip = davis.clip(0, [7, 3, 4], obj_ids=[5, 1])
    assert clip.name == "dense" and clip.frames.shape == (3, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (3, 2, H, W) and clip.masks.dtype == bool
    assert clip.obj_ids.tolist() == [5, 1] and clip.frame_indices.tolist() == [7, 3, 4]
    for j, t in enumerate([7, 3, 4]):
        np.testing.assert_array_equal(clip.frames[j], read_jpg(davis_root / "JPEGImages" / "dense" / f"{t:05d}.jpg"))
        for k, obj in enumerate([5, 1]):
            np.testing.assert_array_equal(clip.masks[j, k], label(t) == obj)
    assert not clip.masks[1, 0].any() and clip.masks[0, 0].any()  # object 5 is absent from frame 3: all False
    everything = davis.clip(0, [6])
    assert everything.obj_ids.tolist() == [1, 2, 5] and everything.masks.shape == (1, 3, H, W)


def test_sparse_annotation(davis, davis_root):
    clip = davis.clip(2, [0, 5, 10])
    for j, t in enumerate([0, 5, 10]):
        np.testing.assert_array_equal(clip.masks[j], label(t)[None] == np.array([1, 2, 5])[:, None, None])
    with pytest.raises(ValueError, match=r"frame 1 of sparse is not a training \(annotated\) frame"):
        davis.clip(2, [0, 1])
    with pytest.raises(ValueError, match=r"sparse has no objects \[7\]"):
        davis.clip(2, [0], obj_ids=[7])
    s = sample_clip(davis, 2, num_frames=3, rng=np.random.default_rng(0))
    assert s.frame_indices == [0, 5, 10]  # consecutive annotated frames, not consecutive frames
    with pytest.raises(NoClip, match="cannot sample 4 frames, it has 3 annotated frames"):
        sample_clip(davis, 2, num_frames=4, rng=np.random.default_rng(0))


def test_lazy_objects(davis_root):
    lazy = VideoDataset.from_davis(davis_root, check_empty=False)
    assert lazy.videos == ["blank", "dense", "short", "sparse"] and lazy.objects(1) is None
    assert [r for _, r in lazy.skipped] == ["no annotated frames"]
    assert lazy.clip(1, [0, 1]).obj_ids.tolist() == [1]  # the objects of those frames
    with pytest.raises(NoClip, match="no visible object in the first frame of 1000 sampled clips"):
        sample_clip(lazy, 0, num_frames=2, rng=np.random.default_rng(0))


def test_split_file(davis_root, tmp_path):
    split = tmp_path / "train.txt"
    split.write_text("sparse\ndense\n")
    assert VideoDataset.from_davis(davis_root, split).videos == ["dense", "sparse"]
    split.write_text("dense\nnope\n")
    with pytest.raises(ValueError, match=r"train.txt: lists 'nope', which has no frames folder"):
        VideoDataset.from_davis(davis_root, split)


def test_sampler(davis):
    def draw(seed, **kw):
        return sample_clip(davis, 0, num_frames=4, max_num_objects=2, rng=np.random.default_rng(seed), **kw)

    samples = [draw(seed) for seed in range(60)]
    assert [(s.frame_indices, s.obj_ids) for s in samples] == [
        (s.frame_indices, s.obj_ids) for s in map(draw, range(60))
    ]
    assert len({tuple(s.frame_indices) for s in samples}) > 5 and len({tuple(s.obj_ids) for s in samples}) > 3
    for s in samples:
        first = s.frame_indices[0]
        assert s.frame_indices == list(range(first, first + 4)) and 0 <= first <= 8
        visible = set(np.unique(label(first)).tolist()) - {0}
        assert set(s.obj_ids) <= visible and len(set(s.obj_ids)) == len(s.obj_ids) == min(2, len(visible))
        assert s.absent == 3 - len(visible) and s.retries == 0
    assert any(s.obj_ids == [1] for s in samples)  # first frame 0 or 1: only object 1 is visible
    assert {tuple(sorted(s.obj_ids)) for s in samples if s.frame_indices[0] >= 6} == {(1, 2), (1, 5), (2, 5)}
    for s in (draw(seed, reverse_time_prob=1.0) for seed in range(20)):
        last = s.frame_indices[0]
        assert s.frame_indices == list(range(last, last - 4, -1))
        assert set(s.obj_ids) <= set(np.unique(label(last)).tolist()) - {0}  # visible in the (reversed) first frame
    flips = [draw(seed, reverse_time_prob=0.5).frame_indices for seed in range(40)]
    assert 5 < sum(f[0] > f[1] for f in flips) < 35


def test_clip_source(davis_root):
    ds = VideoDataset.from_davis(davis_root, check_empty=False)  # keeps "blank", which has no visible object
    src = VideoClipSource(ds, num_frames=4, max_num_objects=2, seed=7)
    assert len(src) == 2 and [ds.videos[i] for i in src.videos] == ["blank", "dense"]
    assert src.skipped["videos with fewer than 4 annotated frames"] == 2  # "short" and "sparse" have 3
    a, b = src[1], VideoClipSource(ds, num_frames=4, max_num_objects=2, seed=7)[1]
    assert a.frames.shape == (4, H, W, 3) and a.masks.shape[:2] == (4, len(a.obj_ids)) and len(a.obj_ids) <= 2
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.frame_indices.tolist() == b.frame_indices.tolist() and a.obj_ids.tolist() == b.obj_ids.tolist()
    copy = pickle.loads(pickle.dumps(src))
    assert [copy.sample(k)[1] for k in range(6)] == [src.sample(k)[1] for k in range(6)]
    epoch1 = VideoClipSource(ds, num_frames=4, max_num_objects=2, seed=7, epoch=1)
    assert [epoch1.sample(k) for k in range(2)] == [src.sample(k + len(src)) for k in range(2)]
    other = VideoClipSource(ds, num_frames=4, max_num_objects=2, seed=8)
    assert [other.sample(k) for k in range(30)] != [src.sample(k) for k in range(30)]
    video, s = src.sample(0)  # "blank" fails 1000 draws: another video is drawn, as VOSDataset._get_datapoint does
    assert ds.videos[video] == "dense" and set(s.obj_ids) <= set(ds.present(video, s.frame_indices[0]))
    assert src.skipped["clips drawn from another video (no visible object in a first frame)"] >= 1
    assert src.skipped["objects not visible in a first frame"] == 0  # objects unknown (check_empty=False)
    known = VideoClipSource(VideoDataset.from_davis(davis_root), num_frames=4)
    for k in range(12):
        known.sample(k)
    assert known.skipped["objects not visible in a first frame"] > 0 and "skipped: " in known.report()
    with pytest.raises(ValueError, match="no video has 20 annotated frames"):
        VideoClipSource(ds, num_frames=20)


def rle(mask: np.ndarray) -> dict:
    return coco_encode_rle(mask_to_rle(mask[None])[0])


def sav_record(n_ann: int, h=H, w=W, null_at=None) -> dict:
    masklet = []
    for k in range(n_ann):
        t = 4 * k
        objects = [rle(label(t) == 1), rle(label(t) == 2), rle(np.zeros((h, w), bool))]  # the last: always empty
        if k == null_at:
            objects[1] = None
        masklet.append(objects)
    return {"video_id": "v", "video_height": float(h), "video_width": float(w), "masklet": masklet,
            "masklet_id": [0, 1, 2], "masklet_num": 3}  # fmt: skip


@pytest.fixture(scope="module")
def sav_root(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("sav")
    write_frames(root / "JPEGImages_24fps" / "sav_a", frames, range(17))  # every frame, annotated every 4th
    (root / "sav_a_manual.json").write_text(json.dumps(sav_record(5, null_at=3)))
    write_frames(root / "JPEGImages_24fps" / "sav_b", frames, [0, 4, 8])  # extracted every 4th frame only
    (root / "sav_b_manual.json").write_text(json.dumps(sav_record(3)))
    return root


def test_sav_layout(sav_root):
    ds = VideoDataset.from_sav(sav_root)
    assert ds.videos == ["sav_a", "sav_b"] and ds.num_frames(0) == 17 and ds.frame_indices(1) == [0, 4, 8]
    assert ds.annotated(0) == [0, 4, 8, 16] and ds.annotated(1) == [0, 4, 8]  # frame 12 has a null masklet
    assert ds.objects(0) == [0, 1] and ds.present(0, 0) == (0,) and ds.present(0, 4) == (0, 1)
    reasons = sorted(r for _, r in ds.skipped)
    assert reasons == ["empty object", "empty object", "frame with a null masklet"]
    assert "1 frame with a null masklet" in ds.report() and "2 empty object" in ds.report()
    clip = ds.clip(0, [16, 4], obj_ids=[1, 0])
    for j, t in enumerate([16, 4]):
        np.testing.assert_array_equal(
            clip.frames[j], read_jpg(sav_root / "JPEGImages_24fps" / "sav_a" / f"{t:05d}.jpg")
        )
        np.testing.assert_array_equal(clip.masks[j], np.stack([label(t) == 2, label(t) == 1]))
    s = sample_clip(ds, 0, num_frames=2, max_num_objects=5, rng=np.random.default_rng(1))
    assert s.frame_indices in ([0, 4], [4, 8], [8, 16]) and set(s.obj_ids) == set(ds.present(0, s.frame_indices[0]))
    with pytest.raises(ValueError, match="frame 12 of sav_a is not a training"):
        ds.clip(0, [12])


def test_sav_mp4(tmp_path, frames):
    av = pytest.importorskip("av")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(tmp_path / "sav_c.mp4"), "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in frames[:13]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    (tmp_path / "sav_c_manual.json").write_text(json.dumps(sav_record(4)))
    ds = VideoDataset.from_sav(tmp_path)
    assert ds.num_frames(0) == 13 and ds.annotated(0) == [0, 4, 8, 12]
    clip = ds.clip(0, [8, 12])
    decoded = VideoFrames.open(str(tmp_path / "sav_c.mp4"))
    np.testing.assert_array_equal(clip.frames, np.stack([decoded.image(8), decoded.image(12)]))
    assert np.abs(clip.frames.astype(int) - np.stack([frames[8], frames[12]])).mean() < 12
    np.testing.assert_array_equal(clip.masks, np.stack([[label(t) == 1, label(t) == 2] for t in (8, 12)]))
    (tmp_path / "sav_c_manual.json").write_text(json.dumps(sav_record(5)))
    with pytest.raises(ValueError, match=r"sav_c_manual.json: an annotation for frame 16, which .*sav_c.mp4"):
        VideoDataset.from_sav(tmp_path)


@pytest.fixture
def annotated_video(tmp_path, frames):
    from sam2_jax.app.masks import encode_masks
    from sam2_jax.app.video_tracking import FORMAT

    video, out = tmp_path / "clip", tmp_path / "out"
    write_frames(video, frames, range(12))
    masks = {}
    for t in range(2, 10):  # tracked frames; object 7 is never seen, frame 5 has no object
        objects = [] if t == 5 else [1, 2]
        rles = encode_masks(np.stack([label(t) == i for i in objects])) if objects else []
        masks[str(t)] = {str(i): r["segmentation"] for i, r in zip(objects, rles, strict=True) if r["area"] > 0}
    rec = {"format": FORMAT, "frames": 12, "width": W, "height": H, "objects": [1, 2, 7], "calls": [], "masks": masks}
    out.mkdir()
    (out / "video.json").write_text(json.dumps(rec))
    return video, out, rec


def test_annotate_layout(annotated_video):
    video, out, _ = annotated_video
    ds = VideoDataset.from_annotate(video, out)
    assert ds.videos == ["clip"] and ds.num_frames(0) == 12 and ds.annotated(0) == list(range(2, 10))
    assert ds.objects(0) == [1, 2] and ds.present(0, 5) == () and ds.present(0, 3) == (1, 2)
    assert ds.skipped == [(f"{out / 'video.json'} object 7", "empty object")]
    clip = ds.clip(0, [4, 5, 6])
    assert clip.masks.shape == (3, 2, H, W) and not clip.masks[1].any()
    np.testing.assert_array_equal(clip.masks[[0, 2]], np.stack([[label(t) == 1, label(t) == 2] for t in (4, 6)]))
    np.testing.assert_array_equal(clip.frames[2], read_jpg(video / "00006.jpg"))
    for seed in range(10):
        s = sample_clip(ds, 0, num_frames=4, rng=np.random.default_rng(seed))
        assert s.frame_indices[0] != 5  # no visible object there: drawn again
    assert any(sample_clip(ds, 0, 4, rng=np.random.default_rng(seed)).retries for seed in range(40))


def annotate_error(annotated_video, change, match):
    video, out, rec = annotated_video
    rec = json.loads(json.dumps(rec))
    change(rec)
    (out / "video.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=match):
        VideoDataset.from_annotate(video, out)


def test_annotate_errors(annotated_video):
    video, out, rec = annotated_video
    annotate_error(annotated_video, lambda r: r.update(frames=30), r"video.json: the record of another video \(30 "
                   r"frames of 64 x 48; .*clip: 12 of 64 x 48\)")  # fmt: skip
    annotate_error(annotated_video, lambda r: r.update(width=32), "the record of another video")
    annotate_error(annotated_video, lambda r: r.update(format="x"), "video.json: not a sam2-jax video record")
    annotate_error(annotated_video, lambda r: r.update(objects=[1]),
                   r"video.json: frame 2 has a mask of object 2, not one of its objects \[1\]")  # fmt: skip
    annotate_error(annotated_video, lambda r: r["masks"].update({"12": {}}), "masks for frame '12', which .*12 frames")
    small = rle(np.ones((8, 8), bool))
    annotate_error(annotated_video, lambda r: r["masks"]["3"].update({"1": small}),
                   r"video.json: frame 3 object 1: RLE size \[8, 8\] differs from the frames' \[48, 64\]")  # fmt: skip
    annotate_error(annotated_video, lambda r: r.update(masks={}), r"no video with an annotated object \(1 no annot")


@pytest.fixture
def tiny_davis(tmp_path, frames):
    davis_video(tmp_path, frames, "v", 3)
    return tmp_path


def test_davis_errors(tiny_davis, frames):
    root, ann = tiny_davis, tiny_davis / "Annotations" / "v"
    write_label(ann / "00001.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"00001.png: mask \(height, width\) \(32, 32\) differs from its frame's \(48"):
        VideoDataset.from_davis(root)
    write_label(ann / "00001.png", label(1))
    Image.new("RGB", (W, H)).save(ann / "00002.png")
    with pytest.raises(ValueError, match=r"00002.png: a label image must be single-channel .*not RGB"):
        VideoDataset.from_davis(root)
    write_label(ann / "00002.png", label(2))
    write_label(ann / "00009.png", label(2))
    with pytest.raises(ValueError, match=r"00009.png: an annotation for a frame that does not exist \(no .*00009.jpg"):
        VideoDataset.from_davis(root)
    (ann / "00009.png").unlink()
    (ann / "mask.png").write_bytes((ann / "00002.png").read_bytes())
    with pytest.raises(ValueError, match=r"mask.png: not named by its frame number"):
        VideoDataset.from_davis(root)
    (ann / "mask.png").unlink()
    shutil.copy(root / "JPEGImages" / "v" / "00002.jpg", root / "JPEGImages" / "v" / "2.jpg")
    with pytest.raises(ValueError, match=r"two frames numbered 2 \(00002.jpg and 2.jpg\)"):
        VideoDataset.from_davis(root)
    (root / "JPEGImages" / "v" / "2.jpg").unlink()
    assert VideoDataset.from_davis(root).videos == ["v"]  # repaired
    (root / "Annotations" / "w").mkdir()
    with pytest.raises(ValueError, match=r"Annotations/w: annotations without a frames folder .*JPEGImages/w"):
        VideoDataset.from_davis(root)
    (root / "JPEGImages" / "w").mkdir()
    with pytest.raises(ValueError, match=r"JPEGImages/w: a video without frames"):
        VideoDataset.from_davis(root)
    (root / "Annotations" / "w").rmdir()
    write_frames(root / "JPEGImages" / "w", frames, [0])
    with pytest.raises(ValueError, match=r"JPEGImages/w: frames without an annotation folder .*Annotations/w"):
        VideoDataset.from_davis(root)
    with pytest.raises(ValueError, match=r"nothing/JPEGImages: no frames folder"):
        VideoDataset.from_davis(root / "nothing")


def write_sav(root: Path, frames, record: dict, indices=range(9)):
    write_frames(root / "JPEGImages_24fps" / "v", frames, indices)
    (root / "v_manual.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda r: r["masklet"][1].pop(), r"v_manual.json: frame 4 has 2 masklets, frame 0 has 3"),
        (lambda r: r["masklet"][2].__setitem__(0, rle(np.ones((24, 32), bool))),
         r"v_manual.json: frame 8 masklet 0: RLE size \[24, 32\] differs from the frames' \[48, 64\]"),
        (lambda r: r.update(video_width=640.0), r"v_manual.json: video_height x video_width \(48, 640\) differ from"),
        (lambda r: r.update(masklet_num=4), r'v_manual.json: "masklet_num" \(4\) does not match the 3 masklets'),
        (lambda r: r.update(masklet_id=[0, 1]), r'v_manual.json: "masklet_id" \(\[0, 1\]\) does not match'),
        (lambda r: r["masklet"].append(r["masklet"][0]), r"v_manual.json: an annotation for frame 12, which .*/v does"),
        (lambda r: r["masklet"][0].__setitem__(0, {"counts": "abc"}), r"frame 0 masklet 0: not a COCO RLE"),
        (lambda r: r.pop("masklet"), r'v_manual.json: no "masklet" list'),
    ],
)  # fmt: skip
def test_sav_errors(tmp_path, frames, change, match):
    record = sav_record(3)
    change(record)
    write_sav(tmp_path, frames, record)
    with pytest.raises(ValueError, match=match):
        VideoDataset.from_sav(tmp_path)


def test_sav_pairing_errors(tmp_path, frames):
    write_sav(tmp_path, frames, sav_record(3))
    assert VideoDataset.from_sav(tmp_path).annotated(0) == [0, 4, 8]
    (tmp_path / "w_manual.json").write_text(json.dumps(sav_record(3)))
    with pytest.raises(ValueError, match=r"w_manual.json: an annotation without frames \(no .*JPEGImages_24fps/w/"):
        VideoDataset.from_sav(tmp_path)
    (tmp_path / "w_manual.json").unlink()
    (tmp_path / "JPEGImages_24fps" / "u").mkdir()
    with pytest.raises(ValueError, match=r"JPEGImages_24fps/u: frames without an annotation .*u_manual.json"):
        VideoDataset.from_sav(tmp_path)
    (tmp_path / "u_manual.json").write_text(json.dumps(sav_record(1)))
    with pytest.raises(ValueError, match=r"JPEGImages_24fps/u: a video without frames"):
        VideoDataset.from_sav(tmp_path)
    (tmp_path / "u_manual.json").write_text("{not json")
    write_frames(tmp_path / "JPEGImages_24fps" / "u", frames, [0])
    with pytest.raises(ValueError, match=r"u_manual.json: cannot read SA-V JSON"):
        VideoDataset.from_sav(tmp_path)
    with pytest.raises(ValueError, match=r"empty: no SA-V annotations"):
        VideoDataset.from_sav(tmp_path / "empty")
