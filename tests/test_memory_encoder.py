"""The memory encoder against transformers' ``Sam2VideoModel.memory_encoder`` / ``_encode_new_memory`` (small
config, every parameter randomised, layer scales included) and the official ``MemoryEncoder`` /
``SAM2Base._encode_new_memory`` of the sam2.1 tiny model (converted through the key table)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import assert_rel_close
from test_memory_attention import VideoReference

from sam2_jax.checkpoints.key_mapping import convert_state_dict
from sam2_jax.modeling.sam2_video_model import Sam2VideoModel


@pytest.fixture(scope="module")
def video_ref():
    return VideoReference(seed=4)


def _nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _inputs(rng, batch, grid, channels, size):
    feats = rng.standard_normal((batch, grid, grid, channels)).astype(np.float32)
    logits = (4 * rng.standard_normal((batch, size, size))).astype(np.float32)
    return feats, logits


def _method(config, name):
    model = Sam2VideoModel(config)
    return jax.jit(
        lambda p, *args: model.apply({"params": p}, *args, method=getattr(Sam2VideoModel, name)),
        static_argnums=(),
    )


def test_matches_transformers(video_ref):
    import torch

    rng = np.random.default_rng(1)
    c = video_ref.config
    feats, logits = _inputs(rng, 2, 16, 32, 256)
    masks = (1 / (1 + np.exp(-logits)) * 20 - 10)[..., None].astype(np.float32)
    ours, ours_pos = _method(c, "encode_memory")(video_ref.params, feats, masks)
    with torch.no_grad():
        ref, ref_pos = video_ref.torch_model.memory_encoder(_nchw(feats), _nchw(masks))
    assert ours.shape == (2, 16, 16, 64)
    assert_rel_close(ours, np.moveaxis(ref.numpy(), 1, -1), 1e-5, "memory encoder features vs transformers")
    assert_rel_close(ours_pos, np.moveaxis(ref_pos.numpy(), 1, -1), 1e-6, "memory encoder position vs transformers")


@pytest.mark.parametrize("from_points", [False, True])
def test_encode_new_memory_matches_transformers(video_ref, from_points):
    """Sigmoid (or binarised clicks), x20 - 10, the encoder, the occlusion embedding for an absent object.
    transformers stores the result in bfloat16: ours is compared after the same cast."""
    import torch

    rng = np.random.default_rng(2)
    c = video_ref.config
    feats, logits = _inputs(rng, 2, 16, 32, 256)
    scores = np.array([[2.0], [-1.5]], np.float32)  # object 1 is absent: gets occlusion_spatial_embedding
    ours, ours_pos = _method(c, "encode_new_memory")(video_ref.params, feats, logits, scores, from_points)
    with torch.no_grad():
        ref, ref_pos = video_ref.torch_model._encode_new_memory(
            _nchw(feats).flatten(2).permute(2, 0, 1),
            torch.from_numpy(logits)[:, None],
            torch.from_numpy(scores)[:, None],  # (objects, 1, 1) as its tracker passes them
            is_mask_from_pts=from_points,
        )
    ref = ref.float().permute(1, 0, 2).reshape(ours.shape).numpy()
    ours_bf16 = np.asarray(jax.numpy.asarray(ours).astype(jax.numpy.bfloat16).astype(np.float32))
    assert_rel_close(ours_bf16, ref, 1e-4, f"encode_new_memory (points={from_points}) vs transformers, bfloat16")
    assert_rel_close(ours, ref, 5e-3, "encode_new_memory float32 vs transformers' bfloat16 storage")
    assert_rel_close(ours_pos, ref_pos.permute(1, 0, 2).reshape(ours.shape).numpy(), 1e-6, "position")


@pytest.fixture(scope="module")
def official_params(official_tiny):
    import torch

    import sam2_jax

    _, path, _ = official_tiny
    state = {k: v.numpy() for k, v in torch.load(path, weights_only=True)["model"].items()}
    config = sam2_jax.get_config("tiny")
    return config, convert_state_dict(state, config, "official")


def test_matches_official_tiny(official_tiny, official_params):
    import torch

    model_pt = official_tiny[0]
    config, params = official_params
    rng = np.random.default_rng(3)
    feats, logits = _inputs(rng, 1, 64, 256, 1024)
    masks = (1 / (1 + np.exp(-logits)) * 20 - 10)[..., None].astype(np.float32)
    ours, ours_pos = _method(config, "encode_memory")(params, feats, masks)
    with torch.no_grad():
        out = model_pt.memory_encoder(_nchw(feats), _nchw(masks), skip_mask_sigmoid=True)
    ref, ref_pos = out["vision_features"], out["vision_pos_enc"][0]
    assert_rel_close(ours, np.moveaxis(ref.numpy(), 1, -1), 1e-5, "memory encoder vs official tiny")
    assert_rel_close(ours_pos, np.moveaxis(ref_pos.numpy(), 1, -1), 1e-6, "memory position vs official tiny")


def test_encode_new_memory_matches_official_tiny(official_tiny, official_params):
    """The official ``_encode_new_memory`` (float32, sigmoid path: its yaml leaves binarising off) with one object
    present and one absent (``no_obj_embed_spatial``)."""
    import torch

    model_pt = official_tiny[0]
    config, params = official_params
    rng = np.random.default_rng(4)
    feats, logits = _inputs(rng, 2, 64, 256, 1024)
    scores = np.array([[-0.5], [3.0]], np.float32)
    ours, _ = _method(config, "encode_new_memory")(params, feats, logits, scores, False)
    with torch.no_grad():
        ref, _ = model_pt._encode_new_memory(
            [_nchw(feats).flatten(2).permute(2, 0, 1)],
            [(64, 64)],
            torch.from_numpy(logits)[:, None],
            torch.from_numpy(scores),
            is_mask_from_pts=False,
        )
    assert_rel_close(ours, np.moveaxis(ref.numpy(), 1, -1), 1e-5, "encode_new_memory vs official tiny")


def test_bad_mask_shape(video_ref):
    rng = np.random.default_rng(0)
    feats, logits = _inputs(rng, 1, 16, 32, 128)
    with pytest.raises(ValueError, match="masks must be"):
        _method(video_ref.config, "encode_memory")(video_ref.params, feats, logits)
