"""``Sam2AutomaticMaskGenerator`` against the official ``SAM2AutomaticMaskGenerator``, and end to end on the truck.

Three kinds of check:

* ``stub``: both generators decode through the same synthetic decoder (smooth, point-dependent discs plus a
  fixed noise field, in float32), so everything after the network (grid, crops, upsampling, thresholds,
  stability, NMS, edge filtering, uncropping, RLE, m2m, hole and sprinkle removal) is compared record for
  record, with no model cost.
* ``official``: the randomised official tiny model and its ``.pt`` converted by our front end, on real pixels.
* ``truck``: the real-size photograph through the 256-px test model: record invariants, output modes, crops,
  m2m, small-region removal, NMS against torchvision, and the ``mask-generation`` pipeline call.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from conftest import TRUCK_JPG, rel_l2
from PIL import Image

from sam2_jax.frontends.image import mask_records as records
from sam2_jax.frontends.image.automatic_mask_generator import Sam2AutomaticMaskGenerator
from sam2_jax.frontends.image.image_predictor import ImageEmbedding
from sam2_jax.frontends.image.mask_survivors import Survivors
from sam2_jax.processing import boxes as box_ops
from sam2_jax.processing import crops, prompts, rle

RECORD_KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}

# ---- a synthetic decoder shared by both generators ------------------------------------------------------------

LOW, SIZE = 256, 1024  # low-res logits side, model input side (the official transforms scale points to SIZE)
NOISE = np.random.default_rng(123).standard_normal((LOW, LOW)).astype(np.float32)


def synth_decoder(points, mask_input, multimask):
    """(n, 2) points in the model frame -> logits (n, M, LOW, LOW), scores (n, M); M = 3 or 1.

    Discs of three radii (wobbling with the point) around the point, plus a fixed noise field that leaves
    holes and sprinkles near the edges; with a mask input, a sharpened copy of it (the m2m step). The points are
    rounded to 1/1000 px first: our scaling to the model frame is transformers' x * float32(S / W), the
    official's x / W * S, which can differ in the last bit."""
    pts = np.round(np.asarray(points, np.float32), 3)
    c = (np.arange(LOW, dtype=np.float32) + 0.5) * np.float32(SIZE / LOW)
    px, py = pts[:, 0, None, None], pts[:, 1, None, None]
    dist = np.sqrt((c[None, None, :] - px) ** 2 + (c[None, :, None] - py) ** 2)
    wobble = 1 + 0.5 * np.sin(px / 97 + py / 61)
    radii = np.array([60, 150, 400], np.float32)
    logits = (radii[None, :, None, None] * wobble[:, None] - dist[:, None]) / 16 + 0.7 * NOISE
    scores = 0.5 + 0.45 * np.sin(pts[:, 0, None] * 0.013 + pts[:, 1, None] * 0.007 + np.arange(3))
    if mask_input is not None:
        logits = 0.9 * mask_input[:, None] + 1.0 + 0.7 * NOISE
        scores = scores + 0.01 * mask_input.mean(axis=(-1, -2))[:, None] / 32
    if not multimask:
        logits, scores = logits[:, :1], scores[:, :1]
    return logits.astype(np.float32), scores.astype(np.float32)


class StubPredictor:
    """Stands in for ``Sam2ImagePredictor``: no encoder, ``synth_decoder`` as the decoder."""

    image_size = SIZE

    def __init__(self):
        self.batches = self.split_batches = 0
        self.encoder_calls = []  # images per encoder call

    def embed_images(self, images):
        self.encoder_calls.append(len(images))
        return [ImageEmbedding((), (im.shape[:2],)) for im in images]

    def predict_batched(self, points, labels, boxes=None, mask_input=None, *, multimask_output, embedding, pad_to):
        self.batches += mask_input is None
        assert boxes is None and labels.shape == (len(points), 1) and np.all(labels == 1)
        assert len(points) <= pad_to
        pts = prompts.to_model_frame(points[:, 0], embedding.original_sizes[0], SIZE)
        return synth_decoder(pts, None if mask_input is None else mask_input[:, 0], multimask_output)

    def predict_survivors(self, points, *, embedding, iou_thresh, pad_to, stats=None):
        """The split path's contract from the same synthetic decoder: the masks above ``iou_thresh``, in flat
        order, with the host's stability scores and boxes when asked for."""
        assert points.shape == (len(points), 2) and len(points) <= pad_to
        self.batches += 1
        self.split_batches += 1
        size = embedding.original_sizes[0]
        logits, scores = synth_decoder(prompts.to_model_frame(points, size, SIZE), None, True)
        index = np.nonzero(scores.reshape(-1) > iou_thresh)[0]
        logits = logits.reshape(-1, LOW, LOW)[index]
        stability, boxes = records.stats(logits, size, *stats) if stats is not None else (None, None)
        return Survivors(scores, index, logits, stability, boxes)


def official_stub_generator(**kwargs):
    """The official generator with its predictor's network replaced by ``synth_decoder``: ``_predict`` keeps
    the official post-processing (hole filling, upsampling, clamping), only the model call is swapped."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    class FakeModel:
        image_size = SIZE
        device = torch.device("cpu")

    gen = SAM2AutomaticMaskGenerator(FakeModel(), **kwargs)
    pred = gen.predictor

    def set_image(image):
        pred._orig_hw = [image.shape[:2]]
        pred._is_image_set = True

    def _predict(point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True, **_):
        low, iou = synth_decoder(
            point_coords[:, 0].numpy(), None if mask_input is None else mask_input[:, 0].numpy(), multimask_output
        )
        low = torch.from_numpy(low)
        masks = pred._transforms.postprocess_masks(low, pred._orig_hw[-1])
        return masks, torch.from_numpy(iou), torch.clamp(low, -32.0, 32.0)

    pred.set_image, pred._predict = set_image, _predict
    return gen


@pytest.fixture
def scipy_components(monkeypatch):
    """The official hole filling needs its CUDA kernel; give it SciPy's 8-connected components instead."""
    import sam2.utils.misc
    from scipy import ndimage

    def get_connected_components(mask):
        m = mask.numpy().astype(bool)
        labels = np.zeros(m.shape, np.int32)
        areas = np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            lab, n = ndimage.label(m[i, 0], structure=np.ones((3, 3), int))
            labels[i, 0] = lab
            areas[i, 0] = np.where(lab > 0, np.bincount(lab.ravel(), minlength=n + 1)[lab], 0)
        return torch.from_numpy(labels), torch.from_numpy(areas)

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", get_connected_components)


STUB_CASES = {
    "plain": ((300, 450), dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6)),
    "crops1": ((300, 450), dict(points_per_side=6, pred_iou_thresh=0.5, stability_score_thresh=0.6, crop_n_layers=1)),
    "crops2_portrait": (
        (250, 150),
        dict(
            points_per_side=6,
            pred_iou_thresh=0.3,
            stability_score_thresh=0.5,
            crop_n_layers=2,
            crop_n_points_downscale_factor=2,
            crop_overlap_ratio=0.25,
        ),
    ),
    "m2m": ((200, 300), dict(points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.5, use_m2m=True)),
    "single_mask_odd_batch": (
        (200, 300),
        dict(
            points_per_side=6,
            pred_iou_thresh=0.3,
            stability_score_thresh=0.5,
            multimask_output=False,
            points_per_batch=7,
        ),
    ),
    "small_regions": (
        (250, 350),
        dict(points_per_side=4, pred_iou_thresh=0.3, stability_score_thresh=0.5, min_mask_region_area=40),
    ),
    "offset_threshold_nms": (
        (240, 320),
        dict(points_per_side=5, mask_threshold=1.5, stability_score_offset=0.5, box_nms_thresh=0.5, crop_n_layers=1),
    ),
}


@pytest.mark.parametrize("case", sorted(STUB_CASES))
def test_stub_decoder_matches_official(case, scipy_components):
    """Same decoder outputs in, the official records out: equal in number and order, every field exactly equal,
    masks pixel for pixel. (Our upsampling is matrix products, torch's a gather: they agree to float32 rounding,
    and no pixel of these logits lies that close to a threshold.)"""
    hw, kwargs = STUB_CASES[case]
    image = np.zeros((*hw, 3), np.uint8)
    ref = official_stub_generator(**kwargs).generate(image)
    stub = StubPredictor()
    gen = Sam2AutomaticMaskGenerator(predictor=stub, crop_batch=4, **kwargs)
    ours = gen.generate(image)
    assert stub.split_batches == (stub.batches if gen._split() else 0)  # scores first, masks where one passes
    layers = kwargs.get("crop_n_layers", 0)
    assert stub.encoder_calls == [1] + [4] * sum(4**k // 4 for k in range(1, layers + 1))  # crop_batch 4
    assert len(ref) > 1, "the case should keep several masks"
    assert len(ours) == len(ref)
    for a, b in zip(ref, ours, strict=True):
        assert set(b) == RECORD_KEYS
        for key in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            assert b[key] == a[key], key
        np.testing.assert_array_equal(b["segmentation"], a["segmentation"])
    if kwargs.get("crop_n_layers"):
        assert len({tuple(r["crop_box"]) for r in ours}) > 1, "masks from several crops survive"


def test_stub_small_region_postprocessing_matches_official(monkeypatch):
    """``postprocess_small_regions`` (SAM 1's clean-up of finished masks) against the official static method,
    whose OpenCV connected components (not installed) are SciPy's here."""
    import sys
    import types

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils.amg import MaskData
    from scipy import ndimage

    def cc_with_stats(image, connectivity):
        labels, n = ndimage.label(image, structure=np.ones((3, 3), int))
        stats = np.zeros((n + 1, 5), np.int32)
        stats[:, -1] = np.bincount(labels.ravel(), minlength=n + 1)
        return n + 1, labels, stats, None

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(connectedComponentsWithStats=cc_with_stats))
    gen = Sam2AutomaticMaskGenerator(
        predictor=StubPredictor(), points_per_side=6, pred_iou_thresh=0.3, stability_score_thresh=0.0
    )
    data = gen._generate_masks(np.zeros((300, 400, 3), np.uint8), progress=False)
    ref_data = MaskData(
        rles=list(data["rles"]),
        boxes=torch.from_numpy(data["boxes"]),
        iou_preds=torch.from_numpy(data["iou_preds"]),
        points=torch.from_numpy(data["points"]),
    )
    ref = SAM2AutomaticMaskGenerator.postprocess_small_regions(ref_data, 200, 0.3)
    ours = Sam2AutomaticMaskGenerator.postprocess_small_regions(data, 200, 0.3)
    assert 1 < len(ours["rles"]) < len(data["rles"])
    assert ours["rles"] == ref["rles"]
    np.testing.assert_array_equal(ours["boxes"], ref["boxes"].numpy())
    np.testing.assert_array_equal(ours["iou_preds"], ref["iou_preds"].numpy())


# ---- the official generator with the real (randomised) tiny model --------------------------------------------


def _mask_iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def _match_by_point(ref, ours):
    """Pair every official record with ours from the same grid point and the most overlapping mask."""
    by_point = defaultdict(list)
    for i, r in enumerate(ours):
        by_point[tuple(r["point_coords"][0])].append(i)
    pairs, used = [], set()
    for a in ref:
        cands = [i for i in by_point[tuple(a["point_coords"][0])] if i not in used]
        assert cands, f"no mask of ours at point {a['point_coords']}"
        best = max(cands, key=lambda i: _mask_iou(a["segmentation"], ours[i]["segmentation"]))
        used.add(best)
        pairs.append((a, ours[best]))
    return pairs


@pytest.fixture(scope="module")
def official_pair(official_tiny, official_converted):
    import sam2_jax
    from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor

    model, params = sam2_jax.load(official_converted)
    return official_tiny[0], Sam2ImagePredictor(model, params), official_tiny[2]


def test_matches_official_generator(official_pair):
    """The randomised official tiny model and its converted ``.pt`` on the same 1024 x 1024 image (no resize, so
    both see the same pixels), thresholds and box NMS off (IoU > 1 never holds) so that all 3 x 3 x 3 masks are
    compared: the same records (matched by point and mask), predicted IoUs within 1e-4, stability within 1e-3,
    areas within 0.1 %, masks with IoU >= 0.999 (only pixels at the threshold may flip)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    model_pt, predictor, image = official_pair
    kwargs = dict(points_per_side=3, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    kwargs["box_nms_thresh"] = 1.0
    ref = SAM2AutomaticMaskGenerator(model_pt, **kwargs).generate(image)
    ours = Sam2AutomaticMaskGenerator(predictor=predictor, **kwargs).generate(image)
    assert len(ours) == len(ref) == 27
    pairs = _match_by_point(ref, ours)
    d_iou = max(abs(a["predicted_iou"] - b["predicted_iou"]) for a, b in pairs)
    d_stab = max(abs(a["stability_score"] - b["stability_score"]) for a, b in pairs)
    min_iou = min(_mask_iou(a["segmentation"], b["segmentation"]) for a, b in pairs)
    d_area = max(abs(a["area"] - b["area"]) / max(a["area"], 1) for a, b in pairs)
    print(f"[parity] official generator: {len(pairs)} masks, |dIoU| {d_iou:.1e}, |dstab| {d_stab:.1e}, ", end="")
    print(f"mask IoU >= {min_iou:.6f}, |darea| <= {d_area:.1e}")
    assert d_iou <= 1e-4 and d_stab <= 1e-3 and min_iou >= 0.999 and d_area <= 1e-3
    for a, b in pairs:
        assert b["crop_box"] == a["crop_box"]
        assert np.allclose(b["bbox"], a["bbox"], atol=2)


# ---- end to end on the real-size photograph ---------------------------------------------------------------


@pytest.fixture(scope="module")
def truck():
    return np.asarray(Image.open(TRUCK_JPG).convert("RGB"))  # 1800 x 1200


@pytest.fixture(scope="module")
def truck_small(truck):
    return np.asarray(Image.fromarray(truck).resize((600, 400), Image.BILINEAR))


@pytest.fixture(scope="module")
def small_predictor(small_ref):
    from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor

    return Sam2ImagePredictor(small_ref.model, small_ref.params)


def _generator(predictor, **kwargs):
    base = dict(points_per_side=6, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return Sam2AutomaticMaskGenerator(predictor=predictor, **{**base, **kwargs})


def check_records(records, image_hw, pred_iou_thresh=-np.inf, stability_score_thresh=-np.inf):
    """Invariants every record must satisfy, recomputed from its own mask."""
    h, w = image_hw
    crop_boxes = box_ops.box_xyxy_to_xywh(np.array(crops.generate_crop_boxes(image_hw, 2, 512 / 1500)[0]))
    crop_boxes = {tuple(b) for b in crop_boxes.astype(float).tolist()}
    for r in records:
        assert set(r) == RECORD_KEYS
        seg = r["segmentation"]
        assert seg.shape == (h, w) and seg.dtype == bool
        assert r["area"] == int(seg.sum())
        ys, xs = np.nonzero(seg)
        if len(xs):  # tight box, inclusive corners, [x, y, x1 - x0, y1 - y0] like the official
            assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        else:
            assert r["bbox"] == [0, 0, 0, 0]
        cx, cy, cw, ch = r["crop_box"]
        ((px, py),) = r["point_coords"]
        assert cx <= px <= cx + cw and cy <= py <= cy + ch
        assert r["predicted_iou"] > pred_iou_thresh
        assert not r["stability_score"] < stability_score_thresh
        assert tuple(r["crop_box"]) in crop_boxes
        assert all(isinstance(v, float) for v in r["bbox"] + r["crop_box"] + r["point_coords"][0])


def test_truck_pipeline_call(small_predictor, truck, truck_small):
    """The docs' ``generator(image, points_per_batch=64)`` on the 1800 x 1200 photo, given by path: the masks,
    scores, boxes and RLEs of ``generate``'s records, in its order."""
    records = _generator(small_predictor, points_per_side=3, points_per_batch=64, box_nms_thresh=1.0).generate(truck)
    gen = _generator(small_predictor, points_per_side=3, box_nms_thresh=1.0)
    out = gen(TRUCK_JPG, points_per_batch=64, output_bboxes_mask=True, output_rle_mask=True)
    assert gen.points_per_batch == 16  # the call's batch size does not stick
    assert len(records) == len(out["masks"]) == len(out["scores"]) == len(out["rle_mask"]) == 9 * 3
    check_records(records, (1200, 1800))
    assert isinstance(out["masks"], list) and out["scores"].dtype == np.float32
    for r, m, s, b, run in zip(
        records, out["masks"], out["scores"], out["bounding_boxes"], out["rle_mask"], strict=True
    ):
        np.testing.assert_array_equal(m, r["segmentation"])
        assert float(s) == r["predicted_iou"]
        np.testing.assert_array_equal(b, box_ops.batched_mask_to_box(m))  # xyxy, inclusive
        assert box_ops.box_xyxy_to_xywh(b).tolist() == r["bbox"]
        np.testing.assert_array_equal(rle.rle_to_mask(run), m)
    assert len({m.tobytes() for m in out["masks"]}) > 10, "the masks differ from one another"
    small = gen(Image.fromarray(truck_small).convert("RGBA"))  # a PIL image (any mode) works too
    assert set(small) == {"masks", "scores"}  # extras only on request
    assert small["masks"][0].shape == (400, 600)


def test_batch_size_changes_only_float_noise(small_predictor, truck_small):
    """Decoding the grid 16 or 64 points at a time (padded batches) gives the same records up to float noise:
    the decoder's batch size changes its float32 rounding (~1e-6), which can flip a pixel at the threshold."""
    a = _generator(small_predictor, box_nms_thresh=1.0).generate(truck_small)
    b = _generator(small_predictor, points_per_batch=64, box_nms_thresh=1.0).generate(truck_small)
    assert len(a) == len(b) == 36 * 3
    for x, y in _match_by_point(a, b):
        assert abs(x["predicted_iou"] - y["predicted_iou"]) <= 1e-5
        assert _mask_iou(x["segmentation"], y["segmentation"]) >= 0.999


def test_decode_threads_give_the_same_records_in_order(small_predictor, truck_small):
    """Five batches decoded one after the other or three at a time in threads: the same records, in the same
    order, bit for bit (each batch is the same compiled call on the same inputs)."""
    serial = _generator(small_predictor, points_per_batch=8, decode_threads=1, box_nms_thresh=1.0)
    threaded = _generator(small_predictor, points_per_batch=8, decode_threads=3, box_nms_thresh=1.0)
    assert serial.decode_threads == 1 and threaded.decode_threads == 3
    a, b = serial.generate(truck_small), threaded.generate(truck_small)
    assert len(a) == len(b) == 36 * 3  # 36 points in batches of 8: five batches
    for x, y in zip(a, b, strict=True):
        assert x["point_coords"] == y["point_coords"] and x["predicted_iou"] == y["predicted_iou"]
        assert x["stability_score"] == y["stability_score"] and x["bbox"] == y["bbox"]
        np.testing.assert_array_equal(x["segmentation"], y["segmentation"])
    with pytest.raises(ValueError, match="decode_threads"):
        _generator(small_predictor, decode_threads=0)


def test_truck_box_nms_matches_torchvision(small_predictor, truck_small):
    """With box NMS the kept records are exactly torchvision's ``nms`` over the records kept without it."""
    from torchvision.ops import nms

    every = _generator(small_predictor, box_nms_thresh=1.0, min_mask_region_area=3).generate(truck_small)
    kept = _generator(small_predictor, box_nms_thresh=0.7, min_mask_region_area=3).generate(truck_small)
    boxes = torch.tensor([r["bbox"] for r in every])
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.tensor([r["predicted_iou"] for r in every])
    expected = nms(boxes, scores, 0.7).tolist()
    assert 0 < len(kept) < len(every)
    assert [r["point_coords"] for r in kept] == [every[i]["point_coords"] for i in expected]
    assert [r["area"] for r in kept] == [every[i]["area"] for i in expected]
    check_records(kept, truck_small.shape[:2])


def test_truck_output_modes_round_trip(small_predictor, truck_small):
    runs = {
        mode: _generator(small_predictor, points_per_side=4, output_mode=mode).generate(truck_small)
        for mode in ("binary_mask", "uncompressed_rle", "coco_rle")
    }
    binary = runs["binary_mask"]
    check_records(binary, truck_small.shape[:2])
    assert len(runs["uncompressed_rle"]) == len(runs["coco_rle"]) == len(binary) > 0
    for b, u, c in zip(binary, runs["uncompressed_rle"], runs["coco_rle"], strict=True):
        rest = {k: v for k, v in b.items() if k != "segmentation"}
        assert {k: v for k, v in u.items() if k != "segmentation"} == rest
        assert {k: v for k, v in c.items() if k != "segmentation"} == rest
        assert u["segmentation"]["size"] == c["segmentation"]["size"] == [400, 600]
        assert isinstance(c["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rle.rle_to_mask(u["segmentation"]), b["segmentation"])
        np.testing.assert_array_equal(rle.rle_to_mask(c["segmentation"]), b["segmentation"])


def test_truck_crops_m2m_small_regions(small_predictor, truck_small, monkeypatch):
    """Crop layer 1, m2m and small-region removal on the real model. Its random masks are speckle over the whole
    crop, so the layer-1 crops' masks all touch an inner crop edge and are dropped; which crops were embedded,
    and the edge rule for whatever survives, are checked here; the stub tests compare surviving crop masks."""
    hw = truck_small.shape[:2]
    seen, calls = [], []
    embed_image, embed_images = small_predictor.embed_image, small_predictor.embed_images

    def several(ims):
        seen.extend(im.copy() for im in ims)
        calls.append(len(ims))
        return embed_images(ims)

    monkeypatch.setattr(small_predictor, "embed_images", several)
    gen = _generator(small_predictor, crop_n_layers=1, box_nms_thresh=1.0, crop_nms_thresh=1.0, crop_batch=4)
    cropped = gen.generate(truck_small)
    gen.crop_batch = 1
    one_by_one = gen.generate(truck_small)
    monkeypatch.undo()
    boxes, _ = crops.generate_crop_boxes(hw, 1, 512 / 1500)
    assert calls == [1, 4] + [1] * 5  # the four layer-1 crops in one encoder call, then one by one
    seen = seen[:5]
    for batched, crop in zip(embed_images(seen[1:]), seen[1:], strict=True):  # a batch equals one at a time
        single = embed_image(crop)
        assert batched.original_sizes == single.original_sizes == (crop.shape[:2],)
        for fb, fs in zip(batched.features, single.features, strict=True):
            assert fb.shape == fs.shape and rel_l2(fb, fs) < 1e-5
    assert len(one_by_one) == len(cropped)
    for a, b in zip(cropped, one_by_one, strict=True):  # the same records up to the batched encoder's rounding
        assert a["crop_box"] == b["crop_box"] and a["point_coords"] == b["point_coords"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
    for im, (x0, y0, x1, y1) in zip(seen, boxes, strict=True):
        np.testing.assert_array_equal(im, truck_small[y0:y1, x0:x1])
    check_records(cropped, hw)
    for r in cropped:  # no surviving box lies within 20 px of a crop edge that is inside the image
        x, y, bw, bh = r["bbox"]
        cx, cy, cw, ch = r["crop_box"]
        for edge, crop_edge, image_edge in ((x, cx, 0), (y, cy, 0), (x + bw, cx + cw, 600), (y + bh, cy + ch, 400)):
            assert abs(edge - crop_edge) > 20 or abs(edge - image_edge) <= 20

    def by_point(records):
        return sorted(records, key=lambda r: (r["point_coords"], r["predicted_iou"]))

    # thresholds and NMS off: every grid point keeps its 3 masks, refined or cleaned
    plain = by_point(_generator(small_predictor, box_nms_thresh=1.0).generate(truck_small))
    m2m = by_point(_generator(small_predictor, box_nms_thresh=1.0, use_m2m=True).generate(truck_small))
    check_records(m2m, hw)
    assert [r["point_coords"] for r in m2m] == [r["point_coords"] for r in plain] and len(plain) == 36 * 3
    assert sorted(r["predicted_iou"] for r in m2m) != sorted(r["predicted_iou"] for r in plain)

    cleaned = by_point(_generator(small_predictor, box_nms_thresh=1.0, min_mask_region_area=25).generate(truck_small))
    check_records(cleaned, hw)
    assert [r["predicted_iou"] for r in cleaned] == [r["predicted_iou"] for r in plain]
    changed = [not np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(cleaned, plain, strict=True)]
    assert any(changed)


def test_argument_errors(small_predictor):
    with pytest.raises(ValueError, match="Exactly one"):
        Sam2AutomaticMaskGenerator(predictor=small_predictor, points_per_side=None)
    with pytest.raises(ValueError, match="Exactly one"):
        Sam2AutomaticMaskGenerator(predictor=small_predictor, point_grids=[crops.build_point_grid(2)])
    with pytest.raises(ValueError, match="output_mode"):
        Sam2AutomaticMaskGenerator(predictor=small_predictor, output_mode="png")
    with pytest.raises(ValueError, match="point grids"):
        Sam2AutomaticMaskGenerator(
            predictor=small_predictor, points_per_side=None, point_grids=[crops.build_point_grid(2)], crop_n_layers=1
        )
    with pytest.raises(ValueError, match="either model and params, or a predictor"):
        Sam2AutomaticMaskGenerator()
    with pytest.raises(ValueError, match="crop_batch must be at least 1"):
        Sam2AutomaticMaskGenerator(predictor=small_predictor, crop_batch=0)
    gen = _generator(small_predictor)
    with pytest.raises(ValueError, match="RGB"):
        gen.generate(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="points_per_batch"):
        gen(np.zeros((10, 10, 3), np.uint8), points_per_batch=0)


def test_explicit_point_grids_equal_points_per_side():
    kwargs = dict(pred_iou_thresh=0.3, stability_score_thresh=0.5, crop_n_layers=1)
    image = np.zeros((300, 450, 3), np.uint8)  # crop sizes of the "crops1" case: compiled already
    a = Sam2AutomaticMaskGenerator(predictor=StubPredictor(), points_per_side=4, **kwargs).generate(image)
    grids = crops.build_all_layer_point_grids(4, 1, 1)
    b = Sam2AutomaticMaskGenerator(
        predictor=StubPredictor(), points_per_side=None, point_grids=[g.tolist() for g in grids], **kwargs
    ).generate(image)
    assert len(a) == len(b) > 0
    assert all(x["point_coords"] == y["point_coords"] and x["area"] == y["area"] for x, y in zip(a, b, strict=True))


def test_each_batch_is_padded_once_to_points_per_batch(small_predictor, truck_small, monkeypatch):
    """points_per_batch=100 decodes batches of 100 rows (the last one padded to 100 once), not a bigger bucket."""
    rows = []
    real = small_predictor._decode

    def spy(*args, **kwargs):
        rows.append(kwargs["points"].shape[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(small_predictor, "_decode", spy)
    _generator(small_predictor, points_per_side=12, points_per_batch=100).generate(truck_small)  # 144 points
    assert rows == [100, 100]


def test_two_threads_share_a_generator(small_predictor, truck_small):
    """Two threads calling one generator (and its predictor) with different points_per_batch get what
    sequential calls get."""
    import threading

    gen = _generator(small_predictor, points_per_side=4)
    image = np.asarray(Image.fromarray(truck_small).resize((350, 250)))
    sequential = {n: gen(image, points_per_batch=n) for n in (3, 7)}
    results, errors = {}, []

    def run(n):
        try:
            for _ in range(3):
                results.setdefault(n, []).append(gen(image, points_per_batch=n))
        except BaseException as e:  # re-raised below, on the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in (3, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert gen.points_per_batch == 16
    for n, outs in results.items():
        for out in outs:
            assert len(out["masks"]) == len(sequential[n]["masks"]) > 0
            np.testing.assert_array_equal(out["scores"], sequential[n]["scores"])
            for a, b in zip(out["masks"], sequential[n]["masks"], strict=True):
                np.testing.assert_array_equal(a, b)


# ---- split decoding: masks only where a score passes ----------------------------------------------------------


def _grid_scores(predictor, image, side):
    """Every grid point's three predicted IoUs, (side**2, 3)."""
    h, w = image.shape[:2]
    points = (crops.build_point_grid(side) * np.array([w, h])).astype(np.float32)
    emb = predictor.embed_image(image)
    return predictor.predict_batched(points[:, None], np.ones((len(points), 1), np.int32), embedding=emb)[1]


def _unsplit(gen, monkeypatch):
    """``gen`` decoding every mask of every batch (the path taken without a score threshold)."""
    monkeypatch.setattr(gen, "_split", lambda: False)
    return gen


def _gap_threshold(values, q=0.5):
    """A threshold near the q-quantile of ``values``, in the middle of the widest gap among the neighbouring
    values, so that float32 rounding cannot move a value across it."""
    v = np.sort(np.asarray(values)[np.isfinite(values)])
    i = int(q * len(v))
    j = max(range(max(1, i - 5), min(len(v), i + 6)), key=lambda k: v[k] - v[k - 1])
    assert v[j] - v[j - 1] > 1e-5
    return float((v[j] + v[j - 1]) / 2)


@pytest.mark.parametrize("implementation", ["auto", "reference"])
def test_split_decoding_matches_unsplit(small_ref, truck_small, monkeypatch, implementation):
    """Masks made only for points with a score above pred_iou_thresh, stability and boxes on the device
    (``predict_survivors``): the records of decoding every mask, up to float32 rounding (the scores come from a
    final attention over fewer tokens). The threshold lies near the median of the points' best scores, so some
    points of a batch keep masks and others do not, in full batches of 16 and a padded one of 4 ("auto" on CPU
    decides per point, "reference" per batch). Also with hole filling (stability and boxes then on the host,
    after the filling), a stability threshold and crops."""
    from sam2_jax import Sam2Model
    from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor

    predictor = Sam2ImagePredictor(Sam2Model(small_ref.config, implementation=implementation), small_ref.params)
    best = _grid_scores(predictor, truck_small, 6).max(axis=1)
    thresh = _gap_threshold(best)
    assert 5 < (best > thresh).sum() < 31
    kept = _generator(predictor, pred_iou_thresh=thresh, box_nms_thresh=1.0).generate(truck_small)
    stab = _gap_threshold([r["stability_score"] for r in kept])
    counts = []
    for kwargs in (
        dict(pred_iou_thresh=thresh),
        dict(pred_iou_thresh=thresh, stability_score_thresh=stab),
        dict(pred_iou_thresh=thresh, min_mask_region_area=25),
        dict(pred_iou_thresh=thresh, stability_score_thresh=stab, crop_n_layers=1, crop_nms_thresh=1.0),
    ):
        split = _generator(predictor, box_nms_thresh=1.0, **kwargs)
        assert split._split()
        ours = split.generate(truck_small)
        ref = _unsplit(_generator(predictor, box_nms_thresh=1.0, **kwargs), monkeypatch).generate(truck_small)
        assert 0 < len(ours) == len(ref)
        counts.append(len(ours))
        for a, b in zip(ref, ours, strict=True):
            assert b["point_coords"] == a["point_coords"] and b["crop_box"] == a["crop_box"]
            assert abs(b["predicted_iou"] - a["predicted_iou"]) <= 1e-6
            assert abs(b["stability_score"] - a["stability_score"]) <= 1e-4
            assert abs(b["area"] - a["area"]) <= max(2, 1e-3 * a["area"])
            assert np.allclose(b["bbox"], a["bbox"], atol=1)
            assert _mask_iou(a["segmentation"], b["segmentation"]) >= 0.999
    assert counts[1] < counts[0] == len(kept) < 36 * 3  # both thresholds dropped masks


def test_split_decoding_compiles_once(small_ref, truck_small):
    """The split batches compile once per batch size (and their stability pass once per image size), whatever
    survives: no masks, some, or every point's; a second image of the same size compiles nothing."""
    from compile_count import count_compiles, jit_compiles

    from sam2_jax.frontends.image import mask_survivors
    from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor

    predictor = Sam2ImagePredictor(small_ref.model, small_ref.params)
    image = np.asarray(Image.fromarray(truck_small).resize((470, 330)))  # a size no other test uses
    best = _grid_scores(predictor, image, 6).max(axis=1)
    stats_before = jit_compiles(mask_survivors.survivor_stats)
    kept = [len(_generator(predictor, pred_iou_thresh=t).generate(image)) for t in (float(np.median(best)), 2.0)]
    assert kept[0] > 0 and kept[1] == 0
    assert jit_compiles(predictor._survivors) == 1
    assert jit_compiles(mask_survivors.survivor_stats) == stats_before + 1
    with count_compiles() as c:
        every = _generator(predictor, pred_iou_thresh=1e-6, box_nms_thresh=1.0).generate(image[::-1].copy())
    assert c.n == 0 and len(every) == 36 * 3


def test_crops_go_through_the_encoder_one_by_one_on_cpu_by_default():
    """``default_crop_batch``: batching crops is slower on CPU (the batch's activations leave the cache), so
    the default embeds them one by one there and 4 to a call elsewhere; an explicit ``crop_batch`` wins."""
    import jax

    from sam2_jax.frontends.image.automatic_mask_generator import default_crop_batch

    assert default_crop_batch() == (1 if jax.default_backend() == "cpu" else 4)
    kwargs = dict(points_per_side=4, pred_iou_thresh=0.3, stability_score_thresh=0.5, crop_n_layers=1)
    image = np.zeros((300, 450, 3), np.uint8)  # crop sizes of the "crops1" case
    calls = {}
    for crop_batch in (None, 3):
        stub = StubPredictor()
        Sam2AutomaticMaskGenerator(predictor=stub, crop_batch=crop_batch, **kwargs).generate(image)
        calls[crop_batch] = stub.encoder_calls
    assert calls[None] == [1] + [default_crop_batch()] * (4 // default_crop_batch())
    assert calls[3] == [1, 3, 1]  # a layer's crops in groups of 3, never across layers
