"""The video train step against one step of the official ``SAM2Train`` (training/model/sam2.py), live: the official
tiny architecture at 256 px with every tensor randomised, the official ``MultiStepMultiMasksAndIous`` (MOSE weights)
summed over frames, ``torch.optim.AdamW`` over the memory path; the same random choices on both sides (the
official ``self.rng`` replays our plan's uniforms, its click and box samplers call ours with the plan's keys).
Also: the plan against ``prepare_prompt_inputs`` for many draws, the samplers against the official ones with the same
noise, only memory params moving, one compile."""

from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import jit_compiles
from conftest import rel_l2
from reference import OFFICIAL_CONFIGS, ensure_official_hydra, official_config_at, randomize_, state_dict_numpy
from test_losses import official_loss_fns

from sam2_jax.checkpoints.key_mapping import convert_state_dict
from sam2_jax.modeling.sam2_video_model import Sam2VideoModel
from sam2_jax.training import prompts as P
from sam2_jax.training.step import MEMORY_PARAMS, make_optimizer
from sam2_jax.training.video_prompts import PlanDraws, VideoPromptSettings, draw_plan_uniforms, plan_from_draws
from sam2_jax.training.video_step import make_video_train_step

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"
T, B, O, S, LR, WD, SHIFT = 5, 1, 2, 256, 1e-3, 0.1, 1.0
# the MOSE options, with 3 frames to correct (so that a non-initial frame gets corrections next to two initial
# ones) and 3 correction clicks per frame (7 in the yaml; every step is the same code, fewer keep the test short)
SETTINGS = VideoPromptSettings(num_frames_to_correct_for_train=3, num_correction_pt_per_frame=3)
OFFICIAL_MEMORY = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_embed",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)


def _import_official_trainer():
    """``training.model.sam2``: its data classes need ``tensordict`` (not in the dev install): a stub decorator then."""
    try:
        import tensordict  # noqa: F401
    except ImportError:
        stub = types.ModuleType("tensordict")
        stub.tensorclass = lambda cls: cls
        sys.modules["tensordict"] = stub
    official_loss_fns()  # stubs training.trainer the same way
    import training.model.sam2 as official

    return official


def official_train_model(image_size: int, settings: dict, shift: float):
    """The official ``SAM2Train`` (tiny) at ``image_size`` with the training ``settings`` (its yaml's names), every
    tensor randomised, the object-score head's bias raised by ``shift``, dropout off (ours has none); also for
    ``benchmarks/bench_train.py``."""
    import torch
    from hydra import compose
    from hydra.utils import instantiate

    _import_official_trainer()
    ensure_official_hydra()
    options = {"_target_": "training.model.sam2.SAM2Train", "image_size": image_size, **settings}
    cfg = compose(config_name=OFFICIAL_CONFIGS["tiny"], overrides=[f"++model.{k}={v}" for k, v in options.items()])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _recursive_=True)
    randomize_(model, 5)
    with torch.no_grad():  # randomised, the object-score head says "absent" for everything; shifted, it varies
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += shift
    for module in model.modules():  # the official training runs dropout; ours has none
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0
    return model


@functools.cache
def _official_model():
    s = SETTINGS
    names = ("prob_to_use_pt_input_for_train", "prob_to_use_box_input_for_train", "num_frames_to_correct_for_train",
             "rand_frames_to_correct_for_train", "num_init_cond_frames_for_train", "rand_init_cond_frames_for_train",
             "add_all_frames_to_correct_as_cond", "num_correction_pt_per_frame",
             "prob_to_sample_from_gt_for_train")  # fmt: skip
    return official_train_model(S, {k: getattr(s, k) for k in names}, SHIFT)


class ReplayRng:
    """Stands in for ``SAM2Train.rng``: answers its draws from our ``PlanDraws`` (see ``video_prompts``)."""

    def __init__(self, draws: PlanDraws, settings: VideoPromptSettings):
        self.d = jax.tree_util.tree_map(np.asarray, draws)
        self.s = settings
        self.randoms = [float(self.d.u_pt), *map(float, self.d.u_box)]
        self.ints = 0
        self.frame = self.step = None

    def random(self):
        if self.frame is not None:  # a correction step's "sample from the ground truth" draw
            self.step += 1
            return float(self.d.u_gt[self.frame, self.step - 1])
        return self.randoms.pop(0)

    def integers(self, lo, hi, endpoint=True):
        assert endpoint
        first_is_init = self.s.rand_init_cond_frames_for_train and self.s.num_init_cond_frames_for_train > 1
        u = self.d.u_init if self.ints == 0 and first_is_init else self.d.u_correct
        self.ints += 1
        return min(lo + int(np.floor(np.float32(u) * np.float32(hi - lo + 1))), hi)

    def choice(self, population, k, replace=False):
        priority = self.d.cond_priority if isinstance(population, range) else self.d.extra_priority
        pop = list(population)
        return np.array(sorted(pop, key=lambda f: -priority[f])[:k])


def _patch_samplers(monkeypatch, official, model, rng: ReplayRng):
    """The official click / box samplers call ours with the plan's keys (initial prompts in slot order, then per
    frame and correction step); ``track_step`` tells them (and the replayed draws) which frame is running."""
    import torch

    d, slot = rng.d, [0]

    def to_torch(points, labels):
        return torch.from_numpy(np.asarray(points)), torch.from_numpy(np.asarray(labels)).int()

    def next_point(gt_masks, pred_masks, method):
        gt = jnp.asarray(gt_masks[:, 0].numpy())
        pred = None if pred_masks is None else jnp.asarray(pred_masks[:, 0].numpy())
        if rng.frame is None:
            slot[0] += 1
            return to_torch(*P.sample_error_points(d.init_keys[slot[0] - 1], gt, None, 1))
        return to_torch(*P.sample_error_points(d.correction_keys[rng.frame, rng.step - 1], gt, pred, 1))

    def box_points(masks):
        slot[0] += 1
        key = d.init_keys[slot[0] - 1]
        return to_torch(*P.sample_box(key, jnp.asarray(masks[:, 0].numpy()), SETTINGS.box_noise, 20.0))

    track = type(model).track_step

    def track_step(self, frame_idx, *args, **kwargs):
        rng.frame, rng.step = frame_idx, 0
        return track(self, frame_idx, *args, **kwargs)

    monkeypatch.setattr(official, "get_next_point", next_point)
    monkeypatch.setattr(official, "sample_box_points", box_points)
    monkeypatch.setattr(model, "track_step", types.MethodType(track_step, model))
    model.rng = rng


def _clip():
    """T frames of the bedroom video (for B > 1, the next videos are the same frames reversed), two moving shapes
    each, one of them absent on one frame."""
    from PIL import Image

    frames = np.stack(
        [np.asarray(Image.open(BEDROOM / f"{i:05d}.jpg").convert("RGB").resize((S, S))) for i in range(T)]
    )
    frames = (frames / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    pixels = np.stack([frames if b % 2 == 0 else frames[::-1] for b in range(B)], axis=1).astype(np.float32)
    yy, xx = np.mgrid[:S, :S]
    masks = np.zeros((T, B, O, S, S), bool)
    for t in range(T):
        for b in range(B):
            masks[t, b, 0] = ((yy - 100 - 8 * t) / 60) ** 2 + ((xx - 90 - 10 * b - 6 * t) / 45) ** 2 < 1
            masks[t, b, 1] = (abs(yy - 180 + 5 * t) < 40) & (abs(xx - 170 - 20 * b) < 55 - 4 * t)
    masks[3, B - 1, 0] = False
    return pixels, masks


def _draws(points: bool) -> PlanDraws:
    """With points: initial frames 0 and 4 (a click on 0, a box on 4), frame 1 corrected too (a conditioning frame
    from then on), the second correction of frame 1 drawn from the ground truth; without: masks on frames 0 and 2."""
    d = draw_plan_uniforms(jax.random.PRNGKey(7), T, SETTINGS)
    u_gt = np.full((T, SETTINGS.num_correction_pt_per_frame), 0.5, np.float32)
    u_gt[1, 1] = 0.01
    return d.replace(
        u_pt=jnp.float32(0.1 if points else 0.8),
        u_init=jnp.float32(0.9),
        u_correct=jnp.float32(0.9),
        cond_priority=jnp.asarray([0.0, 0.1, 0.5 if points else 0.9, 0.2, 0.8 if points else 0.3], jnp.float32),
        u_box=jnp.asarray([0.9, 0.1], jnp.float32),
        extra_priority=jnp.asarray([0.0, 0.9, 0.2, 0.3, 0.4], jnp.float32),
        u_gt=jnp.asarray(u_gt),
    )


@pytest.fixture(scope="module")
def setup():
    return make_setup()


def make_setup():
    import torch

    model = _official_model()
    pixels, masks = _clip()
    flat = torch.from_numpy(pixels.transpose(1, 0, 4, 2, 3).reshape(B * T, 3, S, S).copy())
    with torch.no_grad():
        fpn = model.forward_image(flat)["backbone_fpn"]  # conv_s0 / conv_s1 applied to the two high levels
    features = tuple(x.numpy().reshape(B, T, *x.shape[1:]).transpose(1, 0, 3, 4, 2) for x in fpn)
    config = official_config_at(S)
    params = jax.device_put(convert_state_dict(state_dict_numpy(model), config, "official"))
    train = make_video_train_step(
        Sam2VideoModel(config, implementation="reference"), make_optimizer(LR, weight_decay=WD), "memory", T, SETTINGS
    )
    return dict(model=model, pixels=flat, masks=masks, features=features, config=config, params=params, train=train)


def official_batch(flat_pixels, masks):
    """What ``SAM2Train.forward`` reads of a ``BatchedVideoDatapoint``: ``flat_pixels`` (B * T, 3, S, S) torch,
    video-major; ``masks`` (T, B, O, S, S) bool NumPy."""
    import torch

    t, b, o, s = masks.shape[:4]
    idx = np.broadcast_to(np.repeat(np.arange(b), o), (t, b * o)) * t + np.arange(t)[:, None]  # video * T + frame
    return types.SimpleNamespace(
        flat_img_batch=flat_pixels,
        masks=torch.from_numpy(masks.reshape(t, b * o, s, s).copy()),
        num_frames=t,
        flat_obj_to_img_idx=torch.from_numpy(np.ascontiguousarray(idx)),
    )


def official_criterion():
    """The official ``MultiStepMultiMasksAndIous`` with the MOSE fine-tuning weights and options."""
    weights = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    return official_loss_fns().MultiStepMultiMasksAndIous(
        weights, supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True
    )


def official_step(setup, draws, monkeypatch):
    """One official training step: the loss, the state dict after AdamW over the memory path, the gradients."""
    import torch

    official = _import_official_trainer()
    model = copy.deepcopy(setup["model"]).train()
    _patch_samplers(monkeypatch, official, model, ReplayRng(draws, SETTINGS))
    batch = official_batch(setup["pixels"], setup["masks"])
    named = [(k, p) for k, p in model.named_parameters() if k.startswith(OFFICIAL_MEMORY)]
    for k, p in model.named_parameters():
        p.requires_grad_(k.startswith(OFFICIAL_MEMORY))
    loss = official_criterion()(model(batch), batch.masks)["core_loss"]
    loss.backward()
    for _, p in named:  # unused in this forward: torch would skip them, optax decays them; make torch do the same
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    grads = {k: p.grad.numpy().copy() for k, p in named}
    opt.step()
    return float(loss.detach()), state_dict_numpy(model), grads


def _as_tree(setup, state, tensors):
    """Official tensors by name (the others zero) in our param tree's layout."""
    full = {k: np.zeros_like(v) for k, v in state.items()}
    full.update(tensors)
    return dict(jax.tree_util.tree_flatten_with_path(convert_state_dict(full, setup["config"], "official"))[0])


@pytest.mark.parametrize("points", [True, False], ids=["points", "masks"])
def test_one_step_matches_official_sam2train(setup, points, monkeypatch):
    """The same clip, weights and choices: the summed loss, the gradient norm and every updated memory tensor equal
    the official's; nothing outside the memory path moves. The masks plan runs on the points plan's compilation.

    Adam's first step is lr * g / (|g| + eps), about lr * sign(g): where a gradient is float32 noise (softmax-
    invariant key biases, elements ~1e-4 of their tensor's RMS gradient), rounding flips it. So the updates are
    compared where the official gradient is above 1e-2 of its tensor's RMS, and every element that differs
    elsewhere must be one of those noise-level gradients (and few)."""
    draws = _draws(points)
    loss_t, state, grads = official_step(setup, draws, monkeypatch)
    flat_exp = dict(jax.tree_util.tree_flatten_with_path(convert_state_dict(state, setup["config"], "official"))[0])
    flat_grad = _as_tree(setup, state, grads)
    train, params = setup["train"], setup["params"]
    batch = dict(frame_features=setup["features"], masks=setup["masks"])
    plan = plan_from_draws(draws, T, SETTINGS)
    new, _, metrics = train.step(params, train.init(params), batch, jax.random.PRNGKey(0), plan)
    grad_norm_t = float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values())))
    print(f"[parity] video train step ({'points' if points else 'masks'}): loss {float(metrics['loss']):.6f} vs "
          f"official {loss_t:.6f}, grad norm {float(metrics['grad_norm']):.6f} vs {grad_norm_t:.6f}")  # fmt: skip
    assert float(metrics["loss"]) == pytest.approx(loss_t, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(grad_norm_t, rel=1e-4)
    worst_param = worst_param_sig = worst_update = worst_noise = 0.0
    moved = total = differing = 0
    flat_old = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for path, value in jax.tree_util.tree_flatten_with_path(new)[0]:
        name = jax.tree_util.keystr(path)
        old, ref, value = np.asarray(flat_old[path]), np.asarray(flat_exp[path]), np.asarray(value)
        if path[0].key not in MEMORY_PARAMS:
            assert np.array_equal(value, old), f"{name} moved"
            continue
        g = np.abs(np.asarray(flat_grad[path]))
        rms = max(float(np.sqrt((g.astype(np.float64) ** 2).mean())), 1e-30)
        significant = g > 1e-2 * rms
        worst_param = max(worst_param, rel_l2(value, ref))
        moved += int(not np.array_equal(value, old))
        if significant.any():
            worst_param_sig = max(worst_param_sig, rel_l2(value[significant], ref[significant]))
            worst_update = max(worst_update, rel_l2((value - old)[significant], (ref - old)[significant]))
        off = np.abs(value - ref) > 1e-7 + 1e-5 * np.abs(ref)
        total, differing = total + value.size, differing + int(off.sum())
        if off.any():
            worst_noise = max(worst_noise, float(g[off].max()) / rms)
    print(
        f"[parity] updated memory params: max rel L2 {worst_param:.2e} ({worst_param_sig:.2e} where |g| > 1e-2 RMS); "
        f"updates there: max rel L2 {worst_update:.2e}; {differing} of {total} elements differ, "
        f"at |g| <= {worst_noise:.1e} RMS; {moved} tensors moved"
    )
    assert moved > 50 and worst_update < 1e-4 and worst_param_sig < 1e-5 and worst_param < 1e-3
    assert worst_noise < 1e-2 and differing < 1e-3 * total
    if not points:  # the second batch of the same shapes: still one compilation
        assert jit_compiles(train.step) == 1


@pytest.mark.parametrize("settings", [VideoPromptSettings(), SETTINGS], ids=["mose", "three-corrected"])
def test_plan_matches_official_prepare_prompt_inputs(settings, monkeypatch):
    """For many draws, the official ``prepare_prompt_inputs`` answering its ``rng`` from them picks what our plan
    does: point or mask input, the initial conditioning frames (in order), click or box on each, the frames to
    correct."""
    import torch

    official = _import_official_trainer()
    monkeypatch.setattr(
        official, "get_next_point", lambda gt_masks, pred_masks, method: (torch.zeros(1, 1, 2), torch.ones(1, 1))
    )
    monkeypatch.setattr(official, "sample_box_points", lambda masks: (torch.zeros(1, 2, 2), torch.tensor([[2, 3]])))
    frames = 8
    draws = jax.vmap(lambda k: draw_plan_uniforms(k, frames, settings))(jax.random.split(jax.random.PRNGKey(1), 64))
    plans = jax.device_get(jax.jit(jax.vmap(lambda d: plan_from_draws(d, frames, settings)))(draws))
    batch = types.SimpleNamespace(masks=torch.zeros(frames, 1, 4, 4, dtype=torch.bool), num_frames=frames)
    kinds = set()
    for i in range(64):
        d = jax.tree_util.tree_map(lambda x, i=i: x[i], draws)
        fake = types.SimpleNamespace(training=True, rng=ReplayRng(d, settings), **dataclasses.asdict(settings))
        out = official.SAM2Train.prepare_prompt_inputs(fake, {}, batch)
        plan = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x[i]), plans)
        init = [int(f) for f in plan.init_cond_frames if f >= 0]
        assert bool(plan.use_pt_input) == out["use_pt_input"]
        assert init == list(out["init_cond_frames"])
        corrected = {int(f) for f in init + list(plan.extra_corrected) if f >= 0} if plan.use_pt_input else set()
        assert corrected == set(out["frames_to_add_correction_pt"])
        for k, f in enumerate(init):
            if plan.use_pt_input:
                box = out["point_inputs_per_frame"][f]["point_labels"].shape[1] == 2
                assert bool(plan.use_box[k]) == box and f not in out["mask_inputs_per_frame"]
            else:
                assert f in out["mask_inputs_per_frame"] and f not in out["point_inputs_per_frame"]
        kinds.add((bool(plan.use_pt_input), len(init), len(corrected), bool(plan.use_box.any())))
    assert len(kinds) >= 5  # the draws reach every kind of plan


def test_samplers_match_official_with_the_same_noise(monkeypatch):
    """Our error clicks and jittered boxes equal ``sample_random_points_from_errors`` / ``sample_box_points`` when
    the official ``torch.rand`` returns our uniforms."""
    import sam2.modeling.sam2_utils as utils
    import torch

    rng = np.random.default_rng(0)
    gt = np.zeros((5, 48, 40), bool)
    for i in range(4):
        gt[i, 5 + 3 * i : 30 + 2 * i, 4 + 4 * i : 25 + i] = True
    pred = np.roll(gt, 4, axis=-1) | (rng.random(gt.shape) < 0.05)
    pred[2] = gt[2]  # exactly right: a background click
    key = jax.random.PRNGKey(4)
    noise = np.asarray(jax.random.uniform(key, (5, 1, 48, 40, 2), jnp.float32))
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.from_numpy(noise.copy()))
    for p in (pred, None):
        ref_pts, ref_labels = utils.sample_random_points_from_errors(
            torch.from_numpy(gt[:, None]), None if p is None else torch.from_numpy(p[:, None])
        )
        pts, labels = P.sample_error_points(key, gt, p, 1)
        np.testing.assert_array_equal(np.asarray(pts), ref_pts.numpy())
        np.testing.assert_array_equal(np.asarray(labels), ref_labels.numpy())
    u = np.asarray(jax.random.uniform(key, (4, 4), jnp.float32, -1.0, 1.0))
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.from_numpy(((u + 1) / 2).reshape(4, 1, 4)))
    ref_box, ref_labels = utils.sample_box_points(torch.from_numpy(gt[:4, None]))
    box, labels = P.sample_box(key, gt[:4], 0.1, 20.0)
    np.testing.assert_allclose(np.asarray(box), ref_box.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(labels), ref_labels.numpy())
