"""``VideoBatchTracker`` on 8 simulated CPU devices (XLA_FLAGS set in conftest) against one-by-one propagation.

Four videos cut from the bedroom frames (different frames, orders, lengths 6-10, one at half resolution, 1-3
objects, clicks and boxes on frame 0 and later frames, one video starting at frame 2) are tracked together and,
on fresh states with the same prompts, one by one with ``Sam2VideoPredictor.propagate_in_video``. The model is the
small 256-px tracking config with numpy-random params (no compile to make them); the object-score head's bias is
shifted so that tracked objects are judged sometimes present, sometimes absent.

Memories are stored in float32 here: the batched step (vmapped, objects and conditioning frames padded to shared
buckets) differs from the one-video step by float rounding (~1e-6), and with bfloat16 memories (the default) a
difference that flips one bfloat16 rounding grows to ~1e-4 on some objects and frames (relative L2 ~2e-5 over this
run): the same spread as any two float32 implementations, not a batching error.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import count_compiles, jit_compiles
from PIL import Image

from sam2_jax.frontends.video.batch import VideoBatchTracker
from sam2_jax.frontends.video.predictor import Sam2VideoPredictor
from sam2_jax.modeling.sam2_video_model import NO_OBJECT_SCORE

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"

PROMPTS = [
    [dict(frame_idx=0, obj_id=1, points=[[300, 200]], labels=[1])],
    [
        dict(frame_idx=0, obj_id=1, points=[[700, 300], [650, 320]], labels=[1, 0]),
        dict(frame_idx=0, obj_id=2, box=[100, 100, 400, 350]),
        dict(frame_idx=4, obj_id=3, points=[[500, 250]], labels=[1]),  # a later frame
    ],
    [dict(frame_idx=2, obj_id="a", box=[50, 50, 200, 170])],  # half resolution; propagation starts at frame 2
    [
        dict(frame_idx=0, obj_id=1, points=[[200, 300]], labels=[1]),
        dict(frame_idx=3, obj_id=1, points=[[220, 310]], labels=[1]),  # two conditioning frames
        dict(frame_idx=0, obj_id=2, points=[[800, 100]], labels=[1]),
    ],
]


@pytest.fixture(scope="module")
def predictor():
    from reference import random_params, tracking_test_config

    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel

    config = tracking_test_config()
    params = random_params(config, score_shift=-0.3)  # tracked object scores ~0.3 before the shift
    return Sam2VideoPredictor(Sam2VideoModel(config), params, fill_hole_area=8, memory_dtype=jnp.float32)


@pytest.fixture(scope="module")
def videos():
    images = [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB")) for i in range(0, 48, 3)]
    return [
        np.stack(images[0:7]),
        np.stack(images[15:7:-1]),  # 8 frames, backwards
        np.stack(images[2:8])[:, ::2, ::2].copy(),  # 6 frames at 270 x 480
        np.stack([images[i] for i in (1, 4, 7, 10, 13, 3)]),
    ]


def _one_by_one(predictor, videos, prompts, **kwargs):
    states, runs = [], []
    for video, plist in zip(videos, prompts, strict=True):
        state = predictor.init_state(video)
        for p in plist:
            p = dict(p)
            predictor.add_new_points_or_box(state, p.pop("frame_idx"), p.pop("obj_id"), **p)
        runs.append(list(predictor.propagate_in_video(state, **kwargs)))
        states.append(state)
    return states, runs


class Spy:
    """Wraps the batch's jitted step to record the shardings of what it gets and returns."""

    def __init__(self, step):
        self.step, self.banks, self.outputs = step, [], []

    def __call__(self, params, bank, *args):
        self.banks.append(bank.cond_features.sharding)
        new_bank, out = self.step(params, bank, *args)
        self.outputs.append(out.low_res_masks.sharding)
        return new_bank, out


@pytest.fixture(scope="module")
def runs(predictor, videos):
    batch = VideoBatchTracker(predictor)
    jitted = batch.step
    batch.step = spy = Spy(jitted)
    states = batch.prepare(videos, PROMPTS)
    with count_compiles() as first:
        steps = list(batch.propagate(states))
    first_step_compiles = jit_compiles(jitted)
    ref_states, ref = _one_by_one(predictor, videos, PROMPTS)
    # continue both from each video's last frame, in reverse, 2 frames: the batch's banks were written back
    starts = [len(v) - 1 for v in videos]
    with count_compiles() as second:
        back = list(batch.propagate(states, start_frame_idx=starts, max_frame_num_to_track=1, reverse=True))
    ref_back = [
        list(predictor.propagate_in_video(s, start_frame_idx=t, max_frame_num_to_track=1, reverse=True))
        for s, t in zip(ref_states, starts, strict=True)
    ]
    return dict(batch=batch, jitted=jitted, spy=spy, steps=steps, ref=ref, back=back, ref_back=ref_back,
                first=first.n, first_step=first_step_compiles, second=second.n)  # fmt: skip


def _compare(steps, ref) -> tuple[float, int, int]:
    """Per video, the batch's frames in order against the one-by-one run: same (frame, ids), the same objects
    absent (all -1024), and the relative L2 over the present objects' logits of the whole run."""
    diff2 = ref2 = 0.0
    present = absent = 0
    for v, expected in enumerate(ref):
        got = [step[v] for step in steps if step[v] is not None]
        assert [(t, ids) for t, ids, _ in got] == [(t, ids) for t, ids, _ in expected], f"video {v}"
        assert all(step[v] is None for step in steps[len(got) :]), f"video {v}: a gap in its steps"
        for (t, _, ours), (_, _, theirs) in zip(got, expected, strict=True):
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            gone = (theirs == NO_OBJECT_SCORE).all(axis=(1, 2, 3))
            np.testing.assert_array_equal((ours == NO_OBJECT_SCORE).all(axis=(1, 2, 3)), gone, f"video {v} @ {t}")
            present, absent = present + int((~gone).sum()), absent + int(gone.sum())
            diff2 += float(((ours[~gone].astype(np.float64) - theirs[~gone]) ** 2).sum())
            ref2 += float((theirs[~gone].astype(np.float64) ** 2).sum())
    return (diff2 / max(ref2, 1e-30)) ** 0.5, present, absent


def test_eight_devices():
    assert jax.device_count() == 8, "conftest must set XLA_FLAGS before jax is imported"


def test_batch_equals_one_by_one(runs):
    """Every video's frames, object ids and masks equal its own ``propagate_in_video``."""
    assert len(runs["steps"]) == 8  # the longest video
    assert [sum(s[v] is not None for s in runs["steps"]) for v in range(4)] == [7, 8, 4, 6]
    rel, present, absent = _compare(runs["steps"], runs["ref"])
    print(f"batched vs one by one: relative L2 {rel:.2e}, {present} present, {absent} absent")
    assert rel <= 1e-5
    assert present > 0 and absent > 0, "both present and absent objects must be exercised"


def test_banks_written_back(runs):
    """A reverse run from each video's last frame (batched, per-video starts) continues from the written-back
    banks exactly as the one-by-one states continue from theirs."""
    assert [[t for t, _, _ in r] for r in runs["ref_back"]] == [[6, 5], [7, 6], [5, 4], [5, 4]]
    rel, present, absent = _compare(runs["back"], runs["ref_back"])
    print(f"continued in reverse: relative L2 {rel:.2e}, {present} present, {absent} absent")
    assert rel <= 1e-5


def test_sharded_over_all_devices(runs):
    """The bank and the outputs are split along the video axis over the 8 devices; params replicated once."""
    devices = set(jax.devices())
    for sharding in runs["spy"].banks + runs["spy"].outputs:
        assert sharding.device_set == devices
        assert sharding.spec[0] == "data" and not sharding.is_fully_replicated
    for leaf in jax.tree_util.tree_leaves(runs["batch"].params):
        assert leaf.sharding.device_set == devices and leaf.sharding.is_fully_replicated


def test_compiled_once(runs):
    """One compile of the batched step for both runs (8 + 2 steps, every video at its own frames)."""
    print(f"compiles: {runs['first']} in the first run (step: {runs['first_step']}), {runs['second']} in the second")
    assert runs["first_step"] == 1
    assert jit_compiles(runs["jitted"]) == 1
    assert runs["second"] == 0


def test_bad_input(predictor, videos):
    batch = VideoBatchTracker(predictor)
    one = [dict(frame_idx=0, obj_id=1, points=[[10, 10]], labels=[1])]
    cases = [
        (ValueError, "3 prompt lists for 4 videos", lambda: batch.prepare(videos, [one] * 3)),
        (
            IndexError,
            "video 1, prompt 0: frame index 99 is out of range",
            lambda: batch.prepare(videos[:2], [one, [dict(one[0], frame_idx=99)]]),
        ),  # fmt: skip
        (
            ValueError,
            r"video 0, prompt 0: prompt keys: missing \[\], unknown \['point'\]",
            lambda: batch.prepare(videos[:1], [[dict(frame_idx=0, obj_id=1, point=[[1, 1]])]]),
        ),  # fmt: skip
        (RuntimeError, "video 0: No input points", lambda: batch.track(videos[:1], [[]])),
        (ValueError, "reverse has 1 entries for 2 videos", lambda: batch.track(videos[:2], [one, one], reverse=[1])),
    ]
    for error, words, call in cases:
        with pytest.raises(error, match=words) as info:
            call()
        assert "\n" not in str(info.value)
