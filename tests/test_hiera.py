"""Hiera backbone: torch-exact bicubic resize, window partitioning, and block-by-block parity."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_l2

from sam2_jax.modeling.hiera import Hiera, window_partition, window_unpartition
from sam2_jax.modeling.layers import resize_bicubic


@pytest.mark.parametrize(
    "src,dst", [((7, 7), (256, 256)), ((14, 14), (256, 256)), ((5, 9), (64, 31)), ((8, 8), (3, 5))]
)
def test_bicubic_matches_torch(src, dst):
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).standard_normal((2, *src, 3)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode="bicubic", align_corners=False)
    ours = resize_bicubic(jnp.asarray(x), dst)
    assert rel_l2(ours, ref.permute(0, 2, 3, 1).numpy()) < 1e-6


def test_jax_image_resize_is_not_torch_bicubic():
    """Guards the reason resize_bicubic exists: jax.image.resize uses a = -0.5 and differs by percents."""
    import jax

    x = np.random.default_rng(0).standard_normal((1, 7, 7, 4)).astype(np.float32)
    assert rel_l2(jax.image.resize(x, (1, 256, 256, 4), "bicubic"), resize_bicubic(jnp.asarray(x), (256, 256))) > 1e-2


@pytest.mark.parametrize("hw,window", [((16, 16), 4), ((16, 16), 6), ((32, 30), 14)])
def test_window_round_trip(hw, window):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *hw, 3)), jnp.float32)
    windows, padded = window_partition(x, window)
    assert windows.shape[1:3] == (window, window)
    assert padded[0] % window == 0 and padded[1] % window == 0
    np.testing.assert_array_equal(window_unpartition(windows, window, padded, hw), x)


def test_block_specs_follow_reference(small_ref):
    """Window sizes, query strides and widths per block equal transformers' Sam2MultiScaleBlock attributes."""
    specs = Hiera(small_ref.config.vision_config.backbone_config).block_specs()
    blocks = small_ref.torch_model.vision_encoder.backbone.blocks
    assert len(specs) == len(blocks)
    for spec, block in zip(specs, blocks, strict=True):
        assert spec["window_size"] == block.window_size
        assert spec["query_stride"] == (tuple(block.query_stride) if block.query_stride else None)
        assert (spec["dim"], spec["dim_out"]) == (block.dim, block.dim_out)


def test_every_block_matches_transformers(small_ref):
    """Compares every block's output with transformers' hidden states; names the first that diverges."""
    import torch

    s = small_ref.size
    x = np.random.default_rng(1).standard_normal((1, s, s, 3)).astype(np.float32)
    with torch.no_grad():
        ref = small_ref.torch_model.vision_encoder.backbone(
            torch.from_numpy(x).permute(0, 3, 1, 2), output_hidden_states=True
        )
    backbone = Hiera(small_ref.config.vision_config.backbone_config)
    params = small_ref.params["vision_encoder"]["backbone"]
    stages, hidden = backbone.apply({"params": params}, x)
    assert len(hidden) == len(ref.hidden_states)  # [0] is the patch embedding plus positions, then every block
    for i, (ours, expected) in enumerate(zip(hidden, ref.hidden_states, strict=True)):
        err = rel_l2(ours, expected.numpy())
        assert err < 1e-5, f"hidden state {i} is the first to diverge: relative L2 {err:.2e}"
    for ours, theirs in zip(stages, ref.intermediate_hidden_states, strict=True):
        assert rel_l2(ours, theirs.numpy()) < 1e-5
