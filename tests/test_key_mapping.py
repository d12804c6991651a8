"""The conversion table against the three reference key listings, and its error reporting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sam2_jax import get_config
from sam2_jax.checkpoints.key_mapping import (
    LAYOUTS,
    TRANSFORMERS_VIDEO_ONLY,
    CheckpointError,
    convert_state_dict,
    infer_config,
    official_to_transformers,
)

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


@pytest.mark.parametrize(
    "listing,layout",
    [
        ("keys_transformers_sam2_tiny.tsv", "transformers"),
        ("keys_transformers_sam2_video_tiny.tsv", "transformers"),
        ("keys_official_sam2.1_hiera_tiny.tsv", "official"),
    ],
)
def test_every_listed_tensor_maps(listing, layout):
    state = _listing(listing)
    config = get_config("tiny")
    assert infer_config(state, layout) == config
    params = convert_state_dict(state, config, layout)
    assert params["vision_encoder"]["backbone"]["pos_embed"].shape == (1, 7, 7, 96)


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
    assert TRANSFORMERS_VIDEO_ONLY  # the skip list is explicit


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
    """A layout registered without the unused list (as the video model's will be) sees the video keys."""
    monkeypatch.setitem(LAYOUTS, "everything", dataclasses.replace(LAYOUTS["transformers"], unused=()))
    state = _listing("keys_transformers_sam2_video_tiny.tsv")
    with pytest.raises(CheckpointError, match="memory_attention/layer_norm/scale"):
        convert_state_dict(state, get_config("tiny"), "everything")
    with pytest.raises(ValueError, match="unknown checkpoint layout 'nope'"):
        convert_state_dict(state, get_config("tiny"), "nope")
