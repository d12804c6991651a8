"""The optax train step against one torch step: transformers' ``Sam2Model`` (randomised), the official
``MultiStepMultiMasksAndIous`` loss and ``torch.optim.AdamW``; then training on a toy target, and compiles."""

from __future__ import annotations

import copy
import functools

import jax
import numpy as np
import pytest
from compile_count import jit_compiles
from conftest import rel_l2
from reference import build_transformers_model, state_dict_numpy, tiny_test_config
from test_losses import official_loss_fns

from sam2_jax import Sam2Model
from sam2_jax.checkpoints.key_mapping import convert_state_dict
from sam2_jax.training import make_optimizer, make_train_step

LR, WD, B, P, SEED = 1e-3, 0.1, 2, 2, 3
SHIFT = 2.0  # randomised, the object-score head says "absent" (about -1) for everything; shifted, "present"


@functools.cache
def _torch_model():
    import torch

    tm = build_transformers_model(tiny_test_config(), seed=SEED)
    with torch.no_grad():
        tm.mask_decoder.pred_obj_score_head.layers[-1].bias += SHIFT
    tm.mask_decoder.dynamic_multimask_via_stability = False  # the official trainer's single mask: token 0
    return tm


def torch_model():
    """A fresh copy of the randomised transformers model (building one takes seconds)."""
    return copy.deepcopy(_torch_model())


@pytest.fixture(scope="module")
def setup():
    config = tiny_test_config()
    params = jax.device_put(
        convert_state_dict(state_dict_numpy(torch_model()), config)
    )  # as a training loop holds them
    rng = np.random.default_rng(0)
    grid, width = 256 // 16, config.vision_config.fpn_hidden_size  # the embeddings' shapes (inputs here)
    shapes = [(B, 4 * grid, 4 * grid, width // 8), (B, 2 * grid, 2 * grid, width // 4), (B, grid, grid, width)]
    emb = tuple(rng.standard_normal(s).astype(np.float32) for s in shapes)
    masks = np.zeros((B, P, 256, 256), bool)
    masks[0, 0, 40:150, 60:200] = True
    masks[0, 1, 100:230, 20:90] = True
    masks[1, 0, 10:120, 130:250] = True  # masks[1, 1] stays empty: an absent object
    batch = dict(
        image_embeddings=emb,
        masks=masks,
        input_points=np.array([[[[120.0, 90.0]], [[50.0, 180.0]]], [[[190.0, 60.0]], [[30.0, 30.0]]]], np.float32),
        input_labels=np.array([[[1], [1]], [[1], [0]]], np.int32),
        correction_points=np.array(
            [[[[100.0, 140.0]], [[10.0, 10.0]]], [[[200.0, 100.0]], [[220.0, 200.0]]]], np.float32
        ),
        correction_labels=np.array([[[1], [0]], [[1], [0]]], np.int32),
    )
    return dict(
        config=config, params=params, batch=batch, model=Sam2Model(config, implementation="reference")
    )  # compiles fastest on CPU


def torch_step(batch, corrections: int, clip_fraction: float):
    """One official-style step in torch: decode, feed back the best low-res mask with a correction click, the
    official loss on the upsampled logits, AdamW over the mask decoder (decay on >= 2-D tensors), gradients
    clipped at ``clip_fraction`` of their norm. Returns the loss, the clipping level, the updated state dict."""
    import torch
    import torch.nn.functional as F

    fns = official_loss_fns()
    tm = torch_model()
    n = B * P
    emb = [torch.from_numpy(e).permute(0, 3, 1, 2).repeat_interleave(P, 0) for e in batch["image_embeddings"]]
    points = torch.from_numpy(batch["input_points"]).reshape(n, 1, -1, 2)
    labels = torch.from_numpy(batch["input_labels"]).reshape(n, 1, -1).long()
    outs = {"multistep_pred_multimasks_high_res": [], "multistep_pred_ious": [], "multistep_object_score_logits": []}
    mask_in = None
    for i in range(corrections + 1):
        if i:
            points = torch.cat(
                [points, torch.from_numpy(batch["correction_points"][:, :, i - 1 : i]).reshape(n, 1, 1, 2)], 2
            )
            labels = torch.cat(
                [labels, torch.from_numpy(batch["correction_labels"][:, :, i - 1 : i]).reshape(n, 1, 1).long()], 2
            )
        o = tm(
            image_embeddings=emb, input_points=points, input_labels=labels, input_masks=mask_in, multimask_output=i == 0
        )
        low = torch.where(o.object_score_logits[:, 0, :, None, None] > 0, o.pred_masks[:, 0], -1024.0)  # (n, M, h, w)
        ious = o.iou_scores[:, 0]
        outs["multistep_pred_multimasks_high_res"].append(
            F.interpolate(low, (256, 256), mode="bilinear", align_corners=False)
        )
        outs["multistep_pred_ious"].append(ious)
        outs["multistep_object_score_logits"].append(o.object_score_logits[:, 0])
        mask_in = low[torch.arange(n), ious.argmax(-1)][:, None]  # (n, 1, h, w)
    weights = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    crit = fns.MultiStepMultiMasksAndIous(weights, pred_obj_scores=True)
    loss = crit([outs], torch.from_numpy(batch["masks"].reshape(1, n, 256, 256)))["core_loss"]
    named = [(k, p) for k, p in tm.named_parameters() if k.startswith("mask_decoder.") and ".conv_s" not in k]
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}], lr=LR, eps=1e-8
    )
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for _, p in named]
    clip = clip_fraction * float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    torch.nn.utils.clip_grad_norm_([p for _, p in named], clip)
    opt.step()
    return float(loss.detach()), clip, state_dict_numpy(tm)


@pytest.mark.parametrize("corrections", [0, 1])
def test_one_step_matches_torch_adamw(setup, corrections):
    """Same weights, batch and clicks: the loss, the gradient norm and every updated mask-decoder tensor (and the
    update itself, new - old) equal torch's; clipping at half the gradient norm, so that it bites in both."""
    loss_t, clip, state = torch_step(setup["batch"], corrections, 0.5)
    expected = convert_state_dict(state, setup["config"])["mask_decoder"]
    train = make_train_step(setup["model"], make_optimizer(LR, weight_decay=WD, clip=clip), "decoder", corrections)
    params = setup["params"]
    new, _, metrics = train.step(params, train.init(params), setup["batch"], jax.random.PRNGKey(0))
    print(f"[parity] train step ({corrections} corrections): loss {float(metrics['loss']):.6f} vs torch {loss_t:.6f}")
    assert float(metrics["loss"]) == pytest.approx(loss_t, rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(2 * clip, rel=1e-4)
    worst_param = worst_update = 0.0
    flat_new = jax.tree_util.tree_flatten_with_path(new["mask_decoder"])[0]
    flat_old = dict(jax.tree_util.tree_flatten_with_path(params["mask_decoder"])[0])
    flat_exp = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    moved = 0
    for path, value in flat_new:
        name = jax.tree_util.keystr(path)
        old, ref = np.asarray(flat_old[path]), np.asarray(flat_exp[path])
        if "conv_s" in name:  # the image path: frozen in both
            assert np.array_equal(np.asarray(value), old) and np.array_equal(ref, old)
            continue
        if "k_proj" in name and name.endswith("['bias']"):
            continue  # softmax is shift-invariant: zero true gradient, Adam's update of rounding noise is its sign
        worst_param = max(worst_param, rel_l2(value, ref))
        moved += int(not np.array_equal(ref, old))
        worst_update = max(worst_update, rel_l2(np.asarray(value) - old, ref - old))
    print(f"[parity] updated params max rel L2 {worst_param:.2e}, updates max rel L2 {worst_update:.2e}")
    assert moved > 40 and worst_param < 1e-5 and worst_update < 1e-3
    for part in ("prompt_encoder", "vision_encoder"):
        assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, new[part], params[part])))


def test_training_reduces_loss_and_compiles_once(setup):
    """Sampled clicks and correction clicks, warm-up + cosine schedule, clipping: the loss goes down on a fixed
    toy target over a few steps, with one compilation for every batch of the same shapes."""
    batch = {k: setup["batch"][k] for k in ("image_embeddings", "masks")}
    opt = make_optimizer(3e-3, steps=12, warmup=2, weight_decay=0.01, clip=1.0)
    train = make_train_step(setup["model"], opt, "prompt+decoder", num_correction_steps=1)
    params = setup["params"]
    state = train.init(params)
    losses = []
    for i in range(8):
        params, state, metrics = train.step(params, state, batch, jax.random.PRNGKey(i % 2))
        losses.append(float(metrics["loss"]))
    print(f"[train] toy losses {losses[0]:.4f} -> {losses[-1]:.4f}, final IoU {float(metrics['iou']):.3f}")
    assert np.all(np.isfinite(losses)) and min(losses[-2:]) < 0.8 * losses[0]
    other = dict(batch, masks=np.roll(batch["masks"], 5, axis=-1))
    train.step(params, state, other, jax.random.PRNGKey(9))
    assert jit_compiles(train.step) == 1
