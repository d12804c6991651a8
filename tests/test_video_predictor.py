"""``Sam2VideoPredictor`` against the official ``SAM2VideoPredictor``, live, with every tensor randomised.

The official predictor is built by ``build_sam2_video_predictor`` (``apply_postprocessing=True``: dynamic multimask,
binarised click masks), its state dict saved as an original ``.pt`` and converted; both load the same JPEG frames
their own way (PIL resize to S x S). Hole filling is off on both sides (the official one needs CUDA; ours is tested
in ``test_components.py``), and both store memories in bfloat16. Every mask either side returns is compared:
the same objects judged absent (-1024), and over the whole run IoU of (logits > 0) >= 0.99 per object and frame
and relative L2 of the present objects' logits <= 1e-4.

The interaction scenario runs the official tiny architecture at 256 px (``++model.image_size=256``: every module
the same, 16x16 memory grids), cheap enough for every case; one run of 30 frames is at the full 1024 px.
"""

from __future__ import annotations

import pathlib
import shutil
import warnings

import numpy as np
import pytest
from reference import official_config_at, official_video_predictor

from sam2_jax.frontends.video_predictor import Sam2VideoPredictor
from sam2_jax.modeling.sam2_video_model import NO_OBJECT_SCORE

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"


class Comparison:
    """Accumulates every compared output; ``check`` asserts the run's totals."""

    def __init__(self):
        self.diff2 = self.ref2 = 0.0
        self.min_iou, self.where = 1.0, None
        self.present = self.absent = 0

    def add(self, what, ours, ref):
        ref = np.asarray(ref, np.float64)
        ours = np.asarray(ours, np.float64)
        assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
        absent_ref = (ref == NO_OBJECT_SCORE).all(axis=(1, 2, 3))
        absent_ours = (ours == NO_OBJECT_SCORE).all(axis=(1, 2, 3))
        np.testing.assert_array_equal(absent_ours, absent_ref, err_msg=f"{what}: objects judged absent")
        self.present += int((~absent_ref).sum())
        self.absent += int(absent_ref.sum())
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
        print(f"relative L2 {rel:.2e}, min IoU {self.min_iou:.5f} ({self.where}), {self.present} present, "
              f"{self.absent} absent")  # fmt: skip
        assert self.min_iou >= 0.99, f"IoU {self.min_iou} at {self.where}"
        assert rel <= 1e-4, f"relative L2 {rel:.3e}"
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


def _ours(path, image_size, **kwargs):
    return Sam2VideoPredictor.from_pretrained(path, config=official_config_at(image_size), fill_hole_area=0, **kwargs)


BOX_MASK = np.zeros((540, 960), bool)
BOX_MASK[250:420, 500:800] = True


def _prompts(official, ours, cmp, ostate, jstate):
    pair = lambda name, **kw: _pair(official, ours, cmp, ostate, jstate, name, **kw)  # noqa: E731
    pair("add_new_points_or_box", frame_idx=0, obj_id=1, points=[[300, 200]], labels=[1])
    pair("add_new_points_or_box", frame_idx=0, obj_id=2, points=[[700, 300], [650, 320]], labels=[1, 0])
    pair("add_new_points_or_box", frame_idx=3, obj_id=3, box=[100, 100, 400, 350])
    pair("add_new_mask", frame_idx=5, obj_id=4, mask=BOX_MASK)


def test_interaction_matches_official(official_256):
    """Clicks on frame 0, a box on frame 3, a mask on frame 5; forward; corrections on tracked frames (one
    appending to a frame's clicks); reverse from inside the tracked frames; forward again from inside; clearing
    a frame and removing an object; every output compared."""
    official, path = official_256
    ours = _ours(path, 256, keep_history=True)
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


def test_without_history_first_run_matches_and_warns(official_256):
    """``keep_history=False``: the prompts and the first propagation equal the official's; a correction on a
    tracked frame, whose outputs were not kept, says so."""
    official, path = official_256
    ours = _ours(path, 256)
    ostate = _official_call(official, "init_state", str(BEDROOM))
    jstate = ours.init_state(BEDROOM)
    cmp = Comparison()
    _prompts(official, ours, cmp, ostate, jstate)
    _propagate_pair(official, ours, cmp, ostate, jstate, max_frame_num_to_track=20)
    cmp.check()
    held = [len(track.non_cond) for track in jstate.objects]
    assert max(held) <= 15, held  # the bank's frames only
    with pytest.warns(UserWarning, match="keep_history"):
        ours.add_new_points_or_box(jstate, 4, 1, points=[[320, 210]], labels=[0], clear_old_points=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.add_new_points_or_box(jstate, 4, 1, points=[[330, 210]], labels=[0], clear_old_points=False)


def test_full_size_30_frames_matches_official(tmp_path):
    """The full tiny model at 1024 px: one object clicked on frame 0, tracked over 30 frames."""
    import torch

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(30):
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
    assert _propagate_pair(official, ours, cmp, ostate, jstate) == list(range(30))
    cmp.check(both_kinds=False)
