"""A mask prompt of the video front ends, shared by the video predictor (``add_new_mask``) and
``Sam2VideoProcessor.add_inputs_to_inference_session(input_masks=...)``.

``mask_prompt(mask (H, W), S)`` -> (S, S) float32 0/1: resized with antialiased bilinear and thresholded at 0.5
when it is not S x S (official ``add_new_mask``). Raises ValueError naming the problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mask_prompt(mask, image_size: int) -> np.ndarray:
    """An (H, W) mask (boolean or numeric, non-zero is in) -> the (S, S) float32 0/1 mask the model takes."""
    m = np.asarray(mask)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
    if m.dtype.kind not in "biuf":
        raise ValueError(f"mask must be boolean or numeric, got dtype {m.dtype}")
    if not np.isfinite(m.astype(np.float64)).all():
        raise ValueError("mask has non-finite values")
    m = (m != 0).astype(np.float32)  # official: torch.tensor(mask, dtype=torch.bool)
    if m.shape != (image_size, image_size):
        resized = jax.image.resize(jnp.asarray(m), (image_size, image_size), "linear", antialias=True)
        m = (np.asarray(resized) >= 0.5).astype(np.float32)
    return m
