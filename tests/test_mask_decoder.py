"""Mask decoder pieces: the 2x2 transposed convolution and dynamic multimask selection by stability."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.modeling.mask_decoder import ConvTranspose2x2, MaskDecoder


def test_conv_transpose_matches_torch():
    import torch

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 2, 2)).astype(np.float32)  # torch layout (in, out, kh, kw)
    b = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((2, 5, 7, 8)).astype(np.float32)
    conv = torch.nn.ConvTranspose2d(8, 4, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.copy_(torch.from_numpy(b))
        ref = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    params = {"kernel": w.transpose(2, 3, 0, 1), "bias": b}
    out = ConvTranspose2x2(4).apply({"params": params}, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_dynamic_multimask_falls_back_when_unstable():
    from sam2_jax.config import MaskDecoderConfig

    dec = MaskDecoder(MaskDecoderConfig())
    h = 8
    stable = np.where(np.arange(h * h).reshape(h, h) < 20, 5.0, -5.0)  # crisp: stability 1
    unstable = np.full((h, h), 0.0)  # every pixel within +-delta: stability 0
    multi = [np.full((h, h), v) for v in (1.0, 2.0, 3.0)]
    masks = np.stack([np.stack([stable, *multi]), np.stack([unstable, *multi])])[None]  # (1, 2 prompts, 4 masks, h, w)
    iou = np.array([[[0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.9, 0.3]]])
    out_masks, out_iou = dec.apply(
        {}, jnp.asarray(masks), jnp.asarray(iou), method=MaskDecoder._dynamic_multimask_via_stability
    )
    np.testing.assert_array_equal(out_masks[0, 0, 0], stable)  # stable: keeps mask 0 and its score
    assert float(out_iou[0, 0, 0]) == np.float32(0.1)
    np.testing.assert_array_equal(out_masks[0, 1, 0], multi[1])  # unstable: best multimask by IoU (index 2)
    assert float(out_iou[0, 1, 0]) == np.float32(0.9)


def test_subpixel_layout_round_trip():
    """``to_subpixels`` and ``from_subpixels`` are inverse permutations, and ``subpixel`` is ``__call__``'s data."""
    from sam2_jax.modeling.mask_decoder import from_subpixels, to_subpixels

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 12, 20, 5)).astype(np.float32)  # (B, 4h, 4w, C) with h = 3, w = 5
    sub = to_subpixels(jnp.asarray(x), 2)
    assert sub.shape == (2, 15, 2, 2, 2, 2, 5)
    np.testing.assert_array_equal(from_subpixels(sub, 3, 5), x.transpose(0, 3, 1, 2))
    conv = ConvTranspose2x2(4)
    y = rng.standard_normal((1, 3, 5, 8)).astype(np.float32)
    params = conv.init(jax.random.PRNGKey(0), y)["params"]
    image = np.asarray(conv.apply({"params": params}, y))
    per_pixel = np.asarray(conv.apply({"params": params}, y.reshape(1, 15, 8), method=ConvTranspose2x2.subpixel))
    np.testing.assert_array_equal(to_subpixels(jnp.asarray(image), 1), per_pixel)


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_mask_floor_makes_only_wanted_masks(implementation):
    """With a ``mask_floor`` the scores are those of the call without one, and so are the masks and mask tokens
    of prompts with a score above their floor; the others' are zeros ("fast" decides per prompt, "reference" for
    all prompts at once, so it makes all as soon as one passes). Refused for one stability-checked mask and with
    PerSAM inputs."""
    from sam2_jax.config import MaskDecoderConfig
    from sam2_jax.modeling.implementation import PRESETS

    cfg = MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    dec = MaskDecoder(cfg, implementation=PRESETS[implementation])
    rng = np.random.default_rng(2)
    b, p, t, h = 1, 5, 2, 8

    def rand(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32))

    inputs = (rand(b, h, h, 32), rand(1, h, h, 32), rand(b, p, t, 32), rand(b, 1, h, h, 32))
    feats = (rand(b, 4 * h, 4 * h, 4), rand(b, 2 * h, 2 * h, 8))
    token_mask = jnp.asarray([[[True, i != 3] for i in range(p)]])
    params = {"params": dec.init(jax.random.PRNGKey(0), *inputs, feats)["params"]}
    masks, iou, obj, tokens = dec.apply(params, *inputs, feats, token_mask=token_mask)
    best = np.asarray(iou).max(axis=-1)  # (b, p)
    pick = [0, 3]
    floor = best - np.where(np.isin(np.arange(p), pick), 1e-3, 0.0).astype(np.float32)
    masks2, iou2, obj2, tokens2 = dec.apply(params, *inputs, feats, token_mask=token_mask, mask_floor=floor)
    assert masks2.shape == masks.shape and tokens2.shape == tokens.shape
    np.testing.assert_allclose(iou2, iou, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obj2, obj, rtol=1e-5, atol=1e-5)
    chunked = dec.implementation.prompt_chunk is not None
    for i in range(p):
        if i in pick or not chunked:
            np.testing.assert_allclose(masks2[:, i], masks[:, i], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(tokens2[:, i], tokens[:, i], rtol=1e-5, atol=1e-5)
        else:
            assert not np.any(masks2[:, i]) and not np.any(tokens2[:, i])
    # a score must exceed its floor: none does by more than the 1e-6 the two paths' scores may differ by (the floor
    # path's scores come from a final attention over the score tokens alone, rounded apart from the full one's)
    none = dec.apply(params, *inputs, feats, token_mask=token_mask, mask_floor=best + 1e-5)[0]
    assert not np.any(none)
    with pytest.raises(ValueError, match="multimask_output=True"):
        dec.apply(params, *inputs, feats, multimask_output=False, mask_floor=floor)
    with pytest.raises(ValueError, match="PerSAM"):
        dec.apply(params, *inputs, feats, mask_floor=floor, target_embedding=rand(b, p, 8, 32))
