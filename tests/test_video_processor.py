"""``Sam2VideoProcessor`` against transformers' ``Sam2VideoProcessor`` (no model): pixels, stored prompts, mask
post-processing, and the one-line errors of bad prompts (the session unchanged after each)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_video_predictor_transformers import read_video

from sam2_jax.processing.video.processor import Sam2VideoProcessor, resize_like_torchvision

SIZE = 256


@pytest.fixture(scope="module")
def processors():
    import transformers

    square = {"height": SIZE, "width": SIZE}
    theirs = transformers.Sam2VideoProcessor(
        image_processor=transformers.Sam2ImageProcessor(size=square),
        video_processor=transformers.Sam2VideoVideoProcessor(size=square),
    )
    return theirs, Sam2VideoProcessor(image_size=SIZE)


def test_pixels_equal_transformers(processors):
    theirs, ours = processors
    video = read_video()[:4]
    h, w = video.shape[1:3]
    ts = theirs.init_video_session(video=video, inference_device="cpu")
    expected = np.stack([ts.processed_frames[i].permute(1, 2, 0).numpy() for i in range(len(video))])
    for frames in (video, [Image.fromarray(f) for f in video]):
        s = ours.init_video_session(video=frames, inference_device="cpu", dtype=None)
        assert (s.num_frames, s.video_height, s.video_width) == (len(video), h, w)
        got = np.stack([s.frames.pixel_values(i) for i in range(len(video))])
        err = float(np.abs(got - expected).max())
        print(f"[parity] video pixels vs transformers: max abs difference {err:.1e}")
        assert err <= 1e-6
    # streamed frames: processor(images=...), on an odd size that upsamples one axis and shrinks the other
    odd = np.random.default_rng(0).integers(0, 256, (37, 301, 3), np.uint8)
    t = theirs(images=[odd, video[0]], return_tensors="pt")
    o = ours(images=[odd, video[0]])
    assert o["pixel_values"].shape == (2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(o["original_sizes"], t.original_sizes.numpy())
    assert float(np.abs(o["pixel_values"] - t.pixel_values.permute(0, 2, 3, 1).numpy()).max()) <= 1e-6
    assert resize_like_torchvision(video[0], SIZE).dtype == np.uint8


def _stored(ts, obj_id, t):
    i = ts.obj_id_to_idx(obj_id)
    p = ts.point_inputs_per_obj[i][t]
    return p["point_coords"][0, 0].numpy(), p["point_labels"][0, 0].numpy()


def test_prompts_stored_as_transformers(processors):
    theirs, ours = processors
    video = read_video()[:3]
    ts = theirs.init_video_session(video=video, inference_device="cpu")
    s = ours.init_video_session(video=video)
    calls = [
        dict(
            frame_idx=0,
            obj_ids=[2, 3],
            input_points=[[[[200, 300], [230, 250], [275, 175]], [[400, 150]]]],
            input_labels=[[[1, 1, 0], [1]]],
        ),  # fmt: skip
        dict(frame_idx=1, obj_ids=4, input_boxes=[[[100, 120, 500, 400]]]),
        dict(frame_idx=1, obj_ids=4, input_points=[[[[300, 200]]]], input_labels=[[[0]]], clear_old_inputs=False),
    ]
    for call in calls:
        theirs.add_inputs_to_inference_session(ts, **call)
        ours.add_inputs_to_inference_session(s, **call)
        assert s.obj_with_new_inputs == list(ts.obj_with_new_inputs)
    assert s.obj_ids == ts.obj_ids == [2, 3, 4]
    for obj_id, t in ((2, 0), (3, 0), (4, 1)):
        coords, labels = s.objects[s.obj_ids.index(obj_id)].points[t]
        t_coords, t_labels = _stored(ts, obj_id, t)
        np.testing.assert_array_equal(labels, t_labels)  # -10 padding of object 3, box corners 2 and 3 first
        real = labels != -10
        np.testing.assert_allclose(coords[real], t_coords[real], rtol=0, atol=1e-5)
    mask = np.zeros((video.shape[1], video.shape[2]), bool)
    mask[100:300, 200:500] = True
    ours.add_inputs_to_inference_session(s, frame_idx=2, obj_ids=5, input_masks=mask[None])
    assert s.objects[-1].masks[2].shape == (SIZE, SIZE) and 2 not in s.objects[-1].points


def test_post_process_masks_equal_transformers(processors):
    import torch

    theirs, ours = processors
    logits = np.random.default_rng(1).normal(0, 5, (3, 1, SIZE // 4, SIZE // 4)).astype(np.float32)
    t = theirs.post_process_masks([torch.from_numpy(logits)], original_sizes=[[540, 960]], binarize=False)[0].numpy()
    o = ours.post_process_masks([logits], original_sizes=[[540, 960]], binarize=False)[0]
    assert o.shape == (3, 1, 540, 960)
    assert np.linalg.norm(o - t) / np.linalg.norm(t) <= 1e-6
    b = ours.post_process_masks([logits], original_sizes=[[540, 960]])[0]
    assert b.dtype == bool and np.mean(b == (t > 0)) > 0.9999


BAD = [
    (dict(obj_ids=1, input_points=[[[200, 300]]], input_labels=[[[1]]]), "input_points.*nesting level|nests as"),
    (dict(obj_ids=1, input_points=[[[[[200, 300]]]]], input_labels=[[[1]]]), "too deep"),
    (dict(obj_ids=1, input_points=[[[[2000, 300]]]], input_labels=[[[1]]]), "outside|out of"),
    (dict(obj_ids=[1, 2], input_points=[[[[200, 300]]]], input_labels=[[[1]]]), r"object ids \(2\).*points \(1\)"),
    (dict(obj_ids=1, input_points=[[[[200, 300], [10, 10]]]], input_labels=[[[1]]]), "2 points.*1 labels"),
    (dict(obj_ids=1, input_points=[[[[200, 300]]]]), "together"),
    (dict(obj_ids=1), "at least one"),
    (dict(obj_ids=1, input_points=[[[[200, 300]]]], input_labels=[[[3]]]), "1 \\(positive\\) or 0"),
    (dict(obj_ids=1, input_boxes=[[[10, 10, 5, 50]]]), "x2|y2|x1"),
    (dict(obj_ids=1, input_boxes=[[[10, 10, 50, 50]]], clear_old_inputs=False), "box"),
    (dict(obj_ids=1, input_masks=np.ones((4, 4)), input_points=[[[[1, 1]]]], input_labels=[[[1]]]), "masks cannot"),
    (dict(obj_ids=[1, 2], input_masks=np.ones((4, 4))), r"object ids \(2\).*masks \(1\)"),
    (dict(obj_ids=True, input_points=[[[[200, 300]]]], input_labels=[[[1]]]), "obj_ids"),
    (dict(obj_ids=[1, 1], input_points=[[[[2, 3]], [[4, 5]]]], input_labels=[[[1], [1]]]), "repeated"),
    (dict(obj_ids=1, frame_idx=7, input_points=[[[[200, 300]]]], input_labels=[[[1]]]), "out of range"),
]


@pytest.mark.parametrize("call, match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_inputs_raise_one_line_and_change_nothing(processors, call, match):
    _, ours = processors
    s = ours.init_video_session(video=np.zeros((3, 480, 640, 3), np.uint8))
    ours.add_inputs_to_inference_session(s, 0, 9, input_points=[[[[5, 5]]]], input_labels=[[[1]]])
    call = {"frame_idx": 0, **call}
    with pytest.raises((ValueError, TypeError, IndexError), match=match) as e:
        ours.add_inputs_to_inference_session(s, **call)
    assert "\n" not in str(e.value)
    assert s.obj_ids == [9] and s.obj_with_new_inputs == [9] and list(s.objects[0].points) == [0]


def test_streaming_session_rules(processors):
    _, ours = processors
    s = ours.init_video_session()
    assert s.num_frames is None and s.streaming
    with pytest.raises(ValueError, match="original_size"):
        ours.add_inputs_to_inference_session(s, 0, 1, input_points=[[[[5, 5]]]], input_labels=[[[1]]])
    with pytest.raises(IndexError, match="next one is 0"):
        ours.add_inputs_to_inference_session(s, 3, 1, input_points=[[[[5, 5]]]], input_labels=[[[1]]],
                                             original_size=(480, 640))  # fmt: skip
    ours.add_inputs_to_inference_session(s, 0, 1, input_points=[[[[5, 5]]]], input_labels=[[[1]]],
                                         original_size=(480, 640))  # fmt: skip
    assert (s.video_height, s.video_width) == (480, 640) and s.obj_ids == [1]
    with pytest.raises(TypeError, match="decoded frames"):
        ours.init_video_session(video="some/dir")
