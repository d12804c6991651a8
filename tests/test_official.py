"""The ``.pt`` front end against the official facebookresearch ``sam2`` package's own image predictor."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_rel_close

import sam2_jax

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def converted(official_tiny, official_converted):
    """Our model from the converted .pt, with its embeddings of the image computed once."""
    import jax

    image = official_tiny[2]
    model, params = sam2_jax.load(official_converted)
    pixels = ((image.astype(np.float32) / 255.0 - MEAN) / STD)[None]
    embeddings = model.apply({"params": params}, pixels, method=model.get_image_embeddings)
    apply = jax.jit(model.apply, static_argnames="multimask_output")
    return apply, params, embeddings


@pytest.fixture(scope="module")
def predictor(official_tiny):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model_pt, _, image = official_tiny
    predictor = SAM2ImagePredictor(model_pt)
    predictor.set_image(image)
    return predictor


PROMPTS = {
    "one_point": dict(point_coords=[[500.0, 375.0]], point_labels=[1]),
    "points": dict(point_coords=[[500.0, 375.0], [800.0, 600.0], [100.0, 900.0]], point_labels=[1, 0, 1]),
    "box": dict(box=[75.0, 275.0, 900.0, 850.0]),
    "box_and_point": dict(box=[75.0, 275.0, 900.0, 850.0], point_coords=[[500.0, 375.0]], point_labels=[1]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_matches_official_predictor(predictor, converted, prompt, multimask):
    kwargs = {k: np.asarray(v) for k, v in PROMPTS[prompt].items()}
    _, scores, low_res = predictor.predict(multimask_output=multimask, return_logits=True, **kwargs)

    apply, params, embeddings = converted
    inputs = {}
    if "point_coords" in kwargs:
        inputs["input_points"] = kwargs["point_coords"][None, None].astype(np.float32)
        inputs["input_labels"] = kwargs["point_labels"][None, None].astype(np.int32)
    if "box" in kwargs:
        inputs["input_boxes"] = kwargs["box"][None, None].astype(np.float32)
    out = apply({"params": params}, image_embeddings=embeddings, multimask_output=multimask, **inputs)
    # the official predictor clamps its low-resolution logits to [-32, 32]
    ours = np.clip(np.asarray(out.pred_masks[0, 0]), -32.0, 32.0)
    assert_rel_close(ours, low_res, 1e-4, f"{prompt} low-res logits")
    assert_rel_close(out.iou_scores[0, 0], scores, 1e-4, f"{prompt} scores")


def test_official_image_embedding_matches(predictor, converted):
    _, _, embeddings = converted
    assert_rel_close(embeddings[-1], predictor._features["image_embed"].permute(0, 2, 3, 1).numpy(), 1e-4, "embed")
    for ours, theirs in zip(embeddings[:2], predictor._features["high_res_feats"], strict=True):
        assert_rel_close(ours, theirs.permute(0, 2, 3, 1).numpy(), 1e-4, "high-res features")


def test_official_keys_cover_the_model(official_tiny):
    """Every tensor of the official model is either mapped or on the explicit video-only list."""
    import torch

    from sam2_jax.checkpoints.key_mapping import convert_state_dict

    _, path, _ = official_tiny
    state = {k: v.numpy() for k, v in torch.load(path, weights_only=True)["model"].items()}
    params = convert_state_dict(state, sam2_jax.get_config("tiny"), "official")
    assert "mask_decoder" in params
