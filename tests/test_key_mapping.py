"""The conversion table against the three reference key listings (image, video and official layouts), the
video model's tree, and its error reporting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from sam2_jax import get_config
from sam2_jax.checkpoints.key_mapping import (
    LAYOUTS,
    CheckpointError,
    convert_state_dict,
    infer_config,
    official_to_transformers,
)
from sam2_jax.modeling import sam2_model, sam2_video_model

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"  # key<TAB>shape listings of the references


def _listing(name: str) -> dict[str, np.ndarray]:
    path = REFERENCE / name
    if not path.exists():
        pytest.fail(f"reference listing {path} is missing")
    state = {}
    rng = np.random.default_rng(0)
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        state[key] = rng.standard_normal(shape).astype(np.float32)
    return state


LISTINGS = {  # listing -> (layout, number of tensors, video tree)
    "keys_transformers_sam2_tiny.tsv": ("transformers", 309, False),
    "keys_transformers_sam2_video_tiny.tsv": ("transformers", 469, True),
    "keys_official_sam2.1_hiera_tiny.tsv": ("official", 471, True),
}


@pytest.mark.parametrize("listing", sorted(LISTINGS))
def test_every_listed_tensor_maps(listing):
    """Every tensor of each listing maps to one leaf; the leaves are exactly the model's eval_shape tree, shape
    for shape (the video model's for the video layouts: 469 leaves, nothing skipped)."""
    layout, count, video = LISTINGS[listing]
    state = _listing(listing)
    assert len(state) == count
    config = get_config("tiny")
    assert infer_config(state, layout) == config
    params = flatten_dict(convert_state_dict(state, config, layout))
    module = sam2_video_model if video else sam2_model
    expected = flatten_dict(module.param_shapes(config))
    assert params.keys() == expected.keys()
    assert all(params[k].shape == expected[k].shape and params[k].dtype == np.float32 for k in params)
    assert len(params) == (469 if video else 309)
    assert params[("vision_encoder", "backbone", "pos_embed")].shape == (1, 7, 7, 96)


def test_unused_lists_are_empty():
    """No known layout skips a tensor: the video model uses every one."""
    assert all(spec.unused == () for spec in LAYOUTS.values())


def test_video_tree_contains_the_image_tree():
    """The image model's params are the video tree without its video-only subtrees, leaf for leaf."""
    video = _listing("keys_transformers_sam2_video_tiny.tsv")
    config = get_config("tiny")
    full = convert_state_dict(video, config)
    image = sam2_video_model.image_params(full)
    assert flatten_dict(image).keys() == flatten_dict(sam2_model.param_shapes(config)).keys()
    image_only = {k: video[k] for k in _listing("keys_transformers_sam2_tiny.tsv")}  # the same tensors
    direct = flatten_dict(convert_state_dict(image_only, config))
    for k, v in flatten_dict(image).items():
        np.testing.assert_array_equal(v, direct[k], err_msg="/".join(k))


def test_sam2_release_without_sam2_1_tensors():
    """An official sam2 (not 2.1) checkpoint lacks no_obj_embed_spatial and obj_ptr_tpos_proj: the release is
    inferred from the tensors and the tree has 466 leaves."""
    state = _listing("keys_official_sam2.1_hiera_tiny.tsv")
    for k in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
        del state[k]
    config = infer_config(state, "official")
    assert config == get_config("sam2_hiera_tiny") != get_config("sam2.1_hiera_tiny")
    params = flatten_dict(convert_state_dict(state, config, "official"))
    assert len(params) == 466
    with pytest.raises(CheckpointError, match="occlusion_spatial_embedding_parameter"):
        convert_state_dict(state, get_config("tiny"), "official")  # the sam2.1 options need the tensors


def test_video_layout_transforms_are_applied():
    state = _listing("keys_transformers_sam2_video_tiny.tsv")
    p = convert_state_dict(state, get_config("tiny"))
    me = p["memory_encoder"]
    np.testing.assert_array_equal(
        me["memory_fuser"]["layers_1"]["depthwise_conv"]["kernel"],
        state["memory_encoder.memory_fuser.layers.1.depthwise_conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        me["memory_fuser"]["layers_0"]["scale"], state["memory_encoder.memory_fuser.layers.0.scale"]
    )
    np.testing.assert_array_equal(
        me["mask_downsampler"]["layers_2"]["layer_norm"]["scale"],
        state["memory_encoder.mask_downsampler.layers.2.layer_norm.weight"],
    )
    np.testing.assert_array_equal(
        p["memory_attention"]["layers_3"]["cross_attn_image"]["k_proj"]["kernel"],
        state["memory_attention.layers.3.cross_attn_image.k_proj.weight"].T,
    )
    np.testing.assert_array_equal(
        p["memory_temporal_positional_encoding"], state["memory_temporal_positional_encoding"]
    )
    np.testing.assert_array_equal(p["mask_downsample"]["kernel"], state["mask_downsample.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        p["object_pointer_proj"]["layers_0"]["kernel"], state["object_pointer_proj.layers.0.weight"].T
    )


def test_official_video_renames():
    state = _listing("keys_official_sam2.1_hiera_tiny.tsv")
    t = official_to_transformers(state)
    ds, ma = "memory_encoder.mask_downsampler", "memory_attention.layers"
    pairs = {
        "memory_encoder.mask_downsampler.encoder.12.weight": "memory_encoder.mask_downsampler.final_conv.weight",
        "memory_encoder.mask_downsampler.encoder.9.bias": "memory_encoder.mask_downsampler.layers.3.conv.bias",
        f"{ds}.encoder.10.weight": f"{ds}.layers.3.layer_norm.weight",
        "memory_encoder.fuser.layers.1.gamma": "memory_encoder.memory_fuser.layers.1.scale",
        "memory_encoder.fuser.layers.0.pwconv2.weight": "memory_encoder.memory_fuser.layers.0.pointwise_conv2.weight",
        "memory_encoder.pix_feat_proj.weight": "memory_encoder.feature_projection.weight",
        "memory_encoder.out_proj.bias": "memory_encoder.projection.bias",
        f"{ma}.2.cross_attn_image.out_proj.weight": f"{ma}.2.cross_attn_image.o_proj.weight",
        "memory_attention.layers.1.norm3.bias": "memory_attention.layers.1.layer_norm3.bias",
        "memory_attention.norm.weight": "memory_attention.layer_norm.weight",
        "maskmem_tpos_enc": "memory_temporal_positional_encoding",
        "no_mem_pos_enc": "no_memory_positional_encoding",
        "no_obj_ptr": "no_object_pointer",
        "no_obj_embed_spatial": "occlusion_spatial_embedding_parameter",
        "obj_ptr_proj.layers.1.weight": "object_pointer_proj.layers.0.weight",
        "obj_ptr_proj.layers.2.bias": "object_pointer_proj.proj_out.bias",
        "obj_ptr_tpos_proj.weight": "temporal_positional_encoding_projection_layer.weight",
    }
    for src, dst in pairs.items():
        np.testing.assert_array_equal(t[dst], state[src], err_msg=src)
    video = _listing("keys_transformers_sam2_video_tiny.tsv")
    assert t.keys() == video.keys()
    assert all(t[k].shape == video[k].shape for k in t)


def test_layout_transforms_are_applied():
    state = _listing("keys_transformers_sam2_tiny.tsv")
    p = convert_state_dict(state, get_config("tiny"))
    np.testing.assert_array_equal(
        p["vision_encoder"]["backbone"]["blocks_0"]["attn"]["qkv"]["kernel"],
        state["vision_encoder.backbone.blocks.0.attn.qkv.weight"].T,
    )
    np.testing.assert_array_equal(
        p["vision_encoder"]["backbone"]["patch_embed"]["projection"]["kernel"],
        state["vision_encoder.backbone.patch_embed.projection.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        p["mask_decoder"]["upscale_conv1"]["kernel"], state["mask_decoder.upscale_conv1.weight"].transpose(2, 3, 0, 1)
    )
    np.testing.assert_array_equal(
        p["mask_decoder"]["transformer"]["layers_1"]["layer_norm3"]["scale"],
        state["mask_decoder.transformer.layers.1.layer_norm3.weight"],
    )


def test_official_merges_and_copies():
    state = _listing("keys_official_sam2.1_hiera_tiny.tsv")
    t = official_to_transformers(state)
    np.testing.assert_array_equal(
        t["prompt_encoder.point_embed.weight"][2], state["sam_prompt_encoder.point_embeddings.2.weight"][0]
    )
    gauss = state["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    np.testing.assert_array_equal(t["shared_image_embedding.positional_embedding"], gauss)
    np.testing.assert_array_equal(t["prompt_encoder.shared_embedding.positional_embedding"], gauss)
    np.testing.assert_array_equal(t["no_memory_embedding"], state["no_mem_embed"])


def test_one_error_lists_missing_unexpected_and_misshaped():
    state = _listing("keys_transformers_sam2_tiny.tsv")
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.surprise.weight"] = np.zeros((3, 3), np.float32)
    state["prompt_encoder.point_embed.weight"] = np.zeros((5, 256), np.float32)
    with pytest.raises(CheckpointError) as err:
        convert_state_dict(state, get_config("tiny"))
    msg = str(err.value)
    assert "1 missing" in msg and "mask_decoder/iou_token/embedding" in msg
    assert "unexpected" in msg and "mask_decoder/surprise/kernel" in msg
    assert "mis-shaped" in msg and "prompt_encoder/point_embed/embedding: checkpoint (5, 256)" in msg


def test_unknown_video_like_key_is_not_silently_skipped():
    state = _listing("keys_transformers_sam2_video_tiny.tsv")
    state["memory_attention.brand_new.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(CheckpointError, match="memory_attention/brand_new"):
        convert_state_dict(state, get_config("tiny"))


def test_partial_video_checkpoint_lists_the_missing_video_tensors():
    state = _listing("keys_transformers_sam2_video_tiny.tsv")
    del state["memory_encoder.projection.weight"]
    with pytest.raises(CheckpointError, match="1 missing:\\s+memory_encoder/projection/kernel"):
        convert_state_dict(state, get_config("tiny"))


def test_wrong_size_is_reported():
    state = _listing("keys_transformers_sam2_tiny.tsv")
    with pytest.raises(CheckpointError, match="mis-shaped"):
        convert_state_dict(state, get_config("base_plus"))


def test_official_unknown_key():
    state = _listing("keys_official_sam2.1_hiera_tiny.tsv")
    state["something_else.weight"] = np.zeros(1, np.float32)
    with pytest.raises(CheckpointError, match="unexpected something_else.weight"):
        official_to_transformers(state)


def test_layouts_are_a_registry(monkeypatch):
    """A layout registered with an unused list skips exactly those keys (the leaves they fill are then missing)."""
    spec = dataclasses.replace(LAYOUTS["transformers"], unused=(r"memory_attention\.layer_norm\.(weight|bias)",))
    monkeypatch.setitem(LAYOUTS, "skipping", spec)
    state = _listing("keys_transformers_sam2_video_tiny.tsv")
    with pytest.raises(CheckpointError, match="2 missing:\\s+memory_attention/layer_norm/bias"):
        convert_state_dict(state, get_config("tiny"), "skipping")
    with pytest.raises(ValueError, match="unknown checkpoint layout 'nope'"):
        convert_state_dict(state, get_config("tiny"), "nope")
