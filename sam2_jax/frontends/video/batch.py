"""Several videos tracked at once across devices: ``BatchSegmenter``'s data parallelism, for video.

  batch = VideoBatchTracker(predictor)                     # a Sam2VideoPredictor; mesh: all devices, axis "data"
  states = batch.prepare(videos, prompts)                  # per video: init_state + its prompts, on the host
  for step in batch.propagate(states):                     # or batch.track(videos, prompts)
      for v, result in enumerate(step):                    # one entry per video; None once that video is done
          frame_idx, obj_ids, masks = result               # masks (O_v, 1, H_v, W_v) float32 logits

In:  ``videos``: per video anything ``Sam2VideoPredictor.init_state`` accepts (a ``<int>.jpg`` directory, an
     (N, H, W, 3) uint8 array, ``VideoFrames``) or an already prompted ``VideoInferenceState``; ``prompts``: per
     video a list of dicts ``{"frame_idx", "obj_id"}`` plus ``"points"`` / ``"labels"`` / ``"box"`` (optionally
     ``"clear_old_points"``, ``"normalize_coords"``) for ``add_new_points_or_box``, or ``"mask"`` (H, W) for
     ``add_new_mask``. ``propagate``'s ``start_frame_idx``, ``max_frame_num_to_track`` and ``reverse`` are one value
     for every video or a list with one per video, as ``propagate_in_video`` takes them.
Out: step k gives each video its k-th frame of ``propagate_in_video(state, ...)``: the same (frame_idx, obj_ids,
     masks). Videos may differ in length, start frame, direction, object count and resolution.

Prompts go through the predictor, one video after another (prompted frames only). Propagation then runs all
videos together: their banks (``_bank``, padded to one object and one conditioning bucket) are stacked along a
leading video axis, sharded over the mesh's "data" axis (the video count padded to divide it; padding rows are
inactive), and each frame step is one jitted ``vmap`` of frame features + ``tracking.steps.track_step`` over that axis,
params replicated on the devices once. A video's objects on their conditioning frames, and videos not yet started
or finished, are inactive: their bank rows are left as they were and their outputs dropped. At the end (also
when the iterator is closed early) each video's bank is written back into its state, as ``propagate_in_video``
does, so later calls on one state continue from it. One compile serves every step of every batch with the same
video padding, object bucket and conditioning bucket.

Multi-host: after ``jax.distributed.initialize()`` the default mesh spans every host's devices. Every host
calls with the same videos and prompts and runs the prompt phase for all of them. Everything sent to the devices
(params, banks, per-step frames and indices) goes through ``jax.make_array_from_callback``: each host sends only
its own devices' parts (and decodes only their frames). The outputs, and at the end the banks, are all-gathered
(``process_allgather``), so every host yields every video's masks and updates every state. Checked by hand with
two CPU processes of 2 devices each (gloo collectives), not part of the test suite.
Not supported: ``clear_non_cond_mem_around_input=True``. Not thread-safe (the states are mutated).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ...modeling.sam2_video_model import Sam2VideoModel
from ...tracking.memory_bank import MemoryBank, bucket_of, empty_bank
from ...tracking.steps import TrackOutput, track_step
from .predictor import Sam2VideoPredictor
from .state import VideoInferenceState

POINT_KEYS = ("points", "labels", "box", "clear_old_points", "normalize_coords")


def _video_step(model, memory_dtype, multimask, params, bank, pixels, frame_idx, reverse, num_frames, active):
    """One frame step of V videos: bank (V, O, ...), pixels (V, 1, S, S, 3), frame_idx / reverse / num_frames (V,),
    active (V, O) -> (bank, ``TrackOutput`` with a leading V axis)."""

    def one(bank, pixels, t, rev, n, act):
        frame = model.apply({"params": params}, pixels, method=Sam2VideoModel.frame_features)
        return model.apply({"params": params}, bank, frame, t, rev, n, act, multimask, memory_dtype, method=track_step)

    return jax.vmap(one)(bank, pixels, frame_idx, reverse, num_frames, active)


def _per_video(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries for {n} videos")
        return list(value)
    return [value] * n


def _in_video(err: Exception, where: str) -> Exception:
    """The same kind of error with the video (and prompt) it concerns in front of its message."""
    msg = err.args[0] if len(err.args) == 1 else str(err)
    try:
        return type(err)(f"{where}: {msg}")
    except Exception:
        return RuntimeError(f"{where}: {msg}")


def _order(state: VideoInferenceState, start, count, reverse: bool) -> list[int]:
    """The frames ``propagate_in_video`` visits (its arguments already checked)."""
    n = state.num_frames
    if start is None:
        start = min(t for track in state.objects for t in track.cond)
    count = n if count is None else int(count)
    if reverse:
        return list(range(start, max(start - count, 0) - 1, -1)) if start > 0 else []
    return list(range(start, min(start + count, n - 1) + 1))


class VideoBatchTracker:
    """Propagate the prompts of several videos together, sharded over a mesh; see the module docstring."""

    def __init__(self, predictor: Sam2VideoPredictor, mesh: Mesh | None = None):
        if not isinstance(predictor, Sam2VideoPredictor):
            raise TypeError(f"predictor must be a Sam2VideoPredictor, got {type(predictor).__name__}")
        if predictor.clear_non_cond_mem_around_input:
            raise ValueError("clear_non_cond_mem_around_input=True is not supported by VideoBatchTracker")
        self.predictor = predictor
        self.mesh = Mesh(np.array(jax.devices()), ("data",)) if mesh is None else mesh
        if "data" not in self.mesh.axis_names:
            raise ValueError(f"the mesh needs a 'data' axis, it has {self.mesh.axis_names}")
        self._data = NamedSharding(self.mesh, P("data"))
        replicated = NamedSharding(self.mesh, P())
        self.params = jax.tree_util.tree_map(lambda x: self._put(x, replicated), predictor.params)  # sent once
        v = predictor.config.video_config
        multimask = bool(
            v.multimask_output_in_sam
            and v.multimask_output_for_tracking
            and v.multimask_min_pt_num <= 0 <= v.multimask_max_pt_num
        )  # as propagate_in_video decides it
        step = functools.partial(_video_step, predictor.model, predictor.tracker.memory_dtype, multimask)
        self.step = jax.jit(step, out_shardings=self._data)

    @property
    def num_shards(self) -> int:
        return self.mesh.shape["data"]

    # ---- prompts (host, per video) -------------------------------------------------------------------------------
    def prepare(self, videos, prompts) -> list[VideoInferenceState]:
        """A state per video with its prompts added (``init_state`` unless a state is given)."""
        videos, prompts = list(videos), list(prompts)
        if len(prompts) != len(videos):
            raise ValueError(f"{len(prompts)} prompt lists for {len(videos)} videos: give one list per video")
        states = []
        for v, (video, plist) in enumerate(zip(videos, prompts, strict=True)):
            try:
                state = video if isinstance(video, VideoInferenceState) else self.predictor.init_state(video)
            except (ValueError, TypeError, OSError) as err:
                raise _in_video(err, f"video {v}") from err
            for i, prompt in enumerate(plist):
                try:
                    self._add(state, prompt)
                except (ValueError, TypeError, IndexError, KeyError, RuntimeError) as err:
                    raise _in_video(err, f"video {v}, prompt {i}") from err
            states.append(state)
        return states

    def _add(self, state: VideoInferenceState, prompt) -> None:
        if not isinstance(prompt, dict):
            raise TypeError(f"a prompt is a dict, got {type(prompt).__name__}")
        missing = {"frame_idx", "obj_id"} - set(prompt)
        unknown = set(prompt) - {"frame_idx", "obj_id", "mask", *POINT_KEYS}
        if missing or unknown:
            raise ValueError(f"prompt keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        t, obj_id = prompt["frame_idx"], prompt["obj_id"]
        if "mask" in prompt:
            if set(prompt) & set(POINT_KEYS):
                raise ValueError("a prompt has either a mask or points / a box, not both")
            self.predictor.add_new_mask(state, t, obj_id, prompt["mask"])
        else:
            self.predictor.add_new_points_or_box(state, t, obj_id, **{k: prompt[k] for k in POINT_KEYS if k in prompt})

    def track(self, videos, prompts, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        """``propagate(prepare(videos, prompts), ...)``; pass states to ``propagate`` to keep them."""
        videos = list(videos)
        for value, name in ((start_frame_idx, "start_frame_idx"), (max_frame_num_to_track, "max_frame_num_to_track"),
                            (reverse, "reverse")):  # fmt: skip
            _per_video(value, len(videos), name)  # before any work
        return self.propagate(self.prepare(videos, prompts), start_frame_idx, max_frame_num_to_track, reverse)

    # ---- propagation (devices, all videos at once) ---------------------------------------------------------------
    def propagate(self, states, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        """Iterator over frame steps; step k is a list with, per video, its k-th (frame_idx, obj_ids, masks) of
        ``propagate_in_video`` or None when it has no k-th frame. Arguments are checked, and the preflight runs,
        when it is called."""
        states = list(states)
        n = len(states)
        if n == 0:
            raise ValueError("no videos to track")
        if len({id(s) for s in states}) != n:
            raise ValueError("the same state is given twice")
        starts = _per_video(start_frame_idx, n, "start_frame_idx")
        counts = _per_video(max_frame_num_to_track, n, "max_frame_num_to_track")
        revs = _per_video(reverse, n, "reverse")
        orders = []
        for v, state in enumerate(states):
            try:
                self.predictor.propagate_in_video(state, starts[v], counts[v], revs[v]).close()  # checks + preflight
                start = None if starts[v] is None else state.frames.check_index(starts[v])
            except (ValueError, TypeError, IndexError, RuntimeError) as err:
                raise _in_video(err, f"video {v}") from err
            orders.append(_order(state, start, counts[v], bool(revs[v])))
        return self._run(states, orders, [bool(r) for r in revs])

    def _put(self, x, sharding=None) -> jax.Array:
        """A host array (the same on every host) onto the devices, each host sending only its devices' parts."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding or self._data, lambda index: x[index])

    def _gather(self, x):
        if jax.process_count() > 1:  # rows live on every host's devices: every host gets all of them
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(x, tiled=True)
        return jax.device_get(x)

    def _banks(self, states, orders, reverse, first) -> MemoryBank:
        """(V_pad, O, ...) host bank: each video's ``_bank`` at its first tracked frame, padded to shared buckets."""
        pred = self.predictor
        v_pad = -(-len(states) // self.num_shards) * self.num_shards
        o = bucket_of(max(len(s.objects) for s in states))
        kc = bucket_of(max([1] + [len(tr.cond) for s in states for tr in s.objects]))
        rows = [empty_bank(pred.config, o, kc, pred.tracker.memory_dtype) for _ in range(v_pad)]
        for v, state in enumerate(states):
            if first[v] is not None:
                objs = list(range(len(state.objects)))
                own = jax.device_get(pred._bank(state, objs, orders[v][first[v]], reverse[v]))
                for name, dest in vars(rows[v]).items():
                    src = getattr(own, name)
                    dest[: src.shape[0], : src.shape[1]] = src
        return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *rows)

    def _inputs(self, states, orders, reverse, actives, k, bank_shape):
        """The step-k device inputs (pixels decoded only for the rows this host's devices hold), or None when no
        object of any video is tracked at step k."""
        v_pad, o = bank_shape
        act = np.zeros((v_pad, o), bool)
        for v in range(len(states)):
            if k < len(orders[v]):
                act[v, : len(actives[v][k])] = actives[v][k]
        if not act.any():
            return None
        frames = [orders[v][k] if k < len(orders[v]) else None for v in range(len(states))] + [None] * v_pad
        size = self.predictor.image_size
        blank = np.zeros((1, size, size, 3), np.float32)

        def pixels(index):
            rows = range(*index[0].indices(v_pad))
            return np.stack([blank if frames[r] is None else states[r].frames.pixel_values(frames[r])[None]
                             for r in rows])  # fmt: skip

        column = lambda values, dtype: self._put(np.asarray(values + [0] * (v_pad - len(values)), dtype))  # noqa: E731
        return (
            jax.make_array_from_callback((v_pad, 1, size, size, 3), self._data, pixels),
            column([f or 0 for f in frames[: len(states)]], np.int32),
            column(reverse, bool),
            column([s.num_frames for s in states], np.int32),
            self._put(act),
        )

    def _run(self, states, orders, reverse):
        pred = self.predictor
        objs = [list(range(len(s.objects))) for s in states]
        pairs = zip(states, orders, strict=True)
        actives = [[[t not in tr.cond for tr in s.objects] for t in order] for s, order in pairs]
        first = [next((k for k, a in enumerate(acts) if any(a)), None) for acts in actives]
        bank = jax.tree_util.tree_map(self._put, self._banks(states, orders, reverse, first))
        shape = bank.cond_frames.shape[:2]
        done = 0  # steps whose device call has been made

        def prefetch(k):  # a frame that fails to decode raises at its own step, after the earlier ones
            try:
                return self._inputs(states, orders, reverse, actives, k, shape)
            except Exception as err:
                return err

        try:
            nxt = prefetch(0)
            for k in range(max(len(order) for order in orders)):
                if isinstance(nxt, Exception):
                    raise nxt
                out = None
                if nxt is not None:
                    bank, out = self.step(self.params, bank, *nxt)
                    done = k + 1
                nxt = prefetch(k + 1)  # decoded while the step runs
                if out is not None:
                    keep = pred.keep_history
                    out = self._gather(out if keep else out.low_res_masks)
                yield [self._frame_result(pred, s, objs[v], actives[v], orders[v], reverse[v], k, v, out)
                       for v, s in enumerate(states)]  # fmt: skip
        finally:
            if done:
                host = self._gather(bank)
                for v, state in enumerate(states):
                    if first[v] is not None and first[v] < done:
                        pred._keep_bank(state, objs[v], jax.tree_util.tree_map(lambda x, v=v: x[v], host))

    @staticmethod
    def _frame_result(pred, state, objs, actives, order, reverse, k, v, out):
        if k >= len(order):
            return None
        t, active = order[k], actives[k]
        lows = [None] * len(objs)
        if any(active):
            if isinstance(out, TrackOutput):
                row = jax.tree_util.tree_map(lambda x: x[v], out)
            else:
                row = TrackOutput(out[v], None, None, None)
            lows = pred._tracked_outputs(state, objs, active, t, row)
        for i, o in enumerate(objs):
            if not active[i]:
                lows[i] = state.objects[o].cond[t].low_res_mask
            state.objects[o].tracked[t] = 1 if reverse else 0
        return t, list(state.obj_ids), pred._to_video(state, lows)


__all__ = ["VideoBatchTracker"]
