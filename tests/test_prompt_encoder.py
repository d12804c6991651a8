"""Prompt encoder: sparse and dense embeddings against transformers' Sam2PromptEncoder."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_l2

from sam2_jax.modeling.prompt_encoder import PromptEncoder


def _torch(small_ref, **kw):
    import torch

    args = {k: (torch.from_numpy(v).long() if v.dtype.kind == "i" else torch.from_numpy(v)) for k, v in kw.items()}
    with torch.no_grad():
        return small_ref.torch_model.prompt_encoder(
            input_points=args.get("input_points"),
            input_labels=args.get("input_labels"),
            input_boxes=args.get("input_boxes"),
            input_masks=args.get("input_masks"),
        )


CASES = {
    "points_all_labels": dict(
        input_points=np.random.default_rng(0).uniform(0, 256, (2, 3, 5, 2)).astype(np.float32),
        input_labels=np.array([[[1, 0, -1, -10, 1]] * 3, [[2, 3, 1, 1, -10]] * 3], np.int64),
    ),
    "boxes": dict(input_boxes=np.random.default_rng(1).uniform(0, 256, (2, 3, 4)).astype(np.float32)),
    "points_and_boxes": dict(
        input_points=np.random.default_rng(2).uniform(0, 256, (1, 2, 2, 2)).astype(np.float32),
        input_labels=np.array([[[1, 0], [1, -10]]], np.int64),
        input_boxes=np.random.default_rng(3).uniform(0, 256, (1, 2, 4)).astype(np.float32),
    ),
    "mask": dict(
        input_points=np.zeros((1, 1, 1, 2), np.float32),
        input_labels=np.ones((1, 1, 1), np.int64),
        input_masks=np.random.default_rng(4).standard_normal((1, 1, 64, 64)).astype(np.float32),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prompt_embeddings_match(small_ref, case):
    kw = CASES[case]
    sparse_ref, dense_ref = _torch(small_ref, **kw)
    enc = PromptEncoder(small_ref.config.prompt_encoder_config)
    sparse, dense = enc.apply({"params": small_ref.params["prompt_encoder"]}, **kw)
    assert rel_l2(sparse, sparse_ref.numpy()) < 1e-6
    # ours keeps an object axis on the dense embedding: (B, P', h, w, C)
    dense_ref = dense_ref.detach().permute(0, 2, 3, 1).numpy()
    assert rel_l2(dense[:, 0], dense_ref) < 1e-5


def test_padding_label_zeroes_the_token(small_ref):
    enc = PromptEncoder(small_ref.config.prompt_encoder_config)
    pts = np.array([[[[10.0, 20.0], [30.0, 40.0]]]], np.float32)
    sparse, _ = enc.apply(
        {"params": small_ref.params["prompt_encoder"]}, input_points=pts, input_labels=np.array([[[1, -10]]])
    )
    assert np.all(np.asarray(sparse[0, 0, 1]) == 0) and np.any(np.asarray(sparse[0, 0, 0]) != 0)
    # the appended "not a point" token when no box is given
    nap = small_ref.params["prompt_encoder"]["not_a_point_embed"]["embedding"][0]
    np.testing.assert_allclose(sparse[0, 0, 2], nap, rtol=1e-6)
