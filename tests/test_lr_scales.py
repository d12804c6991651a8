"""Per-param learning rates for the whole model (``training.lr_scales`` through ``make_optimizer``): the scales
follow the official SAM 2 layer-decay rule (checked against a transcription of it on the official parameter
names, and by hand at the ends of the trunk), one AdamW step moves every param by exactly its scaled rate, the
defaults leave the optimizer as it was, and the Trainer takes them as settings that a resume must match."""

from __future__ import annotations

import fnmatch

import jax
import numpy as np
import optax
import pytest
from flax.traverse_util import flatten_dict
from reference import random_params, tiny_test_config

from sam2_jax import Sam2Model
from sam2_jax.training.lr_scales import hiera_layer_id, lr_scales, trunk_depth
from sam2_jax.training.step import make_optimizer, trainable_labels
from sam2_jax.training.trainer import Trainer

SCALE, DECAY = 0.6, 0.5  # 0.5: a layer off by one changes a scale by a factor 2


@pytest.fixture(scope="module")
def params():
    return random_params(tiny_test_config(), seed=0, video=False)  # Hiera blocks per stage (1, 2, 3, 2): 8


def flat(tree) -> dict[str, object]:
    return {"/".join(k): v for k, v in flatten_dict(tree).items()}


def official_name(name: str) -> str:
    """Our image-tree name -> the official SAM2 module's parameter name (only the parts the rule reads)."""
    name = name.replace("vision_encoder/backbone/", "image_encoder.trunk.").replace("vision_encoder/", "image_encoder.")
    name = name.replace("patch_embed/projection", "patch_embed.proj")
    for i in range(99):
        name = name.replace(f"blocks_{i}/", f"blocks.{i}.")
    return name.replace("/", ".")


def official_scale(name: str, depth: int, vision_scale: float, decay: float) -> float:
    """A transcription of the official recipe on official names: ``layer_decay_param_modifier`` (the decay list
    indexed by ``Hiera.get_layer_id``, overrides ``*pos_embed*`` -> 1.0, non-trunk params at the last index) times
    the vision_lr / base_lr group of ``image_encoder.*``."""
    num_layers = depth + 1  # get_num_layers() + 1
    decays = [decay ** (num_layers - i) for i in range(num_layers + 1)]
    scale = decays[num_layers]
    if name.startswith("image_encoder.trunk"):
        if name.find("rel_pos") != -1:
            layer = depth + 1
        elif name.find("pos_embed") != -1 or name.find("patch_embed") != -1:
            layer = 0
        elif name.find("blocks") != -1:
            layer = int(name.split("blocks")[1].split(".")[1]) + 1
        else:
            layer = depth + 1
        scale = 1.0 if fnmatch.fnmatchcase(name, "*pos_embed*") else decays[layer]
    return scale * (vision_scale if fnmatch.fnmatchcase(name, "image_encoder.*") else 1.0)


def test_scales_follow_the_official_rule(params):
    assert trunk_depth(params) == 8
    scales = flat(lr_scales(params, SCALE, DECAY))
    for name, s in scales.items():
        assert s == pytest.approx(official_scale(official_name(name), 8, SCALE, DECAY), rel=1e-12), name
    trunk = "vision_encoder/backbone/"
    by_hand = {  # decay ** (depth + 1 - layer_id): block i has layer id i + 1, the patch embedding 0
        "blocks_0/attn/qkv/kernel": DECAY**8,
        "blocks_3/mlp/proj_in/bias": DECAY**5,
        "blocks_7/layer_norm2/scale": DECAY**1,
        "patch_embed/projection/kernel": DECAY**9,
        "pos_embed": 1.0,
        "pos_embed_window": 1.0,
    }
    for name, s in by_hand.items():
        assert scales[trunk + name] == pytest.approx(SCALE * s, rel=1e-12), name
    assert scales["vision_encoder/neck/convs_0/kernel"] == SCALE
    for name in ("mask_decoder/conv_s0/kernel", "mask_decoder/iou_token/embedding", "prompt_encoder/point_embed_0"):
        matches = [s for k, s in scales.items() if k.startswith(name.rsplit("/", 1)[0])]
        assert matches and all(s == 1.0 for s in matches), name
    assert [hiera_layer_id(n, 8) for n in ("patch_embed/projection/bias", "blocks_0/x", "blocks_7/x", "other")] == [
        0,
        1,
        8,
        9,
    ]
    assert all(s == 1.0 for s in jax.tree_util.tree_leaves(lr_scales(params)))


def small(params):
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda p: rng.standard_normal((3,) * np.ndim(p)).astype(np.float32), params)


def one_step(params, optimizer):
    """The updates of one step of ``optimizer`` as ``make_train_step`` wraps it for "all" (frozen buffers: zero),
    on ``params`` with every leaf shrunk to 3 x ... x 3 (its number of axes kept, which decides weight decay;
    eager ops on a few shapes run in a second, where the real shapes take a minute to run or compile)."""
    params, rng = small(params), np.random.default_rng(1)
    tx = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, trainable_labels(params, "all"))
    grads = jax.tree_util.tree_map(  # |g| >= 1: far from Adam's eps
        lambda p: (rng.choice([-1.0, 1.0], p.shape) * (1 + rng.exponential(1.0, p.shape))).astype(np.float32), params
    )
    updates, _ = tx.update(grads, tx.init(params), params)
    return flat(jax.device_get(updates))


def test_one_step_moves_each_param_by_its_scaled_rate(params):
    """AdamW's first step is lr * scale * (g / (|g| + eps) + weight_decay * p): with large gradients and no weight
    decay every element moves by lr * scale exactly; with weight decay, clipping and a schedule the update of each
    param is the unscaled one times its scale."""
    lr = 1e-3
    scales = flat(lr_scales(params, SCALE, DECAY))
    sign = one_step(params, make_optimizer(lr, weight_decay=0.0, eps=1e-12, encoder_lr_scale=SCALE, layer_decay=DECAY))
    for name, u in sign.items():
        if name.endswith("positional_embedding"):  # frozen buffer
            assert not np.any(u), name
            continue
        np.testing.assert_allclose(np.abs(u), lr * scales[name], rtol=1e-5, err_msg=name)
    opts = dict(steps=10, warmup=0, weight_decay=0.1, clip=1.0)
    base = one_step(params, make_optimizer(lr, **opts))
    scaled = one_step(params, make_optimizer(lr, **opts, encoder_lr_scale=SCALE, layer_decay=DECAY))
    for name, u in base.items():
        np.testing.assert_allclose(scaled[name], u * scales[name], rtol=1e-6, atol=0, err_msg=name)


def test_defaults_leave_the_optimizer_unchanged(params):
    params, everything = small(params), lambda p: jax.tree_util.tree_map(lambda _: True, p)
    plain = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, mask=everything))  # the earlier layout
    for opt in (make_optimizer(1e-3, clip=1.0), make_optimizer(1e-3, clip=1.0, encoder_lr_scale=1.0, layer_decay=1.0)):
        assert jax.tree_util.tree_structure(opt.init(params)) == jax.tree_util.tree_structure(plain.init(params))


def test_trainer_settings(params, tmp_path):
    """The trainer checks them, records them, and refuses to resume a run with other values (one line each)."""
    model = Sam2Model(tiny_test_config(), implementation="reference")
    common = dict(lr=1e-3, steps=4, batch_size=1, devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="need trainable='all'"):
        Trainer(model, params, trainable="decoder", layer_decay=0.9, **common)
    with pytest.raises(ValueError, match="must be > 0"):
        Trainer(model, params, trainable="all", encoder_lr_scale=0.0, **common)
    trainer = Trainer(model, params, trainable="all", encoder_lr_scale=SCALE, layer_decay=0.9, **common)
    assert trainer.hparams["encoder_lr_scale"] == SCALE and trainer.hparams["layer_decay"] == 0.9
    trainer.save(tmp_path)
    same = Trainer(model, params, trainable="all", encoder_lr_scale=SCALE, layer_decay=0.9, **common)
    assert same.resume(tmp_path) is None and same.step == 0  # (saved without a loader state)
    for other, key in ((dict(encoder_lr_scale=0.5, layer_decay=0.9), "encoder_lr_scale"), (dict(), "layer_decay")):
        with pytest.raises(ValueError, match=rf"other settings \(.*{key}.*\)"):
            Trainer(model, params, trainable="all", **other, **common).resume(tmp_path)
