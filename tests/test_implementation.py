"""Every fast evaluation order equals the plain formulation it replaces, on a randomised model; presets and the
per-platform defaults resolve as documented."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import assert_rel_close

from sam2_jax import Sam2Model
from sam2_jax.modeling.attention import attention
from sam2_jax.modeling.implementation import DEFAULTS, PRESETS, Implementation, resolve

REFERENCE = PRESETS["reference"]
FAST_PATHS = {
    "chunked global attention": Implementation(global_attention="chunked", attention_chunk=32),
    "reassociated cross-attention": Implementation(cross_attention="reassociated"),
    "subpixel upscaling": Implementation(upscaling="subpixel"),
    "prompt scan of 2": Implementation(prompt_chunk=2),
    "hoisted image side": Implementation(hoist_image_side=True),
    "hoisted + reassociated, scan of 1": Implementation(
        cross_attention="reassociated", hoist_image_side=True, prompt_chunk=1
    ),
    "fast preset": dataclasses.replace(PRESETS["fast"], attention_chunk=32),
}


def test_presets_and_platform_defaults():
    assert resolve("reference") == Implementation()
    assert resolve("auto", platform="cpu") is PRESETS[DEFAULTS["cpu"]]
    assert resolve("auto", platform="tpu") is PRESETS["reference"]  # unmeasured platforms run the reference
    assert resolve("auto", platform="something-new") is PRESETS["reference"]
    custom = Implementation(upscaling="subpixel")
    assert resolve(custom) is custom
    with pytest.raises(ValueError, match="unknown implementation 'fastest'"):
        resolve("fastest")
    with pytest.raises(ValueError, match="cross_attention must be one of"):
        Implementation(cross_attention="folded")
    with pytest.raises(ValueError, match="prompt_chunk must be a positive int"):
        Implementation(prompt_chunk=0)


def test_chunked_attention_equals_plain():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 128, 16)).astype(np.float32) for _ in range(3))
    plain = attention(q, k, v, 0.25)
    chunked = attention(q, k, v, 0.25, chunk=32)
    np.testing.assert_allclose(chunked, plain, rtol=2e-5, atol=2e-6)
    assert not np.array_equal(np.asarray(chunked), np.asarray(plain))  # really a different evaluation order


@pytest.fixture(scope="module")
def embeddings(small_ref):
    """The encoder under the reference and the chunked global attention (the one encoder fast path)."""
    rng = np.random.default_rng(4)
    s = small_ref.size
    pixels = rng.standard_normal((2, s, s, 3)).astype(np.float32)
    out = {}
    for name, impl in (("reference", REFERENCE), ("chunked", FAST_PATHS["chunked global attention"])):
        model = Sam2Model(small_ref.config, implementation=impl)
        out[name] = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, method=Sam2Model.get_image_embeddings))(
            small_ref.params, pixels
        )
    return out


def test_chunked_encoder_equals_reference(embeddings):
    for ours, theirs in zip(embeddings["chunked"], embeddings["reference"], strict=True):
        assert_rel_close(ours, theirs, 1e-5, "image embeddings, chunked global attention")


@pytest.fixture(scope="module")
def decoder_cases(small_ref, embeddings):
    """Prompt sets that reach every branch: masked padding points, points + boxes with one stability-checked
    mask, per-object mask prompts; each with the reference decoder's answer."""
    rng = np.random.default_rng(5)
    s = small_ref.size
    points = rng.uniform(0, s, (2, 5, 3, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 5, 3)).astype(np.int32)
    base = dict(image_embeddings=embeddings["reference"], input_points=points, input_labels=labels)
    cases = {
        "points, padding masked": (dict(base, prompt_mask=rng.random((2, 5, 3)) < 0.7), True),
        "points + boxes, single mask": (
            dict(base, input_boxes=np.sort(rng.uniform(0, s, (2, 5, 2, 2)), 2).reshape(2, 5, 4).astype(np.float32)),
            False,
        ),
        "per-object masks": (dict(base, input_masks=rng.standard_normal((2, 5, 256, 256)).astype(np.float32)), True),
    }
    return {name: (kw, mm, _decode(small_ref, REFERENCE, kw, mm)) for name, (kw, mm) in cases.items()}


def _decode(small_ref, impl, kwargs, multimask):
    model = Sam2Model(small_ref.config, implementation=impl)
    return jax.jit(lambda p, kw: model.apply({"params": p}, multimask_output=multimask, **kw))(small_ref.params, kwargs)


@pytest.mark.parametrize("name", [n for n in FAST_PATHS if n != "chunked global attention"])
def test_decoder_fast_path_equals_reference(small_ref, decoder_cases, name):
    for case, (kwargs, multimask, ref) in decoder_cases.items():
        out = _decode(small_ref, FAST_PATHS[name], kwargs, multimask)
        for field in ("pred_masks", "iou_scores", "object_score_logits"):
            assert_rel_close(getattr(out, field), getattr(ref, field), 1e-5, f"{name}, {case}: {field}")
