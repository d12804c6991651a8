"""FPN neck: features and sine position encodings against transformers' Sam2VisionModel."""

from __future__ import annotations

import numpy as np
from conftest import rel_l2

from sam2_jax.modeling.vision_encoder import VisionEncoder, sine_position_encoding


def test_fpn_features_and_position_encodings(small_ref):
    import torch

    s = small_ref.size
    x = np.random.default_rng(2).standard_normal((2, s, s, 3)).astype(np.float32)
    with torch.no_grad():
        ref = small_ref.torch_model.vision_encoder(torch.from_numpy(x).permute(0, 3, 1, 2))
    enc = VisionEncoder(small_ref.config.vision_config)
    out = enc.apply({"params": small_ref.params["vision_encoder"]}, x)
    assert len(out.fpn_hidden_states) == len(ref.fpn_hidden_states) == 3
    for ours, theirs in zip(out.fpn_hidden_states, ref.fpn_hidden_states, strict=True):
        assert rel_l2(ours, theirs.permute(0, 2, 3, 1).numpy()) < 1e-5
    for ours, theirs in zip(out.fpn_position_encoding, ref.fpn_position_encoding, strict=True):
        assert rel_l2(ours, theirs.permute(0, 2, 3, 1).numpy()) < 1e-6
    assert rel_l2(out.last_hidden_state, ref.last_hidden_state.numpy()) < 1e-5


def test_sine_encoding_layout():
    enc = sine_position_encoding(4, 6, 8)
    assert enc.shape == (4, 6, 16)
    # the first half depends on the row only, the second half on the column only
    assert np.allclose(enc[:, :1, :8], enc[:, :, :8]) and np.allclose(enc[:1, :, 8:], enc[:, :, 8:])
    # normalised: the last row/column sits at 2*pi, so sin(2*pi / dim_t[0]) = sin(2*pi) ~ 0 on feature 0
    assert abs(enc[-1, 0, 0]) < 1e-4 and abs(enc[0, -1, 8]) < 1e-4
