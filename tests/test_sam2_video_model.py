"""``Sam2VideoModel``: its param tree (exactly the video layout's tensors, per release), the image path it shares
with ``Sam2Model``, and its small building blocks (object pointers, their temporal encodings, the memory temporal
encodings) against transformers (small config) and the official sam2.1 tiny model."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import assert_rel_close
from flax.traverse_util import flatten_dict
from test_memory_attention import VideoReference

import sam2_jax
from sam2_jax.checkpoints.key_mapping import convert_state_dict
from sam2_jax.config import VIDEO_RELEASES
from sam2_jax.modeling import sam2_model, sam2_video_model
from sam2_jax.modeling.sam2_video_model import Sam2VideoModel, image_params


@pytest.fixture(scope="module")
def video_ref():
    return VideoReference(seed=6)


def _method(config, name, **static):
    model = Sam2VideoModel(config)
    fn = getattr(Sam2VideoModel, name)
    return jax.jit(lambda p, *args: model.apply({"params": p}, *args, method=fn, **static))


@pytest.mark.parametrize("name,count", [("facebook/sam2.1-hiera-tiny", 469), ("facebook/sam2-hiera-tiny", 466)])
def test_param_tree_per_release(name, count):
    config = sam2_jax.get_config(name)
    video = flatten_dict(sam2_video_model.param_shapes(config))
    image = flatten_dict(sam2_model.param_shapes(config))
    assert len(video) == count
    assert all(video[k].shape == image[k].shape for k in image)  # the image path's params, unchanged
    extra = {k[0] for k in video if k not in image}
    assert extra <= set(sam2_video_model.VIDEO_ONLY_PARAMS)
    sam2_1 = {"occlusion_spatial_embedding_parameter", "temporal_positional_encoding_projection_layer"}
    assert (sam2_1 <= extra) == (count == 469)
    assert video[("memory_temporal_positional_encoding",)].shape == (7, 1, 1, 64)
    assert video[("memory_encoder", "memory_fuser", "layers_1", "depthwise_conv", "kernel")].shape == (7, 7, 1, 256)


def test_image_path_is_the_image_model(video_ref):
    """Same call, same numbers: the video model with its full tree and the image model with the image subset."""
    c = video_ref.config
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 256, 256, 3)).astype(np.float32)
    points = rng.uniform(0, 256, (1, 2, 1, 2)).astype(np.float32)
    video = Sam2VideoModel(c).apply({"params": video_ref.params}, pixels, input_points=points)
    image = sam2_jax.Sam2Model(c).apply({"params": image_params(video_ref.params)}, pixels, input_points=points)
    np.testing.assert_array_equal(np.asarray(video.pred_masks), np.asarray(image.pred_masks))
    np.testing.assert_array_equal(np.asarray(video.iou_scores), np.asarray(image.iou_scores))


def test_object_pointer_matches_transformers(video_ref):
    import torch

    tm = video_ref.torch_model
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((3, 1, 32)).astype(np.float32)
    scores = np.array([[[1.0]], [[-2.0]], [[0.5]]], np.float32)  # object 1 absent: no_object_pointer
    ours = _method(video_ref.config, "object_pointer")(video_ref.params, tokens, scores)
    with torch.no_grad():
        pointer = tm.object_pointer_proj(torch.from_numpy(tokens))
        present = (torch.from_numpy(scores) > 0).float()
        ref = present * pointer + (1 - present) * tm.no_object_pointer
    assert_rel_close(ours, ref.numpy(), 1e-6, "object pointer vs transformers")


def test_pointer_position_encoding_matches_transformers(video_ref):
    import torch

    tm = video_ref.torch_model
    offsets = [0, 1, 2, 5, 15]
    ours = _method(video_ref.config, "object_pointer_position_encoding", max_object_pointers=16)(
        video_ref.params, np.array(offsets)
    )
    pointers = [torch.zeros(1, 32) for _ in offsets]
    with torch.no_grad():
        _, ref = tm._process_object_pointers(offsets, pointers, 16, 1, 32, torch.device("cpu"))
    assert_rel_close(ours, ref[:, 0].numpy(), 1e-6, "pointer temporal encoding vs transformers")


def test_pointer_blocks_match_official_tiny(official_tiny):
    """``obj_ptr_proj`` (3-layer MLP) and ``obj_ptr_tpos_proj`` over ``get_1d_sine_pe`` of the official tiny model."""
    import torch
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    model_pt, path, _ = official_tiny
    state = {k: v.numpy() for k, v in torch.load(path, weights_only=True)["model"].items()}
    config = sam2_jax.get_config("tiny")
    params = convert_state_dict(state, config, "official")
    rng = np.random.default_rng(2)
    tokens = rng.standard_normal((2, 256)).astype(np.float32)
    ours = _method(config, "object_pointer")(params, tokens, np.ones((2, 1), np.float32))
    with torch.no_grad():
        ref = model_pt.obj_ptr_proj(torch.from_numpy(tokens)).numpy()
    assert_rel_close(ours, ref, 1e-6, "object pointer MLP vs official tiny")
    offsets = np.array([1, 2, 3, 7, 15])
    ours = _method(config, "object_pointer_position_encoding", max_object_pointers=16)(params, offsets)
    with torch.no_grad():
        ref = model_pt.obj_ptr_tpos_proj(get_1d_sine_pe(torch.from_numpy(offsets) / 15.0, dim=256)).numpy()
    assert_rel_close(ours, ref, 1e-6, "pointer temporal encoding vs official tiny")


def test_memory_temporal_encoding_rows(video_ref):
    """Offset k takes row k - 1 (official ``maskmem_tpos_enc[num_maskmem - t_pos - 1]``), a conditioning frame
    (offset 0) the last row."""
    table = video_ref.params["memory_temporal_positional_encoding"].reshape(7, 64)
    model = Sam2VideoModel(video_ref.config)
    rows = model.apply(
        {"params": video_ref.params}, np.array([0, 1, 6]), method=Sam2VideoModel.memory_temporal_encoding
    )
    np.testing.assert_array_equal(np.asarray(rows), table[[6, 0, 5]])


def test_sam2_release_has_no_occlusion_or_pointer_projection(video_ref):
    config = dataclasses.replace(video_ref.config, video_config=dataclasses.replace(
        video_ref.config.video_config, **{k: getattr(VIDEO_RELEASES["sam2"], k) for k in (
            "enable_occlusion_spatial_embedding", "enable_temporal_pos_encoding_for_object_pointers")}))  # fmt: skip
    params = {k: v for k, v in video_ref.params.items() if k not in (
        "occlusion_spatial_embedding_parameter", "temporal_positional_encoding_projection_layer")}  # fmt: skip
    assert flatten_dict(params).keys() == flatten_dict(sam2_video_model.param_shapes(config)).keys()
    enc = _method(config, "object_pointer_position_encoding", max_object_pointers=16)(params, np.arange(3))
    np.testing.assert_array_equal(np.asarray(enc), np.zeros((3, 64), np.float32))
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((1, 16, 16, 32)).astype(np.float32)
    logits = rng.standard_normal((1, 256, 256)).astype(np.float32)
    absent, _ = _method(config, "encode_new_memory")(params, feats, logits, -np.ones((1, 1), np.float32))
    present, _ = _method(config, "encode_new_memory")(params, feats, logits, np.ones((1, 1), np.float32))
    np.testing.assert_array_equal(np.asarray(absent), np.asarray(present))


def test_video_config_must_fit_the_image_model():
    from reference import tiny_test_config

    with pytest.raises(ValueError, match="video_config"):
        sam2_video_model.param_shapes(tiny_test_config())  # full-size video defaults on a 32-wide 256-px model
    with pytest.raises(ValueError, match="must equal fpn_hidden_size 32"):
        config = tiny_test_config()
        sam2_video_model.param_shapes(
            dataclasses.replace(config, video_config=dataclasses.replace(config.video_config, image_size=256))
        )


def test_bfloat16_building_blocks(video_ref):
    """Computed in bfloat16 (params float32): the memory attention and the memory encoder stay close to float32."""
    import jax.numpy as jnp

    c = video_ref.config
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((1, 16, 16, 32)).astype(np.float32)
    memory = rng.standard_normal((1, 2 * 256 + 8, 64)).astype(np.float32)
    logits = rng.standard_normal((1, 256, 256)).astype(np.float32)
    mask = np.ones(memory.shape[:2], bool)
    outs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = Sam2VideoModel(c, dtype=dtype)
        attended = model.apply(
            {"params": video_ref.params}, feats, feats, memory, memory, 8, mask, method=Sam2VideoModel.attend_to_memory
        )
        encoded, _ = model.apply(
            {"params": video_ref.params}, feats, logits, np.ones((1, 1)), method=Sam2VideoModel.encode_new_memory
        )
        assert attended.dtype == encoded.dtype == dtype
        outs[dtype] = (attended, encoded)
    for i, what in enumerate(("memory attention", "memory encoder")):
        assert_rel_close(outs[jnp.bfloat16][i].astype(np.float32), outs[jnp.float32][i], 3e-2, f"bfloat16 {what}")
