"""A video predictor in the shape of the official ``SAM2VideoPredictor``: click objects on some frames, track them.

  predictor = Sam2VideoPredictor.from_pretrained("facebook/sam2.1-hiera-tiny")
  state = predictor.init_state("video_dir/")              # a directory of <int>.jpg frames, or an array of frames
  frame_idx, obj_ids, masks = predictor.add_new_points_or_box(state, 0, obj_id=1, points=[[x, y]], labels=[1])
  for frame_idx, obj_ids, masks in predictor.propagate_in_video(state):
      ...                                                  # masks: (num_objects, 1, H, W) float32 logits

Same methods, arguments, defaults and results as the official predictor: ``add_new_points_or_box``,
``add_new_mask``, ``propagate_in_video`` (forward, or ``reverse=True``), ``clear_all_prompts_in_frame``,
``remove_object``, ``reset_state``; masks are logits at the video's resolution, NumPy float32, -1024 for an object
judged absent. Frames are loaded as the official loads them (PIL resize straight to S x S) and decoded lazily.

What differs, by design:
  - All objects of a frame go through one batched, jit-compiled step (``sam2_jax.tracking``) over a fixed-size
    memory bank; the object axis is padded to a bucket (``processing.prompts.TRACKING_BUCKETS``), so adding objects
    recompiles only when a bucket is outgrown.
    Prompted frames are computed per object, as in the official predictor, so results equal its per-object
    tracking.
  - The device state is fixed-size: all objects' memory bank (the 6 previous frames' memories and 15 pointers
    per object, plus the conditioning frames) is rebuilt from the host records at the start of each call.
  - ``keep_history=True`` (default): every tracked frame's output is kept, as the official keeps it, so that a
    correction click on a tracked frame and a propagation that starts inside tracked frames (again, in
    reverse, from a later frame) give the official result. The bulky part (the low-resolution logits, 256 KB,
    and the memory features, 512 KB in bfloat16, per object and frame at 1024 px) goes to an unlinked
    temporary file (``tracking.history``; ``history_dir`` picks its folder), so that host memory grows by the
    pointer and a ~100-byte handle, ~1 KB per object and frame, and the file by 0.75 MB per object and frame.
    Measured (``benchmarks/bench_video_memory.py``, one object over 10,000 frames, 128 px grids): arrays in
    host memory +1,024 bytes a frame, RSS 1150 MiB at frame 100 and 1192 MiB at 10,000 (+4.3 KiB a frame),
    the file +12.0 KiB a frame (the two arrays at 128 px: 786,432 bytes at 1024 px), the device's bank fixed
    (72 KiB at 128 px, ~3.7 MB per object at 1024 px); the README's "Video memory" has the table.
  - ``keep_history=False``: only what the bank holds is kept; memory and disk stay flat on any length (for
    unbounded live streams); a correction on a tracked frame then uses the conditioning frames and the bank
    only, and warns once that the result is not the official one.
  - Hole filling (``fill_hole_area``) runs on every platform (the official's needs CUDA).
  - Bad input raises before anything changes: the state is left as it was.
Not thread-safe, as the official's: give each thread its own state. The model and params may be shared.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np

from ...modeling.sam2_video_model import NO_OBJECT_SCORE, Sam2VideoModel
from ...processing.components import fill_holes_in_mask_scores
from ...processing.masks import apply_non_overlapping
from ...processing.prompts import bucket
from ...processing.video.frames import VideoFrames
from ...processing.video.mask_inputs import mask_prompt
from ...tracking.memory_bank import bucket_of
from ...tracking.records import NOT_TRACKED, FrameRecord, ObjectTrack
from ...tracking.steps import Tracker
from . import prompts as vp
from .propagation import VideoPropagation
from .state import VideoInferenceState


class Sam2VideoPredictor(VideoPropagation):
    """The official ``SAM2VideoPredictor``'s interface over ``Sam2VideoModel``; see the module docstring."""

    def __init__(
        self,
        model: Sam2VideoModel,
        params,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        keep_history: bool = True,
        memory_dtype=jnp.bfloat16,
        history_dir=None,
    ):
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model must be a Sam2VideoModel, got {type(model).__name__}")
        v = model.config.video_config
        if v.max_cond_frame_num != -1:
            raise ValueError("max_cond_frame_num other than -1 (every conditioning frame) is not supported")
        self.model, self.params = model, params
        self.config = model.config
        self.image_size = model.config.prompt_encoder_config.image_size
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.keep_history = keep_history
        self.history_dir = history_dir
        self.tracker = Tracker(model, memory_dtype)

    @classmethod
    def from_pretrained(
        cls,
        src,
        fill_hole_area: int | None = None,
        apply_postprocessing: bool = True,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
        keep_history: bool = True,
        memory_dtype=jnp.bfloat16,
        history_dir=None,
        dtype=jnp.float32,
        config=None,
        cache_dir=None,
        implementation="auto",
        precision: str | None = "highest",
        image_size: int | None = None,
    ) -> Sam2VideoPredictor:
        """Load a checkpoint (Hub id, transformers directory, official ``.pt`` or converted directory).

        ``apply_postprocessing`` as the official ``build_sam2_video_predictor``: True (default) turns on dynamic
        multimask via stability, binarised click masks for the memory encoder and hole filling of area 8; False
        turns them off. ``fill_hole_area`` overrides the area. ``config`` and ``image_size`` as ``sam2_jax.load``:
        a ``.pt`` trained at another size than 1024 px needs one."""
        from ...checkpoints.loading import load
        from ...utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype, config=config, cache_dir=cache_dir, implementation=implementation,
                             precision=precision, video=True, image_size=image_size)  # fmt: skip
        cfg = model.config
        cfg = dataclasses.replace(
            cfg,
            mask_decoder_config=dataclasses.replace(
                cfg.mask_decoder_config, dynamic_multimask_via_stability=apply_postprocessing
            ),
            video_config=dataclasses.replace(cfg.video_config, binarize_mask_from_pts_for_mem_enc=apply_postprocessing),
        )
        area = (8 if apply_postprocessing else 0) if fill_hole_area is None else fill_hole_area
        return cls(model.clone(config=cfg), params, area, non_overlap_masks, clear_non_cond_mem_around_input,
                   add_all_frames_to_correct_as_cond, keep_history, memory_dtype, history_dir)  # fmt: skip

    # ---- state ---------------------------------------------------------------------------------------------------
    def init_state(
        self, video_path, offload_video_to_cpu=False, offload_state_to_cpu=False, async_loading_frames=False
    ):
        """A new state for a directory of ``<int>.jpg`` frames, a video file (mp4, webm, avi...: PyAV, the
        ``video`` extra), an (N, H, W, 3) uint8 array, an iterator of frames or a ``VideoFrames`` (see
        ``VideoFrames.open``). The official offload / async options are accepted and have no effect: frames are
        decoded lazily on the host, and tracked frames' outputs go to a file (see ``keep_history``)."""
        frames = VideoFrames.open(video_path, self.image_size)
        if frames.image_size != self.image_size:
            raise ValueError(f"frames are prepared at {frames.image_size} px, the model takes {self.image_size} px")
        state = VideoInferenceState(frames, history_dir=self.history_dir)
        self._frame(state, 0)  # as the official: decode and encode frame 0 now
        return state

    def reset_state(self, inference_state: VideoInferenceState) -> None:
        """Remove every object, prompt and result (official ``reset_state``)."""
        state = vp.check_state(inference_state)
        state.obj_ids.clear()
        state.objects.clear()

    def _frame(self, state: VideoInferenceState, frame_idx: int):
        cache = state.features
        if frame_idx in cache:
            cache.move_to_end(frame_idx)
            return cache[frame_idx]
        pixels = jnp.asarray(state.frames.pixel_values(frame_idx))[None]
        feats = self.tracker.frame_features(self.params, pixels)
        cache[frame_idx] = feats
        while len(cache) > state.feature_cache_size:
            cache.popitem(last=False)
        return feats

    # ---- prompts -------------------------------------------------------------------------------------------------
    def add_new_points_or_box(
        self,
        inference_state,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
    ):
        """Clicks and / or a box for one object on one frame -> (frame_idx, obj_ids, masks (O, 1, H, W))."""
        state = vp.check_state(inference_state)
        t = state.frames.check_index(frame_idx)
        size = (state.video_height, state.video_width)
        coords, labs = vp.point_prompt(points, labels, box, clear_old_points, normalize_coords, size, self.image_size)
        snap = state.snapshot()
        try:
            o = self._object(state, obj_id)
            track = state.objects[o]
            if not clear_old_points and t in track.points:
                old_coords, old_labels = track.points[t]
                coords, labs = np.concatenate([old_coords, coords]), np.concatenate([old_labels, labs])
            track.points[t] = (coords, labs)
            track.masks.pop(t, None)
            initial, reverse, is_cond, prev = self._prompt_context(state, track, t)
            prev_mask = None if prev is None or prev.low_res_mask is None else prev.low_res_mask
            v = self.config.video_config
            n = len(labs)
            multimask = v.multimask_output_in_sam and (initial or v.multimask_output_for_tracking)
            multimask = bool(multimask and v.multimask_min_pt_num <= n <= v.multimask_max_pt_num)
            k = bucket(n)
            pad_c = np.zeros((1, k, 2), np.float32)
            pad_l = np.full((1, k), -1, np.int32)
            pad_m = np.zeros((1, k), bool)
            pad_c[0, :n], pad_l[0, :n], pad_m[0, :n] = coords, labs, True
            bank = None if initial else self._bank(state, [o], t, reverse)
            heads = self.tracker.prompt(
                self.params, bank, self._frame(state, t), t, reverse, state.num_frames, pad_c, pad_l, pad_m,
                None if prev_mask is None else prev_mask[None], initial=initial, multimask=multimask,
            )  # fmt: skip
            record = self._record(heads, 0)
            (track.temp_cond if is_cond else track.temp_non_cond)[t] = record
            return t, list(state.obj_ids), self._video_masks(state, t, is_cond)
        except BaseException:
            state.restore(snap)
            raise

    add_new_points = add_new_points_or_box  # the official's deprecated name

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        """A mask (H, W) for one object on one frame -> (frame_idx, obj_ids, masks (O, 1, H, W))."""
        state = vp.check_state(inference_state)
        t = state.frames.check_index(frame_idx)
        mask = mask_prompt(mask, self.image_size)
        snap = state.snapshot()
        try:
            o = self._object(state, obj_id)
            track = state.objects[o]
            track.masks[t] = mask
            track.points.pop(t, None)
            _, _, is_cond, _ = self._prompt_context(state, track, t)
            heads = self.tracker.mask_prompt(self.params, self._frame(state, t), mask[None])
            (track.temp_cond if is_cond else track.temp_non_cond)[t] = self._record(heads, 0)
            return t, list(state.obj_ids), self._video_masks(state, t, is_cond)
        except BaseException:
            state.restore(snap)
            raise

    def _object(self, state: VideoInferenceState, obj_id) -> int:
        o = state.obj_idx(obj_id)
        if o is None:
            vp.check_obj_id(obj_id)
            state.obj_ids.append(obj_id)
            state.objects.append(ObjectTrack(state.num_frames))
            o = len(state.objects) - 1
        return o

    def _prompt_context(self, state: VideoInferenceState, track: ObjectTrack, t: int):
        """(initial, reverse, is_cond, previous output) of a prompt on frame t, as the official decides them."""
        initial = track.tracked[t] == NOT_TRACKED
        reverse = bool(track.tracked[t] == 1)
        is_cond = bool(initial or self.add_all_frames_to_correct_as_cond)
        prev = track.output_at(t, is_cond)
        if not initial and prev is None and not self.keep_history and not state.warned_history:
            state.warned_history = True
            warnings.warn(
                f"frame {t} was tracked but its outputs were not kept (keep_history=False): this prompt uses the "
                "conditioning frames and the memory bank only; keep_history=True (the default) gives the official "
                "result",
                stacklevel=3,
            )
        return bool(initial), reverse, is_cond, prev

    def _record(self, heads, i: int) -> FrameRecord:
        low = np.asarray(heads.low_res_masks[i : i + 1], np.float32)
        if self.fill_hole_area > 0:
            low = fill_holes_in_mask_scores(low[:, None], self.fill_hole_area)[:, 0]
        return FrameRecord(low[0], np.asarray(heads.object_pointer[i], np.float32),
                           float(heads.object_score_logits[i, 0]))  # fmt: skip

    # ---- outputs -------------------------------------------------------------------------------------------------
    def _video_masks(self, state: VideoInferenceState, t: int, is_cond: bool) -> np.ndarray:
        """Official ``_consolidate_temp_output_across_obj(consolidate_at_video_res=True)`` + resizing."""
        lows = [None if (r := tr.output_at(t, is_cond)) is None else r.low_res_mask for tr in state.objects]
        return self._to_video(state, lows)

    def _to_video(self, state: VideoInferenceState, lows: list) -> np.ndarray:
        h, w = state.video_height, state.video_width
        out = np.full((len(lows), 1, h, w), NO_OBJECT_SCORE, np.float32)
        present = [i for i, x in enumerate(lows) if x is not None]
        if present:
            n = bucket_of(len(present))
            stack = np.zeros((n, *lows[present[0]].shape), np.float32)
            stack[: len(present)] = [lows[i] for i in present]
            out[present, 0] = np.asarray(self.tracker.to_video_resolution(stack, (h, w)))[: len(present)]
        if self.non_overlap_masks and len(lows) > 1:
            out = apply_non_overlapping(out)
        return out
