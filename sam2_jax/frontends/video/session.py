"""transformers' ``Sam2VideoModel`` interface over the jitted tracker: whole videos and live (streamed) frames.

  processor = Sam2VideoProcessor(image_size=S)
  model = Sam2VideoSessionModel.from_pretrained("facebook/sam2.1-hiera-tiny")
  session = processor.init_video_session(video=frames)            # or init_video_session() to stream
  processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[x, y]]]],
                                            input_labels=[[[1]]])
  out = model(session, frame_idx=0)                               # streaming: model(session, frame=pixels)
  for out in model.propagate_in_video_iterator(session): ...

``model(inference_session, frame_idx=None, frame=None, reverse=False)`` -> ``Sam2VideoSegmentationOutput``:
object_ids, pred_masks (O, 1, S/4, S/4) float32 low-resolution logits (-1024 for absent objects; upsample with
``processor.post_process_masks``), object_score_logits (O,), frame_idx, latency_s (the call's wall time;
running totals in ``session.stats``). ``frame`` (S, S, 3) or (1, S, S, 3) channels-last pixels (or transformers'
channels-first (3, S, S)) is appended to a session made without a video. ``propagate_in_video_iterator(session,
start_frame_idx=None, max_frame_num_to_track=None, reverse=False)`` yields one output per frame.

Semantics are transformers' (not the official predictor's): on a call, objects with new inputs on the frame are
prompted one by one (an initial conditioning frame if the frame was not tracked for the object, else a
correction stored as a tracked frame, without the previous mask logits; a later propagation over that frame
tracks it again, as transformers does); objects with a conditioning output there return it; every other object is
tracked from its memories. All memories made by a call are encoded together, binarised when any object of the
call was prompted (a mask-prompted object from its mask at S px). Clicks of objects added in one call are padded
to the same count with label -10, which counts for the multimask choice. When streaming, pointer positions are
normalised by ``max_object_pointers_in_encoder`` as transformers does.

Underneath: one batched, compiled ``Tracker.track`` step for all tracked objects (padded to ``TRACKING_BUCKETS``),
over a ``MemoryBank`` kept on the device between calls while frames follow one another (rebuilt from the
objects' records otherwise). Memory is flat: streamed frames are not kept (only the features of the last frames),
and with ``keep_history=False`` (default) an object keeps the tracked frames its bank holds. ``keep_history=True``
keeps every tracked frame's memory on the host (~0.8 MB per object and frame at 1024 px), which a correction on a
tracked frame, or a propagation started inside tracked frames, needs to read what transformers reads.

Not followed, on purpose: transformers' ``forward`` sets ``reverse=False`` for the rest of its object loop once an
object has an initial conditioning frame (ours keeps the call's ``reverse`` for the others); an object flagged
with new inputs but none on the called frame is tracked from its memories here (transformers runs its decoder
with no prompt on a frame it may then store as conditioning); ``run_mem_encoder`` is not offered; a frame of a
streaming session can be called again by ``frame_idx`` only while its features are cached.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ...modeling.sam2_video_model import MASK_AS_OUTPUT_BIAS, MASK_AS_OUTPUT_SCALE, Sam2VideoModel
from ...processing.prompts import bucket
from ...tracking.memory_bank import bucket_of
from ...tracking.session_state import (
    FrameRecord,
    Sam2VideoInferenceSession,
    Sam2VideoSegmentationOutput,
    check_session,
    frame_pixels,
)
from ...tracking.steps import Tracker
from .propagation import VideoPropagation

STREAM_NUM_FRAMES = 2**30  # streaming: no frame count caps the object pointers (transformers' streaming=True)


class Sam2VideoSessionModel:
    """transformers' ``Sam2VideoModel`` calls over ``sam2_jax.tracking``; see the module docstring."""

    # the predictor's bank building, shared (they read config, tracker and keep_history)
    _bank = VideoPropagation._bank
    _keep_bank = VideoPropagation._keep_bank

    def __init__(self, model: Sam2VideoModel, params, keep_history: bool = False, memory_dtype=jnp.bfloat16):
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model must be a Sam2VideoModel, got {type(model).__name__}")
        cfg = model.config
        if cfg.video_config.max_cond_frame_num != -1:
            raise ValueError("max_cond_frame_num other than -1 (every conditioning frame) is not supported")
        # transformers always binarises the masks of prompted frames for the memory encoder
        cfg = dataclasses.replace(
            cfg, video_config=dataclasses.replace(cfg.video_config, binarize_mask_from_pts_for_mem_enc=True)
        )
        self.model, self.params, self.config = model.clone(config=cfg), params, cfg
        self.image_size = cfg.prompt_encoder_config.image_size
        self.keep_history = bool(keep_history)
        self.tracker = Tracker(self.model, memory_dtype)
        md = self.tracker.memory_dtype

        def encode_high(module, frame, high, scores):  # (O, S, S) logits at the model's resolution
            current = jnp.broadcast_to(frame.features, (high.shape[0], *frame.features.shape[1:]))
            return module.encode_new_memory(current, high, scores, True)[0].astype(md)

        self._encode_high = jax.jit(lambda p, *a: self.model.apply({"params": p}, *a, method=encode_high))

    @classmethod
    def from_pretrained(
        cls,
        src,
        keep_history: bool = False,
        memory_dtype=jnp.bfloat16,
        dtype=jnp.float32,
        config=None,
        cache_dir=None,
        implementation="auto",
        precision: str | None = "highest",
    ) -> Sam2VideoSessionModel:
        """Load a checkpoint (Hub id, transformers directory, official ``.pt`` or converted directory)."""
        from ...checkpoints.loading import load
        from ...utils.compile_cache import enable_compile_cache

        enable_compile_cache()
        model, params = load(src, dtype, config=config, cache_dir=cache_dir, implementation=implementation,
                             precision=precision, video=True)  # fmt: skip
        return cls(model, params, keep_history, memory_dtype)

    # ---- frames and the bank ------------------------------------------------------------------------------------
    def _features(self, s: Sam2VideoInferenceSession, t: int, pixels=None):
        cache = s.features
        if pixels is None and t in cache:
            cache.move_to_end(t)
            return cache[t]
        if pixels is None:
            if s.frames is None:
                raise ValueError(f"frame {t} is no longer held: a streaming session keeps the last {len(cache)} frames")
            pixels = s.frames.pixel_values(t)
        feats = self.tracker.frame_features(self.params, jnp.asarray(pixels)[None])
        cache[t] = feats
        cache.move_to_end(t)
        while len(cache) > s.feature_cache_size:
            cache.popitem(last=False)
        return feats

    def _sync_bank(self, s: Sam2VideoInferenceSession) -> None:
        """Hand the device bank's tracked frames back to the objects' records and drop it."""
        if s.bank is not None:
            (n, _), _, bank = s.bank
            self._keep_bank(s, list(range(n)), bank)
            s.bank = None

    def _tracking_bank(self, s: Sam2VideoInferenceSession, t: int, reverse: bool):
        key = (len(s.objects), reverse)
        if s.bank is not None and s.bank[0] == key and t == s.bank[1] + (-1 if reverse else 1):
            return s.bank[2]
        self._sync_bank(s)
        return self._bank(s, list(range(len(s.objects))), t, reverse)

    # ---- one frame ----------------------------------------------------------------------------------------------
    def __call__(self, inference_session, frame_idx=None, frame=None, reverse=False) -> Sam2VideoSegmentationOutput:
        start = time.perf_counter()
        s = check_session(inference_session)
        if s.get_obj_num() == 0:
            raise ValueError("No objects are provided for tracking; please add inputs first.")
        reverse = bool(reverse)
        if frame is not None:
            if not s.streaming:
                raise ValueError("frame= is for a session made without a video (init_video_session()); use frame_idx")
            t = s.streamed_frames if frame_idx is None else s.check_frame(frame_idx)
            feats = self._features(s, t, frame_pixels(frame, self.image_size))
            s.streamed_frames = max(s.streamed_frames, t + 1)
            num_frames = STREAM_NUM_FRAMES
        else:
            if frame_idx is None:
                raise ValueError("frame_idx is required (or frame= with the pixels of a new frame when streaming)")
            t = s.check_frame(frame_idx)
            if s.streaming and t >= s.streamed_frames:
                raise ValueError(f"frame {t} has not been streamed yet: pass its pixels with frame=")
            feats = self._features(s, t)
            num_frames = s.num_frames
        pred, scores = self._step(s, t, reverse, feats, num_frames)
        out = Sam2VideoSegmentationOutput(list(s.obj_ids), pred, scores, t, 0.0)
        out.latency_s = time.perf_counter() - start
        s.record_latency(out.latency_s)
        return out

    def _step(self, s: Sam2VideoInferenceSession, t: int, reverse: bool, feats, num_frames: int):
        n = s.get_obj_num()
        new = set(s.obj_with_new_inputs)
        lows, outs, reused, prompted, tracked = [None] * n, [None] * n, [], [], []
        for o, (obj_id, track) in enumerate(zip(s.obj_ids, s.objects, strict=True)):
            if obj_id in new and (t in track.points or t in track.masks):
                prompted.append(o)
            elif obj_id not in new and t in track.cond:
                reused.append(o)
            else:
                tracked.append(o)
        for o in tracked:
            if not s.objects[o].cond:
                raise ValueError(
                    f"object {s.obj_ids[o]} has no conditioning frame to track from; add inputs on a frame and call "
                    "the model on it first"
                )
        if prompted:
            self._sync_bank(s)  # prompted frames read and write the objects' records
        if tracked:
            bank = self._tracking_bank(s, t, reverse)
            active = np.zeros(bank.num_objects, bool)
            active[tracked] = True
            v = self.config.video_config
            multimask = bool(v.multimask_output_in_sam and v.multimask_output_for_tracking
                             and v.multimask_min_pt_num <= 0 <= v.multimask_max_pt_num)  # fmt: skip
            bank, tr = self.tracker.track(self.params, bank, feats, t, reverse, num_frames, active, multimask=multimask)
            s.bank = ((n, reverse), t, bank)
            low = np.asarray(tr.low_res_masks[:n], np.float32)
            ptr = np.asarray(tr.object_pointer[:n], np.float32)
            score = np.asarray(tr.object_score_logits[:n, 0], np.float32)
            mem = np.asarray(tr.memory_features[:n]) if self.keep_history and not prompted else None
            for o in tracked:
                outs[o] = FrameRecord(low[o], ptr[o], float(score[o]), None if mem is None else mem[o])
        elif s.bank is not None and s.bank[0] == (n, reverse) and t == s.bank[1] + (-1 if reverse else 1):
            s.bank = (s.bank[0], t, s.bank[2])  # nothing written at t: the bank still follows the frames
        for o in prompted:
            outs[o] = self._prompt(s, o, t, reverse, feats, num_frames)
        if prompted:
            masked = {o for o in prompted if t in s.objects[o].masks}
            self._encode(s, t, feats, prompted + tracked, outs, masked)
        for o in prompted + tracked:
            track, rec = s.objects[o], outs[o]
            initial = o in prompted and t not in s.tracked[o]
            if initial:
                track.cond[t] = rec
                track.non_cond.pop(t, None)
            else:
                s.tracked[o].add(t)
                if rec.features is not None:
                    track.non_cond[t] = rec
        for o in reused:
            outs[o] = s.objects[o].cond[t]
        done = {s.obj_ids[o] for o in prompted}
        s.obj_with_new_inputs = [i for i in s.obj_with_new_inputs if i not in done]
        for o in range(n):
            lows[o] = outs[o].low_res_mask
        pred = np.stack(lows)[:, None].astype(np.float32)
        return pred, np.asarray([outs[o].object_score for o in range(n)], np.float32)

    def _prompt(self, s: Sam2VideoInferenceSession, o: int, t: int, reverse: bool, feats, num_frames: int):
        """One object's inputs on frame t (transformers runs them object by object)."""
        track = s.objects[o]
        if t in track.masks:
            heads = self.tracker.mask_prompt(self.params, feats, track.masks[t][None])
        else:
            coords, labels = track.points[t]
            initial = t not in s.tracked[o]
            v = self.config.video_config
            n = len(labels)
            multimask = bool(v.multimask_output_in_sam and (initial or v.multimask_output_for_tracking)
                             and v.multimask_min_pt_num <= n <= v.multimask_max_pt_num)  # fmt: skip
            k = bucket(max(n, 1))
            pad_c = np.zeros((1, k, 2), np.float32)
            pad_l = np.full((1, k), -1, np.int32)
            pad_m = np.zeros((1, k), bool)
            pad_c[0, :n], pad_l[0, :n], pad_m[0, :n] = coords, labels, True
            if not initial and not track.cond:
                raise ValueError(f"object {s.obj_ids[o]} has no conditioning frame; its first inputs must be on an "
                                 "untracked frame")  # fmt: skip
            bank = None if initial else self._bank(s, [o], t, reverse)
            rev = False if initial else reverse
            heads = self.tracker.prompt(self.params, bank, feats, t, rev, num_frames, pad_c, pad_l, pad_m, None,
                                        initial=initial, multimask=multimask)  # fmt: skip
        return FrameRecord(np.asarray(heads.low_res_masks[0], np.float32), np.asarray(heads.object_pointer[0],
                           np.float32), float(heads.object_score_logits[0, 0]))  # fmt: skip

    def _encode(self, s: Sam2VideoInferenceSession, t: int, feats, objs: list[int], outs: list, masked) -> None:
        """Memories of every object run on a prompted frame, binarised (transformers' batched memory encoding);
        an object given a mask is encoded from the mask itself, the others from their upsampled logits."""
        k = bucket_of(len(objs))
        lows = np.zeros((k, *outs[objs[0]].low_res_mask.shape), np.float32)
        scores = np.zeros((k, 1), np.float32)
        for i, o in enumerate(objs):
            lows[i], scores[i, 0] = outs[o].low_res_mask, outs[o].object_score
        if masked:
            high = np.array(self.tracker.to_video_resolution(lows, (self.image_size, self.image_size)))
            for i, o in enumerate(objs):
                if o in masked:
                    high[i] = s.objects[o].masks[t] * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
            mem = np.asarray(self._encode_high(self.params, feats, high, scores))
        else:
            mem = np.asarray(self.tracker.encode(self.params, feats, lows, scores, True))
        for i, o in enumerate(objs):
            outs[o].features = mem[i]
        self._sync_bank(s)  # the tracked objects' step wrote sigmoid memories at t: their records replace them

    # ---- a whole video ------------------------------------------------------------------------------------------
    def propagate_in_video_iterator(
        self, inference_session, start_frame_idx=None, max_frame_num_to_track=None, reverse=False,
        show_progress_bar=False,
    ):  # fmt: skip
        """One ``Sam2VideoSegmentationOutput`` per frame, as transformers orders them (``show_progress_bar`` is
        accepted and ignored). The order is fixed when called; frames are computed as the iterator is consumed."""
        s = check_session(inference_session)
        if s.frames is None:
            raise ValueError("propagate_in_video_iterator needs a session made with a video; when streaming, call "
                             "model(session, frame=pixels) for each frame")  # fmt: skip
        if start_frame_idx is None:
            starts = [t for track in s.objects for t in track.cond]
            if not starts:
                raise ValueError("Cannot determine the starting frame index; please specify it manually, or run "
                                 "inference on a frame with inputs first.")  # fmt: skip
            start_frame_idx = min(starts)
        start = s.check_frame(start_frame_idx, "start_frame_idx")
        n = s.num_frames
        if max_frame_num_to_track is None:
            count = n
        elif (
            isinstance(max_frame_num_to_track, bool)
            or not isinstance(max_frame_num_to_track, int)
            or (max_frame_num_to_track < 0)
        ):
            raise ValueError(f"max_frame_num_to_track must be a non-negative int, got {max_frame_num_to_track!r}")
        else:
            count = max_frame_num_to_track
        if reverse:
            order = range(start, max(start - count, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + count, n - 1) + 1)
        return (self(s, frame_idx=t, reverse=reverse) for t in list(order))
