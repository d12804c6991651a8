"""The fine-tuning data pipeline: datasets (directory layouts, COCO), the synthetic shapes, the grain loader (its
threads and worker processes, its checkpointable state), grain over the video clip source."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from sam2_jax.processing.processor import Sam2Processor
from sam2_jax.training.data import SegmentationDataset
from sam2_jax.training.loader import DataLoader, resize_masks
from sam2_jax.training.synthetic import COCO_FILE, make_shapes_example, write_coco, write_shapes_dataset

SIZE = (96, 128)
SEED = 3
N = 8
LOADER = {"image_size": 64, "mask_size": 16}


def iou(a, b):
    return (a & b).sum((-2, -1)) / np.maximum((a | b).sum((-2, -1)), 1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(root / "label", N, SIZE, SEED, "label", image_format="png", coco=True)
    write_shapes_dataset(root / "per_object", N, SIZE, SEED, "per_object", image_format="png")
    write_shapes_dataset(root / "jpg", N, SIZE, SEED, "label")
    return root


@pytest.fixture(scope="module")
def dataset(data_root):
    return SegmentationDataset.from_directory(data_root / "jpg")


def truth(i):
    return make_shapes_example(SEED, i, SIZE)


def small_copy(data_root, tmp_path, layout="label", n=3):
    """A copy of the first n images (and their masks) of one layout."""
    dst = tmp_path / layout
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for i in range(n):
        name = f"shape_{i:04d}"
        shutil.copy(data_root / layout / "images" / f"{name}.png", dst / "images")
        src = data_root / layout / "masks" / (name if layout == "per_object" else f"{name}.png")
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / "masks" / src.name)
    return dst


# ---- reading ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["label", "per_object"])
def test_directory_reads_the_generated_objects(data_root, layout):
    ds = SegmentationDataset.from_directory(data_root / layout)
    assert len(ds) == N and ds.names == [f"shape_{i:04d}" for i in range(N)] and ds.skipped == []
    for i in range(N):
        ex, t = ds[i], truth(i)
        assert ex.image.dtype == np.uint8 and ex.masks.dtype == bool
        np.testing.assert_array_equal(ex.image, t.image)
        np.testing.assert_array_equal(ex.masks, t.masks)  # IoU 1, same order
    assert "8 images" in ds.report() and "skipped: none" in ds.report()


def test_coco_reads_rle_exactly_and_polygons_closely(data_root):
    ann = json.loads((data_root / "label" / COCO_FILE).read_text())

    def kind(segm):
        return "polygon" if isinstance(segm, list) else type(segm["counts"]).__name__

    kinds = {kind(a["segmentation"]) for a in ann["annotations"]}
    assert kinds == {"polygon", "str", "list"}  # polygons, compressed and uncompressed RLE
    ds = SegmentationDataset.from_coco(data_root / "label" / COCO_FILE, data_root / "label" / "images")
    assert len(ds) == N and ds.names[0] == "shape_0000.png"
    ann_id = 0
    for i in range(N):
        ex, t = ds[i], truth(i)
        np.testing.assert_array_equal(ex.image, t.image)
        assert ex.masks.shape == t.masks.shape
        for m, tm in zip(ex.masks, t.masks, strict=True):
            ann_id += 1
            if ann_id % 3 == 1:  # a polygon, rasterised by pycocotools
                assert iou(m, tm) > 0.9
            else:
                np.testing.assert_array_equal(m, tm)


def test_write_coco_alone(tmp_path):
    path = write_coco(tmp_path / "c", 2, SIZE, SEED, image_format="png")
    assert not (tmp_path / "c" / "masks").exists()
    assert len(SegmentationDataset.from_coco(path, tmp_path / "c" / "images")) == 2


def test_synthetic_is_deterministic():
    a, b, c = make_shapes_example(0, 5), make_shapes_example(0, 5), make_shapes_example(1, 5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (192, 256, 3) and 1 <= len(a.masks) <= 3 and a.masks.any((1, 2)).all()


# ---- loader -------------------------------------------------------------------------------------------------------
def take(loader, n):
    with loader:
        return [b for _, b in zip(range(n), loader, strict=False)]


def assert_batches_equal(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batches_shapes_padding_and_pixels(dataset):
    (batch,) = take(DataLoader(dataset, 3, max_objects=4, **LOADER), 1)
    assert batch["pixel_values"].shape == (3, 64, 64, 3) and batch["pixel_values"].dtype == np.float32
    assert batch["masks"].shape == (3, 4, 16, 16) and batch["masks"].dtype == bool
    assert batch["valid"].shape == (3, 4) and batch["index"].shape == (3,)
    processor = Sam2Processor(image_size=64)
    for b, i in enumerate(batch["index"]):
        ex = dataset[i]
        ref = processor(images=[ex.image])["pixel_values"][0]
        np.testing.assert_array_equal(batch["pixel_values"][b], ref)
        k = len(ex.masks)
        assert batch["valid"][b].tolist() == [True] * k + [False] * (4 - k)
        assert not batch["masks"][b, k:].any() and batch["masks"][b, :k].any((1, 2)).all()
        np.testing.assert_array_equal(batch["masks"][b, :k], resize_masks(ex.masks, 16))
        assert batch["original_sizes"][b].tolist() == list(SIZE)


def test_more_objects_than_slots_are_sampled(dataset):
    batches = take(DataLoader(dataset, 2, max_objects=1, **LOADER), 12)  # 3 epochs
    for batch in batches:
        assert batch["valid"].all()
        for b, i in enumerate(batch["index"]):
            candidates = resize_masks(dataset[i].masks, 16)
            assert any(np.array_equal(batch["masks"][b, 0], c) for c in candidates)


def test_deterministic_and_seeded(dataset):
    a = take(DataLoader(dataset, 2, seed=7, num_threads=1, prefetch=1, **LOADER), 6)
    b = take(DataLoader(dataset, 2, seed=7, num_threads=3, prefetch=4, **LOADER), 6)
    assert_batches_equal(a, b)
    c = take(DataLoader(dataset, 2, seed=8, **LOADER), 6)
    assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(a, c, strict=True))
    epoch = np.concatenate([x["index"] for x in a[:4]])
    assert sorted(epoch.tolist()) == list(range(N))  # an epoch is a permutation
    plain = take(DataLoader(dataset, 2, shuffle=False, **LOADER), 4)
    assert np.concatenate([x["index"] for x in plain]).tolist() == list(range(N))


def test_resume_continues_exactly(dataset):
    kwargs = dict(batch_size=3, max_objects=2, seed=11, **LOADER)  # 2 batches per epoch (drop_last), 5 epochs
    full = take(DataLoader(dataset, **kwargs), 10)
    loader = DataLoader(dataset, **kwargs)
    first = take(loader, 5)
    state = json.loads(json.dumps(loader.state()))
    assert state == {"iterator": {"next_index": 5}, "seed": 11, "num_examples": N}  # grain's: 5 batches consumed
    rest = take(DataLoader(dataset, **{**kwargs, "seed": 0}, state=state), 5)  # the state's seed wins
    assert_batches_equal(full, first + rest)
    with pytest.raises(ValueError, match="examples"):
        DataLoader(dataset, 3, state={**state, "num_examples": N + 1})


def test_epochs_and_last_partial_batch(dataset):
    batches = take(DataLoader(dataset, 3, drop_last=False, epochs=2, **LOADER), 100)
    assert [len(b["index"]) for b in batches] == [3, 3, 2, 3, 3, 2]
    assert sorted(np.concatenate([b["index"] for b in batches[:3]]).tolist()) == list(range(N))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(dataset, N + 1)


def test_thin_objects_survive_resizing():
    masks = np.zeros((3, 200, 300), bool)
    masks[0, 100, 20:280] = True  # a one-pixel line
    masks[1, 50:150, 50:150] = True
    out = resize_masks(masks, 16)
    assert out[0].any() and out[0].sum() <= 16
    assert abs(int(out[1].sum()) - 16 * 16 * (100 * 100) // (200 * 300)) <= 6
    assert not out[2].any()
    up = resize_masks(masks[1:2, ::10, ::10], 64)  # (20, 30) -> 64: bilinear
    assert abs(int(up.sum()) - 64 * 64 // 6) < 64


def test_worker_error_names_the_file_and_keeps_the_state(data_root, tmp_path):
    root = small_copy(data_root, tmp_path, n=4)
    ds = SegmentationDataset.from_directory(root)
    (root / "images" / "shape_0002.png").write_bytes(b"not a png")
    loader = DataLoader(ds, 1, shuffle=False, **LOADER)
    with loader:
        assert [int(next(loader)["index"][0]) for _ in range(2)] == [0, 1]
        with pytest.raises(RuntimeError, match="shape_0002.png"):
            next(loader)
        assert loader.state()["iterator"] == {"next_index": 2}
        (root / "images" / "shape_0002.png").write_bytes((data_root / "label/images/shape_0002.png").read_bytes())
        assert int(next(loader)["index"][0]) == 2  # retried


def test_loader_on_coco(data_root):
    ds = SegmentationDataset.from_coco(data_root / "label" / COCO_FILE, data_root / "label" / "images")
    for batch in take(DataLoader(ds, 4, max_objects=1, **LOADER), 4):
        for b, i in enumerate(batch["index"]):
            candidates = resize_masks(truth(i).masks, 16)
            assert min(np.abs(batch["masks"][b, 0].astype(int) - c).sum() for c in candidates) <= 8


def test_interpreter_exits_with_an_open_loader(data_root):
    script = (
        "from sam2_jax.training.data import SegmentationDataset\nfrom sam2_jax.training.loader import DataLoader\n"
        f"ds = SegmentationDataset.from_directory({str(data_root / 'jpg')!r})\n"
        "loader = DataLoader(ds, 2, image_size=64, mask_size=16, num_threads=2, prefetch=4)\n"
        "next(loader)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_close_stops_the_threads(dataset):
    before = set(threading.enumerate())
    loader = DataLoader(dataset, 2, num_threads=3, prefetch=3, **LOADER)
    next(loader)
    started = [t for t in threading.enumerate() if t not in before and t.name.startswith("grain")]
    assert started  # grain's prefetch threads
    loader.close()
    loader.close()
    for t in started:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in started)
    with pytest.raises(RuntimeError, match="closed"):
        next(loader)


def test_worker_processes_give_the_same_batches_and_resume(dataset):
    """Two grain worker processes (``mp_prefetch``): the batches of the threaded loader; their state (every
    worker's position) resumes exactly."""
    kwargs = dict(batch_size=3, max_objects=2, seed=11, **LOADER)
    threads = take(DataLoader(dataset, **kwargs), 6)
    with DataLoader(dataset, worker_count=2, **kwargs) as workers:
        first = [next(workers) for _ in range(3)]
        state = json.loads(json.dumps(workers.state()))
    assert state["iterator"] != {"next_index": 3}  # a multiprocess state, not the threaded one
    rest = take(DataLoader(dataset, worker_count=2, state=state, **kwargs), 3)
    assert_batches_equal(threads, first + rest)


def test_grain_wraps_the_video_clip_source(tmp_path):
    """``grain.MapDataset.source(VideoClipSource)``: random access, the source's clips, shuffled by grain."""
    import grain

    from sam2_jax.training.video_data import VideoDataset
    from sam2_jax.training.video_sampling import VideoClipSource

    for name in ("a", "b"):
        (tmp_path / "JPEGImages" / name).mkdir(parents=True)
        (tmp_path / "Annotations" / name).mkdir(parents=True)
        for t in range(5):
            Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(
                tmp_path / "JPEGImages" / name / f"{t:05d}.jpg"
            )
            label = np.zeros((24, 32), np.uint8)
            label[4 : 10 + t, 5:20] = 1
            Image.fromarray(label).save(tmp_path / "Annotations" / name / f"{t:05d}.png")
    src = VideoClipSource(VideoDataset.from_davis(tmp_path), num_frames=3, max_num_objects=1, seed=2)
    ds = grain.MapDataset.source(src)
    assert len(ds) == len(src) == 2
    clip = ds[1]
    np.testing.assert_array_equal(clip.frames, src[1].frames)
    assert clip.frames.shape == (3, 24, 32, 3) and clip.masks.shape[:2] == (3, 1)
    shuffled = [c.frames[0, 0, 0, 0] for c in ds.shuffle(seed=0).to_iter_dataset()]
    assert sorted(shuffled) == sorted(c.frames[0, 0, 0, 0] for c in (src[0], src[1]))


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_image_without_masks_is_a_counted_skip(data_root, tmp_path):
    root = small_copy(data_root, tmp_path)
    (root / "masks" / "shape_0001.png").unlink()
    ds = SegmentationDataset.from_directory(root)
    assert ds.names == ["shape_0000", "shape_0002"]
    assert ds.skipped == [(str(root / "images" / "shape_0001.png"), "no masks")]
    assert "1 no masks" in ds.report()


def test_mask_size_differs_is_an_error(data_root, tmp_path):
    root = small_copy(data_root, tmp_path, "per_object")
    bad = root / "masks" / "shape_0001" / "1.png"
    Image.new("L", (SIZE[1] + 1, SIZE[0])).save(bad)
    with pytest.raises(ValueError, match=str(bad)):
        SegmentationDataset.from_directory(root)


def test_empty_masks(data_root, tmp_path):
    root = small_copy(data_root, tmp_path, "per_object")
    empty = root / "masks" / "shape_0000" / "9.png"
    Image.new("L", (SIZE[1], SIZE[0])).save(empty)
    label = small_copy(data_root, tmp_path / "b")
    Image.new("L", (SIZE[1], SIZE[0])).save(label / "masks" / "shape_0001.png")
    ds = SegmentationDataset.from_directory(root)
    assert len(ds) == 3 and ds.skipped == [(str(empty), "empty mask")]
    np.testing.assert_array_equal(ds[0].masks, truth(0).masks)
    lazy = SegmentationDataset.from_directory(root, check_empty=False)
    assert lazy.skipped == []
    np.testing.assert_array_equal(lazy[0].masks, truth(0).masks)
    assert lazy.skipped == [(str(empty), "empty mask")]  # counted once read
    ds = SegmentationDataset.from_directory(label)
    assert ds.names == ["shape_0000", "shape_0002"]
    assert ds.skipped == [(str(label / "images" / "shape_0001.png"), "no objects")]
    lazy = SegmentationDataset.from_directory(label, check_empty=False)
    assert len(lazy) == 3 and lazy.skipped == []
    assert lazy[1].masks.shape == (0, *SIZE)
    (batch,) = take(DataLoader(lazy, 3, shuffle=False, **LOADER), 1)
    assert batch["valid"].sum(1)[1] == 0 and lazy.skipped == ds.skipped


def test_structural_errors(data_root, tmp_path):
    root = small_copy(data_root, tmp_path)
    shutil.copy(root / "masks" / "shape_0000.png", root / "masks" / "orphan.png")
    with pytest.raises(ValueError, match="orphan.png: masks for an unknown image"):
        SegmentationDataset.from_directory(root)
    (root / "masks" / "orphan.png").unlink()
    Image.new("RGB", (SIZE[1], SIZE[0])).save(root / "masks" / "shape_0001.png")
    with pytest.raises(ValueError, match="shape_0001.png: a label image must be single-channel"):
        SegmentationDataset.from_directory(root)
    with pytest.raises(ValueError, match="no images"):
        SegmentationDataset.from_directory(tmp_path / "nothing")


def test_exif_orientation(tmp_path):
    root = tmp_path / "exif"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stored = np.zeros((20, 30, 3), np.uint8)  # stored 20 x 30, shown 30 x 20 (orientation 6: rotate 90 cw)
    stored[:5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "images" / "a.png", exif=exif)
    upright = np.zeros((30, 20), np.uint8)
    upright[:, -5:] = 1
    Image.fromarray(upright).save(root / "masks" / "a.png")
    ex = SegmentationDataset.from_directory(root)[0]
    assert ex.image.shape == (30, 20, 3) and (ex.image[..., 0] > 0).tolist() == ex.masks[0].tolist()
    Image.fromarray(upright.T.copy()).save(root / "masks" / "a.png")  # the stored (unrotated) size
    with pytest.raises(ValueError, match="differs"):
        SegmentationDataset.from_directory(root)


def coco_copy(data_root, tmp_path):
    data = json.loads((data_root / "label" / COCO_FILE).read_text())
    return data, tmp_path / "ann.json", data_root / "label" / "images"


def test_coco_bad_input(data_root, tmp_path):
    data, path, images = coco_copy(data_root, tmp_path)

    def load(d, **kw):
        path.write_text(json.dumps(d))
        return SegmentationDataset.from_coco(path, images, **kw)

    bad = json.loads(json.dumps(data))
    bad["annotations"][2]["image_id"] = 999
    with pytest.raises(ValueError, match=rf"{path}: annotation 3 refers to unknown image id 999"):
        load(bad)
    bad = json.loads(json.dumps(data))
    bad["images"][1]["file_name"] = "missing.png"
    with pytest.raises(ValueError, match="missing.png"):
        load(bad)
    bad = json.loads(json.dumps(data))
    bad["images"][0]["width"] += 2
    with pytest.raises(ValueError, match="shape_0000.png"):
        load(bad)
    bad = json.loads(json.dumps(data))
    rle = next(a for a in bad["annotations"] if isinstance(a["segmentation"], dict))
    rle["segmentation"]["size"] = [5, 5]
    with pytest.raises(ValueError, match=f"annotation {rle['id']}: RLE size"):
        load(bad)
    with pytest.raises(ValueError, match="cannot read"):
        SegmentationDataset.from_coco(tmp_path / "none.json", images)

    skips = json.loads(json.dumps(data))
    anns = [a for a in skips["annotations"] if a["image_id"] == 1]
    anns[0]["iscrowd"] = 1
    for a in anns[1:]:
        a["segmentation"] = [[1, 1, 2, 2]]  # fewer than 3 points: empty
    ds = load(skips)
    assert len(ds) == N - 1 and "shape_0000.png" not in ds.names
    reasons = sorted(r for _, r in ds.skipped)
    assert reasons == sorted(["crowd annotation"] + ["empty mask"] * (len(anns) - 1) + ["no objects"])
    assert "1 crowd annotation" in ds.report()
    crowd = load(skips, include_crowd=True)
    assert crowd.names[0] == "shape_0000.png" and len(crowd[0].masks) == 1
