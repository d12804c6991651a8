"""``Sam2VideoPredictor`` against the official ``SAM2VideoPredictor``, live, with every tensor randomised.

The official predictor is built by ``build_sam2_video_predictor`` (``apply_postprocessing=True``: dynamic multimask,
binarised click masks), its state dict saved as an original ``.pt`` and converted; both load the same JPEG frames
their own way (PIL resize to S x S). Hole filling is off on both sides (the official one needs CUDA; ours is tested
in ``test_components.py``), and both store memories in bfloat16. Every mask either side returns is compared:
the same objects judged absent (-1024), IoU of (logits > 0) >= 0.99 per object and frame, and relative L2 of the
present objects' logits <= 1e-4 on every output (each frame of a propagation, each prompt's answer).

The interaction scenario runs the official tiny architecture at 256 px (``++model.image_size=256``: every module
the same, 16x16 memory grids), cheap enough for every case; one run of 9 frames is at the full 1024 px.
"""

from __future__ import annotations

import pathlib
import shutil
import warnings

import numpy as np
import pytest
from reference import official_config_at, official_video_predictor

from sam2_jax.frontends.video.predictor import Sam2VideoPredictor
from sam2_jax.modeling.sam2_video_model import NO_OBJECT_SCORE

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"


class Comparison:
    """Accumulates every compared output; ``check`` asserts the run's totals."""

    def __init__(self):
        self.diff2 = self.ref2 = 0.0
        self.min_iou, self.where = 1.0, None
        self.present = self.absent = 0
        self.worst_frame, self.worst_where = 0.0, None  # the largest relative L2 of one call's present objects

    def add(self, what, ours, ref):
        ref = np.asarray(ref, np.float64)
        ours = np.asarray(ours, np.float64)
        assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
        absent_ref = (ref == NO_OBJECT_SCORE).all(axis=(1, 2, 3))
        absent_ours = (ours == NO_OBJECT_SCORE).all(axis=(1, 2, 3))
        np.testing.assert_array_equal(absent_ours, absent_ref, err_msg=f"{what}: objects judged absent")
        self.present += int((~absent_ref).sum())
        self.absent += int(absent_ref.sum())
        here = ~absent_ref
        if here.any():
            rel = float(np.linalg.norm(ours[here] - ref[here]) / max(np.linalg.norm(ref[here]), 1e-30))
            if rel > self.worst_frame:
                self.worst_frame, self.worst_where = rel, what
        for i in np.flatnonzero(~absent_ref):
            a, b = ours[i] > 0, ref[i] > 0
            union = (a | b).sum()
            iou = 1.0 if union == 0 else (a & b).sum() / union
            if iou < self.min_iou:
                self.min_iou, self.where = iou, f"{what}, object {i}"
            self.diff2 += float(((ours[i] - ref[i]) ** 2).sum())
            self.ref2 += float((ref[i] ** 2).sum())

    def check(self, both_kinds=True):
        rel = (self.diff2 / max(self.ref2, 1e-30)) ** 0.5
        print(f"relative L2 {rel:.2e} (worst output {self.worst_frame:.2e}: {self.worst_where}), min IoU "
              f"{self.min_iou:.5f} ({self.where}), {self.present} present, {self.absent} absent")  # fmt: skip
        assert self.min_iou >= 0.99, f"IoU {self.min_iou} at {self.where}"
        assert rel <= 1e-4, f"relative L2 {rel:.3e}"
        assert self.worst_frame <= 1e-4, f"relative L2 {self.worst_frame:.3e} at {self.worst_where}"
        assert self.present > 0
        if both_kinds:
            assert self.absent > 0, "no object was ever absent: the absent path went untested"


def _official_call(official, name, *args, **kwargs):
    import torch

    with torch.inference_mode():
        out = getattr(official, name)(*args, **kwargs)
    return out


def _official_propagate(official, state, **kwargs):
    import torch

    with torch.inference_mode():
        return [(t, list(ids), m.numpy()) for t, ids, m in official.propagate_in_video(state, **kwargs)]


def _pair(official, ours, cmp, ostate, jstate, name, **kwargs):
    t_o, ids_o, m_o = _official_call(official, name, ostate, **kwargs)
    t_j, ids_j, m_j = getattr(ours, name)(jstate, **kwargs)
    assert (t_j, list(ids_j)) == (t_o, list(ids_o)), name
    cmp.add(f"{name} {kwargs.get('obj_id')} @ {kwargs.get('frame_idx')}", m_j, m_o.numpy())


def _propagate_pair(official, ours, cmp, ostate, jstate, **kwargs):
    ref = _official_propagate(official, ostate, **kwargs)
    got = list(ours.propagate_in_video(jstate, **kwargs))
    assert [(t, list(ids)) for t, ids, _ in got] == [(t, ids) for t, ids, _ in ref], kwargs
    for (t, _, m_j), (_, _, m_o) in zip(got, ref, strict=True):
        cmp.add(f"propagate {kwargs} frame {t}", m_j, m_o)
    return [t for t, _, _ in ref]


@pytest.fixture(scope="module")
def official_256(tmp_path_factory):
    import torch

    official = official_video_predictor(image_size=256)
    path = tmp_path_factory.mktemp("official_video") / "sam2.1_hiera_tiny_256.pt"
    torch.save({"model": official.state_dict()}, path)
    return official, path


@pytest.fixture(scope="module")
def ours_256(official_256):
    """Ours, converted from the same ``.pt``; the tests set ``keep_history`` (one predictor: its steps compile once)."""
    return Sam2VideoPredictor.from_pretrained(official_256[1], config=official_config_at(256), fill_hole_area=0)


BOX_MASK = np.zeros((540, 960), bool)
BOX_MASK[250:420, 500:800] = True


def _prompts(official, ours, cmp, ostate, jstate):
    pair = lambda name, **kw: _pair(official, ours, cmp, ostate, jstate, name, **kw)  # noqa: E731
    pair("add_new_points_or_box", frame_idx=0, obj_id=1, points=[[300, 200]], labels=[1])
    pair("add_new_points_or_box", frame_idx=0, obj_id=2, points=[[700, 300], [650, 320]], labels=[1, 0])
    pair("add_new_points_or_box", frame_idx=3, obj_id=3, box=[100, 100, 400, 350])
    pair("add_new_mask", frame_idx=5, obj_id=4, mask=BOX_MASK)


def test_interaction_matches_official(official_256, ours_256):
    """With default arguments: clicks on frame 0, a box on frame 3, a mask on frame 5; forward; corrections on
    tracked frames (appending to a frame's clicks and replacing them); reverse from inside the tracked frames;
    forward again from inside; clearing a frame and removing an object; every output compared."""
    official, ours = official_256[0], ours_256
    assert ours.keep_history is True  # the default
    ostate = _official_call(official, "init_state", str(BEDROOM))
    jstate = ours.init_state(BEDROOM)
    assert jstate["num_frames"] == ostate["num_frames"] == 48
    assert (jstate["video_height"], jstate["video_width"]) == (540, 960)
    cmp = Comparison()
    pair = lambda name, **kw: _pair(official, ours, cmp, ostate, jstate, name, **kw)  # noqa: E731
    propagate = lambda **kw: _propagate_pair(official, ours, cmp, ostate, jstate, **kw)  # noqa: E731

    _prompts(official, ours, cmp, ostate, jstate)
    assert propagate(max_frame_num_to_track=15) == list(range(16))
    # a correction on a tracked frame: memory-conditioned, the previous mask as mask prompt, stored non-cond
    pair("add_new_points_or_box", frame_idx=8, obj_id=1, points=[[320, 210]], labels=[0], clear_old_points=False)
    # a correction replacing nothing (clear_old_points=True) on another tracked frame, for another object
    pair("add_new_points_or_box", frame_idx=11, obj_id=4, points=[[640, 330], [520, 300]], labels=[1, 0])
    assert jstate.history.used_bytes() > 0  # the tracked frames' outputs went to the history file
    # appended to frame 0's clicks, which is a conditioning frame that has been tracked
    pair("add_new_points_or_box", frame_idx=0, obj_id=2, points=[[600, 250]], labels=[1], clear_old_points=False)
    assert propagate(start_frame_idx=12, reverse=True) == list(range(12, -1, -1))
    assert propagate(start_frame_idx=10, max_frame_num_to_track=5) == list(range(10, 16))
    pair("clear_all_prompts_in_frame", frame_idx=3, obj_id=3)
    pair("add_new_points_or_box", frame_idx=3, obj_id=3, points=[[250, 220]], labels=[1])

    ids_o, frames_o = _official_call(official, "remove_object", ostate, 2)
    ids_j, frames_j = ours.remove_object(jstate, 2)
    assert list(ids_j) == list(ids_o) == [1, 3, 4]
    assert [t for t, _ in frames_j] == sorted(t for t, _ in frames_o)
    for (t, m_j), (_, m_o) in zip(frames_j, sorted(frames_o, key=lambda x: x[0]), strict=True):
        cmp.add(f"remove_object frame {t}", m_j, m_o.numpy())
    assert propagate(max_frame_num_to_track=7) == list(range(8))
    cmp.check()


def test_without_history_first_run_matches_and_warns(official_256, ours_256):
    """``keep_history=False``: the prompts and the first propagation equal the official's; a correction on a
    tracked frame, whose outputs were not kept, says so."""
    official, ours = official_256[0], ours_256
    ours.keep_history = False
    try:
        ostate = _official_call(official, "init_state", str(BEDROOM))
        jstate = ours.init_state(BEDROOM)
        cmp = Comparison()
        _prompts(official, ours, cmp, ostate, jstate)
        _propagate_pair(official, ours, cmp, ostate, jstate, max_frame_num_to_track=20)
        cmp.check()
        held = [len(track.non_cond) for track in jstate.objects]
        assert max(held) <= 15, held  # the bank's frames only
        assert jstate.history.disk_bytes() == 0
        with pytest.warns(UserWarning, match="keep_history"):
            ours.add_new_points_or_box(jstate, 4, 1, points=[[320, 210]], labels=[0], clear_old_points=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours.add_new_points_or_box(jstate, 4, 1, points=[[330, 210]], labels=[0], clear_old_points=False)
    finally:
        ours.keep_history = True


def _options_run(official, ours, ostate, jstate, cmp):
    pair = lambda name, **kw: _pair(official, ours, cmp, ostate, jstate, name, **kw)  # noqa: E731
    pair("add_new_points_or_box", frame_idx=0, obj_id=1, points=[[300, 200]], labels=[1])
    pair("add_new_points_or_box", frame_idx=0, obj_id=2, box=[250, 120, 500, 380])
    _propagate_pair(official, ours, cmp, ostate, jstate, max_frame_num_to_track=6)
    pair("add_new_points_or_box", frame_idx=4, obj_id=1, points=[[330, 230]], labels=[1], clear_old_points=False)
    assert 4 in jstate.objects[0].temp_cond  # with the option, a correction is a conditioning frame
    _propagate_pair(official, ours, cmp, ostate, jstate, max_frame_num_to_track=9)


def _with_option(official, ours, option, run):
    ours.keep_history = True
    setattr(official, option, True)
    setattr(ours, option, True)
    try:
        ostate = _official_call(official, "init_state", str(BEDROOM))
        run(ostate, ours.init_state(BEDROOM))
    finally:
        setattr(official, option, False)
        setattr(ours, option, False)


def test_correction_as_conditioning_frame_matches_official(official_256, ours_256):
    """``add_all_frames_to_correct_as_cond``: a correction on a tracked frame becomes a conditioning frame."""
    official, ours = official_256[0], ours_256
    cmp = Comparison()
    _with_option(official, ours, "add_all_frames_to_correct_as_cond",
                 lambda ostate, jstate: _options_run(official, ours, ostate, jstate, cmp))  # fmt: skip
    cmp.check(both_kinds=False)


def test_non_overlapping_outputs_match_official(official_256, ours_256):
    """``non_overlap_masks``: one object per pixel in the outputs. Ours runs with the option, the official without
    it, and its constraint (``_apply_non_overlapping_constraints``) is applied to those raw outputs here, so the
    pixels where two objects' raw logits tie to rounding are known: there which one keeps the pixel may differ
    (with random weights the objects' logits agree to ~1e-4 over much of a frame); elsewhere nothing may differ."""
    import torch

    official, ours = official_256[0], ours_256
    cmp = Comparison()
    ties = flipped = pixels = clamped = 0

    def add(what, mine, raw):
        nonlocal ties, flipped, pixels, clamped
        with torch.inference_mode():
            ref = official._apply_non_overlapping_constraints(torch.from_numpy(raw)).numpy()
        top = np.sort(np.concatenate([raw, np.full_like(raw[:1], -np.inf)]), axis=0)  # -inf: one object owns all
        clear = top[-1] - top[-2] > 1e-3 * (1 + np.abs(top[-1]))  # (1, H, W): one object clearly owns the pixel
        off = np.abs(np.asarray(mine, np.float64) - ref) > 1e-3 * (1 + np.abs(ref))
        pixels += ref.size
        ties += int((~clear).sum())
        flipped += int((off & clear[None]).sum())
        clamped += int((ref < raw).sum())
        cmp.add(what, np.where(clear[None], mine, ref), ref)

    ours.keep_history, ours.non_overlap_masks = True, True
    try:
        ostate, jstate = _official_call(official, "init_state", str(BEDROOM)), ours.init_state(BEDROOM)
        for kw in (
            dict(frame_idx=0, obj_id=1, points=[[300, 200]], labels=[1]),
            dict(frame_idx=0, obj_id=2, box=[250, 120, 500, 380]),
        ):
            _, ids_o, m_o = _official_call(official, "add_new_points_or_box", ostate, **kw)
            _, ids_j, m_j = ours.add_new_points_or_box(jstate, **kw)
            assert list(ids_j) == list(ids_o)
            add(f"add {kw['obj_id']}", m_j, m_o.numpy())
        ref = _official_propagate(official, ostate, max_frame_num_to_track=9)
        got = list(ours.propagate_in_video(jstate, max_frame_num_to_track=9))
    finally:
        ours.non_overlap_masks = False
    assert [(t, list(i)) for t, i, _ in got] == [(t, i) for t, i, _ in ref]
    for (t, _, m_j), (_, _, m_o) in zip(got, ref, strict=True):
        add(f"propagate frame {t}", m_j, m_o)
    print(f"{flipped} of {pixels} pixels with a clear owner changed owner; {ties} ties; {clamped} clamped")
    assert clamped > 1e-2 * pixels, "the constraint changed nothing: the test proves nothing"
    assert flipped <= 1e-4 * pixels
    cmp.check(both_kinds=False)


def test_full_size_9_frames_matches_official(tmp_path):
    """The full tiny model at 1024 px: one object clicked on frame 0, tracked over 9 frames (by the last, the bank's
    6 recent-frame slots have filled and are being replaced; the pointer slots' turnover is covered at 256 px)."""
    import torch

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(9):
        shutil.copy(BEDROOM / f"{i:05d}.jpg", frames)
    official = official_video_predictor(image_size=1024)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": official.state_dict()}, path)
    ours = Sam2VideoPredictor.from_pretrained(path, fill_hole_area=0)
    ostate = _official_call(official, "init_state", str(frames))
    jstate = ours.init_state(frames)
    cmp = Comparison()
    _pair(official, ours, cmp, ostate, jstate, "add_new_points_or_box", frame_idx=0, obj_id=1,
          points=[[420, 260], [600, 300]], labels=[1, 0])  # fmt: skip
    assert _propagate_pair(official, ours, cmp, ostate, jstate) == list(range(9))
    cmp.check(both_kinds=False)


# ---- behaviour on a small random model: compiles, constant memory, bad input -----------------------------------


@pytest.fixture(scope="module")
def small_predictor():
    from reference import random_params, tracking_test_config

    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel

    config = tracking_test_config()
    params = random_params(config, seed=3)
    return Sam2VideoPredictor(Sam2VideoModel(config), params, fill_hole_area=8)


def _frames(n):
    from PIL import Image

    base = [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB")) for i in range(8)]
    return [base[i % len(base)] for i in range(n)]  # n frames sharing 8 decoded images


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _state_bytes(state) -> int:
    """Bytes of arrays the state holds in memory (spilled ones count as 0)."""
    total = 0
    for track in state.objects:
        for records in (track.cond, track.non_cond, track.temp_cond, track.temp_non_cond):
            total += sum(rec.memory_nbytes() for rec in records.values())
        total += track.tracked.nbytes
    return total


def test_constant_memory_over_1000_frames(small_predictor):
    """``keep_history=False``, 1,008 frames: once the bank is full, host memory and the state's size stay flat,
    nothing goes to disk, and the tracking step compiled once."""
    from compile_count import jit_compiles

    pred = small_predictor
    pred.keep_history = False
    try:
        _flat_run(pred, jit_compiles)
    finally:
        pred.keep_history = True


def _flat_run(pred, jit_compiles):
    state = pred.init_state(_frames(1008))
    pred.add_new_points_or_box(state, 0, 1, points=[[300, 200]], labels=[1])
    compiles = jit_compiles(pred.tracker.track)
    sizes, rss = {}, {}
    for t, ids, masks in pred.propagate_in_video(state):
        assert masks.shape == (1, 1, 540, 960) and ids == [1]
        if t in (300, 600, 1007):
            sizes[t], rss[t] = _state_bytes(state), _rss_bytes()
    assert t == 1007
    assert jit_compiles(pred.tracker.track) - compiles <= 1
    assert sizes[300] == sizes[600] == sizes[1007], sizes
    grown = (rss[1007] - rss[300]) / 2**20
    print(f"RSS {rss[300] / 2**20:.0f} MB at frame 300, +{grown:.1f} MB at frame 1007; state {sizes[1007]} bytes")
    # keeping every frame in memory would add ~50 KB per frame here, ~35 MB over these 707 frames
    assert grown < 24, f"host memory grew by {grown:.1f} MB over 707 frames"
    assert all(len(track.non_cond) <= 15 for track in state.objects)
    assert state.history.disk_bytes() == 0


def test_history_goes_to_disk_over_200_frames(small_predictor):
    """The default (``keep_history=True``), 200 frames, two objects: every tracked frame's output is kept, its
    mask logits and memories in the history file (which grows by exactly their bytes per object and frame),
    the arrays held in memory by the pointers only; a correction on frame 50 reads frame 50's logits back from
    the file; a second propagation over the same frames reuses the slots it frees, and reset gives every slot
    back."""
    pred = small_predictor
    assert pred.keep_history
    state = pred.init_state(_frames(200))
    pred.add_new_points_or_box(state, 0, 1, points=[[300, 200]], labels=[1])
    pred.add_new_points_or_box(state, 0, 2, box=[500, 150, 800, 400])
    disk, rss, mem = {}, {}, {}
    kept = {}
    for t, _, masks in pred.propagate_in_video(state):
        if t in (60, 199):
            disk[t], rss[t], mem[t] = state.history.used_bytes(), _rss_bytes(), _state_bytes(state)
        if t == 50:
            kept = masks
    assert all(len(track.non_cond) == 199 for track in state.objects)
    rec = state.objects[0].non_cond[50]
    per_frame = 2 * (rec.low_res_mask.nbytes + rec.features.nbytes)  # two objects
    assert disk[199] - disk[60] == 139 * per_frame, (disk, per_frame)
    grown = (rss[199] - rss[60]) / 2**20
    in_memory = (mem[199] - mem[60]) / 139 / 2
    print(f"history file +{(disk[199] - disk[60]) / 2**20:.1f} MB over 139 frames ({per_frame} bytes a frame), "
          f"RSS +{grown:.1f} MB, arrays in memory +{in_memory:.0f} bytes per object and frame")  # fmt: skip
    # the pointer only (RSS is printed, not asserted: here it moves by +-20 MB between runs of the same loop)
    assert in_memory <= rec.pointer.nbytes, in_memory
    # frame 50's logits, read back, are what propagation returned
    low = state.objects[0].non_cond[50].low_res_mask
    np.testing.assert_allclose(pred._to_video(state, [low])[0], kept[0], rtol=0, atol=0)
    pred.add_new_points_or_box(state, 50, 1, points=[[320, 210]], labels=[0], clear_old_points=False)
    files = state.history.disk_bytes()
    for _ in pred.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=50):
        pass
    grown = state.history.disk_bytes() - files
    assert grown <= 2 * per_frame, (grown, per_frame)  # the slots of re-tracked frames were reused
    del rec  # the last handle to a record outside the state
    pred.reset_state(state)
    assert state.history.used_bytes() == 0


def test_objects_share_compiles_by_bucket(small_predictor):
    """Objects are padded to ``TRACKING_BUCKETS``: going from 5 to 8 objects compiles the tracking step twice (the
    buckets of 6 and 8), not once per count, and the padding does not change the answer."""
    from compile_count import jit_compiles

    from sam2_jax.processing.prompts import TRACKING_BUCKETS

    assert 6 in TRACKING_BUCKETS and 8 in TRACKING_BUCKETS and 7 not in TRACKING_BUCKETS
    pred = small_predictor
    state = pred.init_state(_frames(2))
    for n in range(1, 5):
        pred.add_new_points_or_box(state, 0, n, points=[[100 * n, 200]], labels=[1])
    before = jit_compiles(pred.tracker.track)
    outputs = {}
    for n in range(5, 9):
        pred.add_new_points_or_box(state, 0, n, points=[[100 * n, 200]], labels=[1])
        outputs[n] = [m for _, _, m in pred.propagate_in_video(state)][-1]
    assert jit_compiles(pred.tracker.track) - before == 2
    for n in (6, 7, 8):  # the first objects' masks do not depend on how many objects share the step
        np.testing.assert_allclose(outputs[n][:5], outputs[5], rtol=1e-5, atol=1e-4)


def _snapshot(state):
    return (
        list(state.obj_ids),
        [
            (
                sorted(t.points),
                sorted(t.cond),
                sorted(t.non_cond),
                sorted(t.temp_cond),
                sorted(t.temp_non_cond),
                t.tracked.tobytes(),
            )
            for t in state.objects
        ],
    )


def test_bad_input_names_the_problem_and_keeps_the_state(small_predictor, tmp_path):
    pred = small_predictor
    frames = tmp_path / "video"
    frames.mkdir()
    for i in range(3):
        shutil.copy(BEDROOM / f"{i:05d}.jpg", frames / f"{i}.jpg")
    (frames / "3.jpg").write_bytes(b"not a jpeg")
    state = pred.init_state(frames)
    assert state["num_frames"] == 4
    pred.add_new_points_or_box(state, 0, 1, points=[[300, 200]], labels=[1])
    before = _snapshot(state)
    cases = [
        (IndexError, "frame", lambda: pred.add_new_points_or_box(state, 4, 2, points=[[1, 1]], labels=[1])),
        (IndexError, "frame", lambda: pred.add_new_mask(state, -1, 2, np.ones((540, 960), bool))),
        (IndexError, "frame", lambda: pred.propagate_in_video(state, start_frame_idx=9)),
        (ValueError, "unknown object id 7", lambda: pred.clear_all_prompts_in_frame(state, 0, 7)),
        (RuntimeError, "Cannot remove object id 7", lambda: pred.remove_object(state, 7, strict=True)),
        (ValueError, "x2 < x1", lambda: pred.add_new_points_or_box(state, 1, 2, box=[400, 100, 300, 200])),
        (ValueError, "outside", lambda: pred.add_new_points_or_box(state, 1, 2, points=[[970, 10]], labels=[1])),
        (ValueError, "labels", lambda: pred.add_new_points_or_box(state, 1, 2, points=[[9, 9]], labels=[1, 0])),
        (ValueError, "labels must be 1", lambda: pred.add_new_points_or_box(state, 1, 2, points=[[9, 9]], labels=[5])),
        (ValueError, "together", lambda: pred.add_new_points_or_box(state, 1, 2, points=[[9, 9]])),
        (ValueError, "3.jpg", lambda: pred.add_new_points_or_box(state, 3, 2, points=[[9, 9]], labels=[1])),
        (ValueError, "mask must be a 2-D", lambda: pred.add_new_mask(state, 1, 2, np.ones((1, 540, 960)))),
        (ValueError, "max_frame_num_to_track", lambda: pred.propagate_in_video(state, max_frame_num_to_track=-1)),
    ]
    for error, words, call in cases:
        with pytest.raises(error, match=words):
            call()
        assert _snapshot(state) == before, f"{words}: the state changed"
    with pytest.raises(TypeError, match="init_state"):
        pred.add_new_points_or_box(None, 0, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(TypeError, match="init_state"):
        pred.propagate_in_video({"images": []})
    with pytest.raises(ValueError, match="3.jpg"):  # a corrupt frame met while tracking
        list(pred.propagate_in_video(state))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no <int>.jpg frames"):
        pred.init_state(empty)
    with pytest.raises(FileNotFoundError):
        pred.init_state(tmp_path / "missing")
    fresh = pred.init_state(frames)
    with pytest.raises(RuntimeError, match="No input points or masks"):
        pred.propagate_in_video(fresh)


def test_official_bookkeeping(small_predictor):
    """Object ids, clearing and removing follow the official predictor's rules."""
    pred = small_predictor
    state = pred.init_state(_frames(6))
    _, ids, masks = pred.add_new_points_or_box(state, 2, "cat", points=[[300, 200]], labels=[1])
    assert ids == ["cat"] and masks.shape == (1, 1, 540, 960)
    _, ids, masks = pred.add_new_mask(state, 4, 5, BOX_MASK)
    assert ids == ["cat", 5] and masks.shape == (2, 1, 540, 960)
    assert (masks[0] == NO_OBJECT_SCORE).all()  # no output of "cat" on frame 4 yet
    out = list(pred.propagate_in_video(state, start_frame_idx=2))
    assert [t for t, _, _ in out] == [2, 3, 4, 5]
    out = list(pred.propagate_in_video(state, start_frame_idx=4, reverse=True))
    assert [t for t, _, _ in out] == [4, 3, 2, 1, 0]
    assert pred.clear_all_prompts_in_frame(state, 4, 5, need_output=False) is None
    with pytest.raises(RuntimeError, match="object id 5"):  # no conditioning frame left
        pred.propagate_in_video(state)
    ids, updated = pred.remove_object(state, 5)
    assert ids == ["cat"] and updated == []
    assert pred.remove_object(state, "dog") == (["cat"], [])
    pred.reset_state(state)
    assert state["obj_ids"] == []
