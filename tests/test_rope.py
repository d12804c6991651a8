"""2-D axial RoPE against transformers' ``Sam2VideoVisionRotaryEmbedding`` / ``apply_rotary_pos_emb_2d`` and the
official ``compute_axial_cis`` / ``apply_rotary_enc``: the tables, the per-frame repeat and the pointer exclusion."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_rel_close

from sam2_jax.modeling.rope import apply_rope, axial_rope


def _transformers_rope(grid: int, head_dim: int):
    import torch
    import transformers
    from transformers.models.sam2_video.modeling_sam2_video import (
        Sam2VideoMemoryAttention,
        Sam2VideoVisionRotaryEmbedding,
    )

    cfg = transformers.Sam2VideoConfig(
        memory_attention_hidden_size=head_dim, memory_attention_rope_feat_sizes=[grid] * 2
    )
    rotary = Sam2VideoVisionRotaryEmbedding(cfg)
    positions = Sam2VideoMemoryAttention.precompute_positions(cfg)
    cos, sin = rotary(torch.zeros(1), positions)
    return cos[0].numpy(), sin[0].numpy()


@pytest.mark.parametrize("grid,head_dim", [(64, 256), (16, 32)])
def test_tables_match_transformers(grid, head_dim):
    cos, sin = axial_rope(grid, grid, head_dim)
    ref_cos, ref_sin = _transformers_rope(grid, head_dim)
    assert cos.shape == ref_cos.shape == (grid * grid, head_dim)
    np.testing.assert_allclose(cos, ref_cos, atol=2e-6)
    np.testing.assert_allclose(sin, ref_sin, atol=2e-6)


def test_tables_match_official_complex_form():
    import torch
    from sam2.modeling.position_encoding import compute_axial_cis

    cis = compute_axial_cis(dim=256, end_x=64, end_y=64, theta=10000.0)  # (N, 128) complex, one per channel pair
    cos, sin = axial_rope(64, 64, 256)
    np.testing.assert_allclose(cos[:, 0::2], torch.real(cis).numpy(), atol=2e-6)
    np.testing.assert_allclose(sin[:, 0::2], torch.imag(cis).numpy(), atol=2e-6)


@pytest.mark.parametrize("frames,excluded", [(1, 0), (3, 0), (2, 8), (0, 4)])
def test_rotation_repeat_and_exclusion(frames, excluded):
    """Keys of several memory frames take the same rotation per frame; pointer tokens at the end pass unchanged."""
    import torch
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis
    from transformers.models.sam2_video.modeling_sam2_video import apply_rotary_pos_emb_2d

    grid, d = 8, 32
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 1, grid * grid, d)).astype(np.float32)
    k = rng.standard_normal((2, 1, frames * grid * grid + excluded, d)).astype(np.float32)
    cos, sin = axial_rope(grid, grid, d)
    q_ours = np.asarray(apply_rope(q, cos, sin))
    k_ours = np.asarray(apply_rope(k, cos, sin, repeat=frames, num_exclude=excluded))

    q_t, k_t = apply_rotary_pos_emb_2d(
        torch.from_numpy(q),
        torch.from_numpy(k),
        torch.from_numpy(cos)[None],
        torch.from_numpy(sin)[None],
        num_k_exclude_rope=excluded,
        repeat_freqs_k=True,
    )
    assert_rel_close(q_ours, q_t.numpy(), 1e-6, "rope q vs transformers")
    assert_rel_close(k_ours, k_t.numpy(), 1e-6, f"rope k ({frames} frames, {excluded} excluded) vs transformers")
    np.testing.assert_array_equal(k_ours[..., k.shape[-2] - excluded :, :], k[..., k.shape[-2] - excluded :, :])

    cis = compute_axial_cis(dim=d, end_x=grid, end_y=grid)
    n_rot = frames * grid * grid
    if n_rot:
        q_o, k_o = apply_rotary_enc(torch.from_numpy(q), torch.from_numpy(k[..., :n_rot, :]), cis, repeat_freqs_k=True)
        assert_rel_close(q_ours, q_o.numpy(), 1e-6, "rope q vs official")
        assert_rel_close(k_ours[..., :n_rot, :], k_o.numpy(), 1e-6, "rope k vs official")


def test_non_square_grid_is_row_major():
    cos, sin = axial_rope(2, 3, 8)
    # token 4 is row 1, column 1; the first half of the channels rotates by x, the second by y
    np.testing.assert_allclose(cos[4, :4], np.cos([1, 1, 0.01, 0.01]), rtol=1e-6)
    np.testing.assert_allclose(cos[5, 4:], np.cos([1, 1, 0.01, 0.01]), rtol=1e-6)
    np.testing.assert_allclose(sin[2, :2], np.sin([2, 2]), rtol=1e-6)


def test_wrong_token_count_is_refused():
    cos, sin = axial_rope(4, 4, 8)
    with pytest.raises(ValueError, match="not 2 grid"):
        apply_rope(np.zeros((1, 33, 8), np.float32), cos, sin, repeat=2)
