"""``Sam2VideoPredictor`` against transformers' ``Sam2VideoModel`` on real frames, every parameter randomised.

The reduced tracking config (``reference.tracking_test_config``: 256 px, 128 wide, each object pointer split into
2 memory tokens) runs on 12 frames of ``tests/data/videos/bedroom`` (every third of the first 36, 960x540). Both
sides get the same pixels: transformers' ``Sam2VideoProcessor`` prepares the video, and ours reads its tensors
through ``VideoFrames.from_pixel_values``. Ours loads transformers' ``save_pretrained`` directory with
``sam2_jax.load(video=True)``. The interaction, done on both:

  1. object 1 clicked on frame 0 (a positive and a negative click), then object 2 (one click);
  2. object 3 given by a box on frame 3;
  3. propagation forward over all frames;
  4. a correction click for object 1 on frame 8, already tracked, with ``clear_old_points=False``;
  5. propagation in reverse from frame 10 (inside the tracked frames: both read the stored memories of frame 11).

Every output both give is compared at the video's resolution (transformers' ``post_process_masks``, bilinear to
540x960, as the official predictor): the object ids and the frame order, which objects are present (absent ones are
-1024 on both sides), per-object IoU of ``logits > 0`` and the relative L2 of the present objects' logits over the
whole run. Memories are stored in bfloat16 on both sides (transformers always; ours ``memory_dtype``).

Where transformers' ``Sam2VideoModel`` is not the official ``SAM2VideoPredictor`` (ours follows the official), only
what both agree on is compared:
  - step 1: transformers pads the clicks of objects added in one call to the same count (label -10), and counts
    padding clicks when choosing multimask output, so object 2's single click would give a single mask; each object
    is added in its own call, as the official predictor takes them.
  - step 2: ``model(frame_idx=3)`` also runs every other object on frame 3 (tracks objects 1 and 2 there from
    their memories, encodes their memories with the box's binarised-mask setting and marks frame 3 tracked for
    them); the official returns -1024 for objects without output on that frame. Only object 3 is compared.
  - step 4: transformers does not feed the frame's previous mask logits to the decoder with the correction click
    (official ``prev_sam_mask_logits``, the stored output clamped to +-32) and takes the direction from the call's
    ``reverse`` argument (the official from how the frame was tracked; forward here, so that part agrees). Its
    object-1 output differs and is not compared (fed the stored logits by a patch, it matched ours to 1e-5).
    Objects 2 and 3 are re-run by transformers from unchanged memories (the official returns their stored
    outputs): compared. Transformers also re-encodes their frame-8 memories from binarised masks, and stores
    object 1's correction memory; neither is read afterwards, since the reverse pass starts after frame 8 and
    recomputes frame 8 before any frame uses it (as in the official).
The correction click itself is left to the comparison with the official package (``test_video_predictor.py``).

Randomised, the object-score head says "present" on prompted frames and "absent" (about -0.6) on tracked frames.
``SCORE_SHIFT`` is added to its output bias (``mask_decoder.pred_obj_score_head.proj_out.bias``, before
``save_pretrained``, so both sides have it) so that tracked objects come and go: with 0.66, presence alternates
from frame to frame on tracked frames (42 present and 33 absent compared object-frames), some frames hold both
present and absent objects (frames 0 to 3), and every compared score is at least ``SCORE_MARGIN`` away from 0
(measured 6.2e-3), so that presence does not hinge on rounding.
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import pytest

VIDEO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "videos", "bedroom")
NUM_FRAMES, FRAME_STRIDE = 12, 3
SEED = 0
SCORE_SHIFT = 0.66  # added to the object-score head's output bias; see the module docstring
SCORE_MARGIN = 1e-3  # every compared object score is at least this far from 0
REL_L2_TOL = 1e-4
IOU_TOL = 0.99
NO_OBJECT_SCORE = -1024.0


def read_video() -> np.ndarray:
    """The test video's frames as (N, H, W, 3) uint8 (shared by the video processor and session tests)."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(VIDEO_DIR, "*.jpg")))[::FRAME_STRIDE][:NUM_FRAMES]
    assert len(paths) == NUM_FRAMES
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


class Comparison:
    """Running totals of the comparison over the whole run (keeping no frame: 540x960 logits add up)."""

    def __init__(self):
        self.diff2 = self.ref2 = 0.0
        self.inter: dict = {}
        self.union: dict = {}
        self.present = self.absent = 0
        self.min_frame_iou = 1.0
        self.min_abs_score = np.inf
        self.frames: list = []

    def add(self, step, frame_idx, theirs, ours, compare):
        """theirs: (frame_idx, obj_ids, logits (O, H, W), scores (O,)); ours: the predictor's (frame_idx, obj_ids,
        masks (O, 1, H, W)); compare: the object indices both sides mean the same by."""
        t_frame, t_ids, t_logits, t_scores = theirs
        o_frame, o_ids, o_masks = ours
        assert (o_frame, list(o_ids)) == (t_frame, list(t_ids)), f"{step}: frame / object ids differ"
        assert frame_idx == t_frame, f"{step}: transformers answered frame {t_frame}, not {frame_idx}"
        self.frames.append((step, t_frame))
        o_logits = np.asarray(o_masks)[:, 0]
        assert o_logits.shape == t_logits.shape, f"{step} frame {t_frame}: {o_logits.shape} != {t_logits.shape}"
        for i in compare:
            what = f"{step} frame {t_frame} object {t_ids[i]}"
            score = float(t_scores[i])
            self.min_abs_score = min(self.min_abs_score, abs(score))
            present = score > 0
            if not present:  # both give the placeholder everywhere
                self.absent += 1
                assert np.all(t_logits[i] == NO_OBJECT_SCORE), f"{what}: transformers' absent mask is not -1024"
                assert np.all(o_logits[i] == NO_OBJECT_SCORE), f"{what}: absent for transformers, present for ours"
                continue
            self.present += 1
            assert not np.all(o_logits[i] == NO_OBJECT_SCORE), f"{what}: present for transformers, absent for ours"
            e = t_logits[i].astype(np.float64)
            a = o_logits[i].astype(np.float64)
            self.diff2 += float(np.sum((a - e) ** 2))
            self.ref2 += float(np.sum(e**2))
            x, y = e > 0, a > 0
            inter, union = int(np.sum(x & y)), int(np.sum(x | y))
            key = t_ids[i]
            self.inter[key] = self.inter.get(key, 0) + inter
            self.union[key] = self.union.get(key, 0) + union
            if union:
                self.min_frame_iou = min(self.min_frame_iou, inter / union)

    def rel_l2(self) -> float:
        return float(np.sqrt(self.diff2 / self.ref2))

    def ious(self) -> dict:
        return {k: (self.inter[k] / self.union[k] if self.union[k] else 1.0) for k in self.inter}


@pytest.fixture(scope="module")
def transformers_model(tmp_path_factory):
    """The randomised transformers model with the shifted object-score head, and its save_pretrained directory."""
    import torch
    from reference import build_transformers_model, tracking_test_config

    config = tracking_test_config()
    model = build_transformers_model(config, seed=SEED, video=True)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias += SCORE_SHIFT
    path = tmp_path_factory.mktemp("sam2_video_tracking")
    model.save_pretrained(path)
    return config, model, path


def test_video_predictor_matches_transformers(transformers_model):
    import torch
    import transformers

    import sam2_jax
    from sam2_jax.frontends.video.predictor import Sam2VideoPredictor
    from sam2_jax.processing.video.frames import VideoFrames

    start = time.perf_counter()
    config, tm, path = transformers_model
    size = config.prompt_encoder_config.image_size
    square = {"height": size, "width": size}
    processor = transformers.Sam2VideoProcessor(
        image_processor=transformers.Sam2ImageProcessor(size=square),
        video_processor=transformers.Sam2VideoVideoProcessor(size=square),
    )
    video = read_video()
    h, w = video.shape[1:3]
    session = processor.init_video_session(video=video, inference_device="cpu")
    assert (session.num_frames, int(session.video_height), int(session.video_width)) == (NUM_FRAMES, h, w)
    pixels = torch.stack([session.processed_frames[i] for i in range(NUM_FRAMES)]).permute(0, 2, 3, 1).numpy()

    model, params = sam2_jax.load(path, video=True)
    predictor = Sam2VideoPredictor(model, params, fill_hole_area=0, keep_history=True)  # transformers fills none
    state = predictor.init_state(VideoFrames.from_pixel_values(pixels, h, w))

    def theirs(out):
        logits = processor.post_process_masks([out.pred_masks], original_sizes=[[h, w]], binarize=False)[0]
        return out.frame_idx, list(out.object_ids), logits[:, 0].numpy(), out.object_score_logits.reshape(-1).numpy()

    def add_points(frame_idx, obj_id, points, labels, clear_old_points=True):
        processor.add_inputs_to_inference_session(
            session, frame_idx, obj_id, input_points=[[points]], input_labels=[[labels]],
            clear_old_inputs=clear_old_points,
        )  # fmt: skip
        out = theirs(tm(inference_session=session, frame_idx=frame_idx))
        ours = predictor.add_new_points_or_box(
            state, frame_idx, obj_id, points=points, labels=labels, clear_old_points=clear_old_points
        )
        return out, ours

    cmp = Comparison()
    with torch.inference_mode():
        # 1. two objects on frame 0, one call each (see the module docstring)
        out, ours = add_points(0, 1, [[210, 350], [250, 220]], [1, 0])
        cmp.add("click object 1", 0, out, ours, [0])
        out, ours = add_points(0, 2, [[460, 60]], [1])
        cmp.add("click object 2", 0, out, ours, [0, 1])
        # 2. a third object by a box on frame 3: transformers also tracks objects 1 and 2 there; compare object 3
        box = [600, 200, 900, 500]
        processor.add_inputs_to_inference_session(session, 3, 3, input_boxes=[[box]])
        out = theirs(tm(inference_session=session, frame_idx=3))
        cmp.add("box object 3", 3, out, predictor.add_new_points_or_box(state, 3, 3, box=box), [2])
        # 3. forward over every frame
        forward_theirs = [theirs(o) for o in tm.propagate_in_video_iterator(session)]
        forward_ours = list(predictor.propagate_in_video(state))
        assert [o[0] for o in forward_theirs] == [o[0] for o in forward_ours] == list(range(NUM_FRAMES))
        for a, b in zip(forward_theirs, forward_ours, strict=True):
            cmp.add("forward", a[0], a, b, [0, 1, 2])
        # 4. a correction click on tracked frame 8: object 1's output is not the official's in transformers
        out, ours = add_points(8, 1, [[300, 300]], [1], clear_old_points=False)
        cmp.add("correction", 8, out, ours, [1, 2])
        # 5. reverse from frame 10, inside the tracked frames
        reverse_theirs = [theirs(o) for o in tm.propagate_in_video_iterator(session, start_frame_idx=10, reverse=True)]
        reverse_ours = list(predictor.propagate_in_video(state, start_frame_idx=10, reverse=True))
        assert [o[0] for o in reverse_theirs] == [o[0] for o in reverse_ours] == list(range(10, -1, -1))
        for a, b in zip(reverse_theirs, reverse_ours, strict=True):
            cmp.add("reverse", a[0], a, b, [0, 1, 2])

    ious = cmp.ious()
    print(
        f"[parity] video predictor vs transformers ({len(cmp.frames)} outputs, {cmp.present} present / "
        f"{cmp.absent} absent object-frames): relative L2 {cmp.rel_l2():.2e}, IoU per object "
        + ", ".join(f"{k}: {v:.5f}" for k, v in ious.items())
        + f", min per frame {cmp.min_frame_iou:.5f}, min |object score| {cmp.min_abs_score:.2e}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    # not trivial: objects come and go, and presence does not hinge on rounding
    assert cmp.present > 0 and cmp.absent > 0, (cmp.present, cmp.absent)
    assert cmp.min_abs_score >= SCORE_MARGIN, f"an object score is within {cmp.min_abs_score:.2e} of 0"
    assert set(ious) == {1, 2, 3}
    assert min(ious.values()) >= IOU_TOL, ious
    assert cmp.rel_l2() <= REL_L2_TOL, f"relative L2 {cmp.rel_l2():.3g} > {REL_L2_TOL:g}"
