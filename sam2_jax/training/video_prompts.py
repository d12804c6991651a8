"""The clip-level prompt simulation of the official video trainer (``SAM2Train.prepare_prompt_inputs`` and the
per-step draws of ``_iter_correct_pt_sampling``), as a ``ClipPlan`` of static-shaped arrays drawn from a PRNG key.

``VideoPromptSettings`` holds the official options under their names (defaults: ``sam2.1_hiera_b+_MOSE_finetune.yaml``).
One plan is shared by every video and object of a batch, as the official one (a single ``self.rng`` draw per
forward); the clicks themselves are per object, drawn from the plan's keys (``video_step``).

  draw_plan_uniforms(key, num_frames, settings) -> PlanDraws: every random number a plan needs, uniform in [0, 1)
  plan_from_draws(draws, num_frames, settings) -> ClipPlan: the official decisions from those numbers
        (``sample_plan(key, ...)`` is the two in a row). With T = num_frames, K = num_init_cond_frames_for_train,
        E = ``max_extra_corrected(T, settings)``, n = num_correction_pt_per_frame:
    use_pt_input      () bool    point / box prompts (else the ground-truth masks) on the conditioning frames
    init_cond_frames  (K,) int32 frame 0, then the other initial conditioning frames; -1 pads unused slots
    use_box           (K,) bool  a box (two corner points) rather than a click as the first prompt of a slot
    extra_corrected   (E,) int32 frames that are not initial conditioning frames but get correction clicks; -1 pads
    sample_from_gt    (T, n) bool correction click j of frame t drawn from the ground truth, not from the errors
    init_keys         (K, 2) uint32 PRNG keys of the first clicks / box jitters of each slot
    correction_keys   (T, n, 2) uint32 PRNG keys of the correction clicks
  The official draws and how they map: ``rng.random() < prob_to_use_pt_input_for_train``; ``rng.integers(1, K,
  endpoint=True)`` initial frames (with ``rand_init_cond_frames_for_train``); ``rng.integers(n_init,
  num_frames_to_correct_for_train, endpoint=True)`` frames to correct (with ``rand_frames_to_correct_for_train``,
  point input only); ``rng.choice(..., replace=False)`` picks the frames with the highest priorities (``draws``);
  ``rng.random() < prob_to_use_box_input_for_train`` per initial frame; ``rng.random() <
  prob_to_sample_from_gt_for_train`` per correction step. A one-frame clip is the official image case (points, one
  corrected frame). An integer in [lo, hi] from a uniform u is ``lo + floor(u * (hi - lo + 1))``.
  frame_roles(plan, num_frames, add_all_frames_to_correct_as_cond) -> (is_init (T,), corrected (T,), is_cond (T,)) bool
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

__all__ = [
    "ClipPlan",
    "PlanDraws",
    "VideoPromptSettings",
    "draw_plan_uniforms",
    "frame_roles",
    "max_extra_corrected",
    "plan_from_draws",
    "sample_plan",
]


@dataclasses.dataclass(frozen=True)
class VideoPromptSettings:
    """The official ``SAM2Train`` training options (the MOSE fine-tuning yaml's values)."""

    prob_to_use_pt_input_for_train: float = 0.5
    prob_to_use_box_input_for_train: float = 0.5
    num_frames_to_correct_for_train: int = 2
    rand_frames_to_correct_for_train: bool = True
    num_init_cond_frames_for_train: int = 2
    rand_init_cond_frames_for_train: bool = True
    add_all_frames_to_correct_as_cond: bool = True
    num_correction_pt_per_frame: int = 7
    prob_to_sample_from_gt_for_train: float = 0.1
    box_noise: float = 0.1  # sample_box_points defaults
    box_noise_bound: float = 20.0

    def __post_init__(self):
        if self.num_init_cond_frames_for_train < 1:
            raise ValueError("num_init_cond_frames_for_train must be at least 1")
        if self.prob_to_use_pt_input_for_train > 0 and (
            self.num_frames_to_correct_for_train < self.num_init_cond_frames_for_train
        ):
            raise ValueError("num_frames_to_correct_for_train must be >= num_init_cond_frames_for_train")


@flax.struct.dataclass
class PlanDraws:
    u_pt: jax.Array  # ()
    u_init: jax.Array  # ()
    u_correct: jax.Array  # ()
    cond_priority: jax.Array  # (T,)
    u_box: jax.Array  # (K,)
    extra_priority: jax.Array  # (T,)
    u_gt: jax.Array  # (T, n)
    init_keys: jax.Array  # (K, 2) uint32
    correction_keys: jax.Array  # (T, n, 2) uint32


@flax.struct.dataclass
class ClipPlan:
    use_pt_input: jax.Array
    init_cond_frames: jax.Array
    use_box: jax.Array
    extra_corrected: jax.Array
    sample_from_gt: jax.Array
    init_keys: jax.Array
    correction_keys: jax.Array


def _counts(num_frames: int, s: VideoPromptSettings) -> tuple[int, int, int]:
    """(K, num_frames_to_correct, prob_pt) with the official one-frame special case."""
    if num_frames == 1:
        return 1, 1, 1.0
    k = min(s.num_init_cond_frames_for_train, num_frames)
    return k, s.num_frames_to_correct_for_train, s.prob_to_use_pt_input_for_train


def max_extra_corrected(num_frames: int, s: VideoPromptSettings) -> int:
    """E: the most corrected frames that are not initial conditioning frames."""
    _, n_correct, prob_pt = _counts(num_frames, s)
    return 0 if prob_pt <= 0 else max(0, min(n_correct - 1, num_frames - 1))


def draw_plan_uniforms(key, num_frames: int, s: VideoPromptSettings) -> PlanDraws:
    k, _, _ = _counts(num_frames, s)
    n = s.num_correction_pt_per_frame
    ks = jax.random.split(key, 9)
    u = lambda i, shape=(): jax.random.uniform(ks[i], shape, jnp.float32)  # noqa: E731
    return PlanDraws(
        u_pt=u(0),
        u_init=u(1),
        u_correct=u(2),
        cond_priority=u(3, (num_frames,)),
        u_box=u(4, (k,)),
        extra_priority=u(5, (num_frames,)),
        u_gt=u(6, (num_frames, n)),
        init_keys=jax.random.split(ks[7], k),
        correction_keys=jax.random.split(ks[8], num_frames * n).reshape(num_frames, n, *ks.shape[1:]),
    )


def _uniform_int(u, lo, hi):
    """An integer in [lo, hi] (inclusive) from u in [0, 1)."""
    return jnp.minimum(lo + jnp.floor(u * (hi - lo + 1)).astype(jnp.int32), hi)


def _top(priority, allowed, count: int, n):
    """(count,) int32: the allowed frames of highest priority, in decreasing priority, -1 past the first n."""
    order = jnp.argsort(-jnp.where(allowed, priority, -1.0))[:count].astype(jnp.int32)
    return jnp.where(jnp.arange(count) < n, order, -1)


def plan_from_draws(draws: PlanDraws, num_frames: int, s: VideoPromptSettings) -> ClipPlan:
    k, n_correct_max, prob_pt = _counts(num_frames, s)
    e = max_extra_corrected(num_frames, s)
    frames = jnp.arange(num_frames)
    use_pt = draws.u_pt < prob_pt
    n_init = jnp.int32(k)
    if s.rand_init_cond_frames_for_train and k > 1 and num_frames > 1:
        n_init = _uniform_int(draws.u_init, 1, k)
    n_correct = jnp.int32(n_correct_max)
    if s.rand_frames_to_correct_for_train and num_frames > 1:
        n_correct = jnp.where(
            use_pt & (n_correct_max > n_init), _uniform_int(draws.u_correct, n_init, n_correct_max), n_correct
        )
    others = _top(draws.cond_priority, frames >= 1, max(k - 1, 0), n_init - 1)
    init = jnp.concatenate([jnp.zeros((1,), jnp.int32), others])
    is_init = (frames[:, None] == init[None, :]).any(axis=1)
    n_extra = jnp.where(use_pt, jnp.maximum(n_correct - n_init, 0), 0)
    extra = _top(draws.extra_priority, ~is_init, e, n_extra) if e else jnp.zeros((0,), jnp.int32)
    slot_used = jnp.arange(k) < n_init
    return ClipPlan(
        use_pt_input=use_pt,
        init_cond_frames=init,
        use_box=use_pt & slot_used & (draws.u_box < s.prob_to_use_box_input_for_train),
        extra_corrected=extra,
        sample_from_gt=draws.u_gt < s.prob_to_sample_from_gt_for_train,
        init_keys=draws.init_keys,
        correction_keys=draws.correction_keys,
    )


def sample_plan(key, num_frames: int, s: VideoPromptSettings) -> ClipPlan:
    return plan_from_draws(draw_plan_uniforms(key, num_frames, s), num_frames, s)


def frame_roles(plan: ClipPlan, num_frames: int, add_all_frames_to_correct_as_cond: bool):
    """(is_init, corrected, is_cond), each (T,) bool: initial conditioning frames, frames with correction clicks
    (the initial ones too under point input), conditioning frames once processed."""
    frames = jnp.arange(num_frames)[:, None]
    is_init = (frames == plan.init_cond_frames[None, :]).any(axis=1)
    extra = (frames == plan.extra_corrected[None, :]).any(axis=1) if plan.extra_corrected.shape[0] else False
    corrected = plan.use_pt_input & (is_init | extra)
    is_cond = is_init | (corrected if add_all_frames_to_correct_as_cond else False)
    return is_init, corrected, is_cond
