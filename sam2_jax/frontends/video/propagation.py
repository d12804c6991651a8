"""The video predictor's tracking half: the memory bank built from the state, propagation, and removals.

``VideoPropagation`` is a mixin of ``Sam2VideoPredictor`` (which provides ``tracker``, ``params``, ``config``,
``keep_history``, ``_frame``, ``_record`` and ``_to_video``). Official methods, same arguments and results:
  ``propagate_in_video_preflight(state)``: encode the memories of prompted frames (``is_mask_from_pts=True``)
      and move them to the object's conditioning (or tracked) outputs.
  ``propagate_in_video(state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False)`` -> iterator of
      (frame_idx, obj_ids, masks (O, 1, H, W) float32 logits). Arguments are checked and the preflight runs when
      it is called; frames are computed as the iterator is consumed.
  ``clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=True)``, ``remove_object(state, obj_id,
      strict=False, need_output=True)``.
One batched ``Tracker.track`` step per frame serves every object; for an object whose conditioning frame it is,
the stored output is returned instead (as the official does) and nothing is written to its memory.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

from ...processing.components import fill_holes_in_mask_scores
from ...tracking.memory_bank import MemoryBank, bank_sizes, bucket_of, empty_bank
from ...tracking.records import NOT_TRACKED, FrameRecord
from .prompts import check_state, unknown_object
from .state import VideoInferenceState


class VideoPropagation:
    """Tracking methods of ``Sam2VideoPredictor``; see the module docstring."""

    # ---- the memory bank -----------------------------------------------------------------------------------------
    def _bank(self, state: VideoInferenceState, objs: list[int], t: int, reverse: bool) -> MemoryBank:
        """A device bank for tracking ``objs`` from frame t: their conditioning frames and the tracked frames just
        behind t in the direction of tracking (the official ``output_dict`` entries that frame t can select)."""
        r, p, _, _, _ = bank_sizes(self.config)
        kc = bucket_of(max([1] + [len(state.objects[o].cond) for o in objs]))
        bank = empty_bank(self.config, bucket_of(len(objs)), kc, self.tracker.memory_dtype)
        sign = -1 if reverse else 1
        for i, o in enumerate(objs):
            track = state.objects[o]
            for k, f in enumerate(sorted(track.cond)):
                rec = track.cond[f]
                bank.cond_frames[i, k] = f
                bank.cond_features[i, k], bank.cond_pointers[i, k] = rec.features, rec.pointer
            behind = sorted(((t - f) * sign, f) for f in track.non_cond if (t - f) * sign >= 1)
            recent = [f for d, f in behind if d <= r and track.non_cond[f].has_features]
            for k, f in enumerate(recent[:r]):
                bank.recent_frames[i, k], bank.recent_features[i, k] = f, track.non_cond[f].features
            pointers = [f for d, f in behind if d <= p and track.non_cond[f].pointer is not None]
            for k, f in enumerate(pointers[:p]):
                bank.pointer_frames[i, k], bank.pointers[i, k] = f, track.non_cond[f].pointer
        return jax.device_put(bank)

    def _keep_bank(self, state: VideoInferenceState, objs: list[int], bank: MemoryBank) -> None:
        """Without ``keep_history``, the tracked frames an object remembers are those its bank holds."""
        if self.keep_history:
            return
        host = jax.device_get(bank)
        for i, o in enumerate(objs):
            records = {}
            for f, feats in zip(host.recent_frames[i], host.recent_features[i], strict=True):
                if f >= 0:
                    records[int(f)] = FrameRecord(None, None, None, feats)
            for f, ptr in zip(host.pointer_frames[i], host.pointers[i], strict=True):
                if f >= 0:
                    records.setdefault(int(f), FrameRecord(None, None, None)).pointer = ptr
            state.objects[o].non_cond = records

    def _clear_around(self, state: VideoInferenceState, t: int, o: int) -> None:
        """Official ``clear_non_cond_mem_around_input``: forget tracked frames within num_maskmem of a prompt."""
        n = self.config.video_config.num_maskmem
        non_cond = state.objects[o].non_cond
        for f in range(t - n, t + n + 1):
            non_cond.pop(f, None)

    # ---- propagation ---------------------------------------------------------------------------------------------
    def propagate_in_video_preflight(self, inference_state) -> None:
        state = check_state(inference_state)
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for obj_id, track in zip(state.obj_ids, state.objects, strict=True):
            if not track.cond and not track.temp_cond:
                raise RuntimeError(
                    f"No input points or masks are provided for object id {obj_id}; please add inputs first."
                )
        snap = state.snapshot()
        try:
            for o, track in enumerate(state.objects):
                for temp, dest in ((track.temp_non_cond, track.non_cond), (track.temp_cond, track.cond)):
                    for t, rec in temp.items():
                        if not rec.has_features:
                            scores = np.asarray([[rec.object_score]], np.float32)
                            feats = self.tracker.encode(self.params, self._frame(state, t), rec.low_res_mask[None],
                                                        scores, True)  # fmt: skip
                            rec.features = np.asarray(feats[0])
                        dest[t] = state.history.spill(rec) if self.keep_history and dest is track.non_cond else rec
                        if self.clear_non_cond_mem_around_input:
                            self._clear_around(state, t, o)
                    temp.clear()
                for t in track.cond:
                    track.non_cond.pop(t, None)
        except BaseException:
            state.restore(snap)
            raise

    def propagate_in_video(self, inference_state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        state = check_state(inference_state)
        if start_frame_idx is not None:
            start_frame_idx = state.frames.check_index(start_frame_idx)
        if max_frame_num_to_track is not None and (
            isinstance(max_frame_num_to_track, bool)
            or not isinstance(max_frame_num_to_track, numbers.Integral)
            or max_frame_num_to_track < 0
        ):
            raise ValueError(f"max_frame_num_to_track must be a non-negative int, got {max_frame_num_to_track!r}")
        self.propagate_in_video_preflight(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for track in state.objects for t in track.cond)
        count = n if max_frame_num_to_track is None else int(max_frame_num_to_track)
        if reverse:
            end = max(start_frame_idx - count, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + count, n - 1)
            order = range(start_frame_idx, end + 1)
        return self._propagate(state, list(order), bool(reverse))

    def _propagate(self, state: VideoInferenceState, order: list[int], reverse: bool):
        v = self.config.video_config
        multimask = bool(
            v.multimask_output_in_sam
            and v.multimask_output_for_tracking
            and v.multimask_min_pt_num <= 0 <= v.multimask_max_pt_num
        )
        objs = list(range(len(state.objects)))
        bank = None
        try:
            for t in order:
                active = [t not in state.objects[o].cond for o in objs]
                lows = [None] * len(objs)
                if any(active):
                    if bank is None:
                        bank = self._bank(state, objs, t, reverse)
                    act = np.zeros(bank.num_objects, bool)
                    act[: len(objs)] = active
                    bank, out = self.tracker.track(self.params, bank, self._frame(state, t), t, reverse,
                                                   state.num_frames, act, multimask=multimask)  # fmt: skip
                    lows = self._tracked_outputs(state, objs, active, t, out)
                for i, o in enumerate(objs):
                    track = state.objects[o]
                    if not active[i]:
                        lows[i] = track.cond[t].low_res_mask
                        if self.clear_non_cond_mem_around_input and bank is not None:
                            self._keep_bank(state, objs, bank)
                            self._clear_around(state, t, o)
                            bank = None  # rebuilt from the records at the next tracked frame
                    track.tracked[t] = 1 if reverse else 0
                yield t, list(state.obj_ids), self._to_video(state, lows)
        finally:
            if bank is not None:
                self._keep_bank(state, objs, bank)

    def _tracked_outputs(self, state, objs, active, t, out) -> list:
        n = len(objs)
        low = np.asarray(out.low_res_masks[:n], np.float32)
        if self.fill_hole_area > 0:
            low = fill_holes_in_mask_scores(low[:, None], self.fill_hole_area)[:, 0]
        if self.keep_history:
            pointers = np.asarray(out.object_pointer[:n], np.float32)
            scores = np.asarray(out.object_score_logits[:n, 0], np.float32)
            feats = np.asarray(out.memory_features[:n])
            for i, o in enumerate(objs):
                if active[i]:
                    rec = FrameRecord(low[i], pointers[i], float(scores[i]), feats[i])
                    state.objects[o].non_cond[t] = state.history.spill(rec)
        return [low[i] if active[i] else None for i in range(n)]

    # ---- removing prompts and objects ----------------------------------------------------------------------------
    def clear_all_prompts_in_frame(self, inference_state, frame_idx, obj_id, need_output=True):
        state = check_state(inference_state)
        t = state.frames.check_index(frame_idx)
        o = state.obj_idx(obj_id)
        if o is None:
            raise unknown_object(state, obj_id)
        track = state.objects[o]
        track.points.pop(t, None)
        track.masks.pop(t, None)
        track.temp_cond.pop(t, None)
        track.temp_non_cond.pop(t, None)
        out = track.cond.pop(t, None)
        if out is not None:
            track.non_cond[t] = out
            track.tracked[t] = NOT_TRACKED
        if not need_output:
            return None
        is_cond = any(t in x.temp_cond for x in state.objects)
        return t, list(state.obj_ids), self._video_masks(state, t, is_cond)

    def remove_object(self, inference_state, obj_id, strict=False, need_output=True):
        state = check_state(inference_state)
        o = state.obj_idx(obj_id)
        if o is None:
            if not strict:
                return list(state.obj_ids), []
            raise RuntimeError(f"Cannot remove object id {obj_id} as it doesn't exist. All existing object ids: "
                               f"{state.obj_ids}.")  # fmt: skip
        if len(state.obj_ids) == 1:
            self.reset_state(state)
            return list(state.obj_ids), []
        frames = sorted(set(state.objects[o].points) | set(state.objects[o].masks))
        for t in frames:
            self.clear_all_prompts_in_frame(state, t, obj_id, need_output=False)
        del state.obj_ids[o], state.objects[o]
        updated = []
        if need_output:
            for t in frames:
                is_cond = any(t in x.temp_cond for x in state.objects)
                updated.append((t, self._video_masks(state, t, is_cond)))
        return list(state.obj_ids), updated
