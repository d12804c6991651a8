"""Parity of the full image model with transformers' Sam2Model (randomised weights), case by case."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from conftest import assert_rel_close

from sam2_jax import Sam2Model
from sam2_jax.modeling.implementation import PRESETS

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_case(tiny_ref):
    """Two random 1024 images embedded once by both models (checks the full pixel path on the way)."""
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((2, 1024, 1024, 3)).astype(np.float32)
    ours = tiny_ref.embed(tiny_ref.params, pixels)
    points = np.array([[[[500.0, 375.0]]], [[[120.0, 900.0]]]], np.float32)
    labels = np.ones((2, 1, 1), np.int64)
    theirs = tiny_ref.torch_forward(pixel_values=pixels, input_points=points, input_labels=labels)
    out = tiny_ref.apply(tiny_ref.params, pixel_values=pixels, input_points=points, input_labels=labels)
    return dict(pixels=pixels, ours=ours, theirs=theirs, first=out)


def _compare(out, ref, what):
    assert_rel_close(out.pred_masks, ref.pred_masks.numpy(), TOL, f"{what} pred_masks")
    assert_rel_close(out.iou_scores, ref.iou_scores.numpy(), TOL, f"{what} iou_scores")
    assert_rel_close(out.object_score_logits, ref.object_score_logits.numpy(), TOL, f"{what} object_score_logits")


def test_image_embeddings_match(tiny_case):
    for ours, theirs in zip(tiny_case["ours"], tiny_case["theirs"].image_embeddings, strict=True):
        assert_rel_close(ours, theirs.permute(0, 2, 3, 1).numpy(), TOL, "image embedding")


def test_pixel_path_one_point(tiny_case):
    _compare(tiny_case["first"], tiny_case["theirs"], "one point from pixels")
    assert tiny_case["first"].pred_masks.shape == (2, 1, 3, 256, 256)


def test_reference_implementation_matches_transformers(tiny_ref, tiny_case):
    """The plain formulation (what the fast paths are tested against) against transformers, pixels to masks."""
    model = Sam2Model(tiny_ref.config, implementation="reference")
    points = np.array([[[[500.0, 375.0]]], [[[120.0, 900.0]]]], np.float32)
    out = jax.jit(lambda p, x, pts: model.apply({"params": p}, x, input_points=pts))(
        tiny_ref.params, tiny_case["pixels"], points
    )
    _compare(out, tiny_case["theirs"], "reference implementation, one point from pixels")


def test_vision_hidden_states_match_transformers(small_ref):
    """``output_hidden_states`` hands back transformers' vision_hidden_states from the same call that answers."""
    s = small_ref.size
    x = np.random.default_rng(8).standard_normal((1, s, s, 3)).astype(np.float32)
    points = np.array([[[[60.0, 100.0]]]], np.float32)
    ref = small_ref.torch_forward(pixel_values=x, input_points=points, output_hidden_states=True)
    run = jax.jit(
        lambda p, x, pts, hidden: small_ref.model.apply(
            {"params": p}, x, input_points=pts, output_hidden_states=hidden
        ),
        static_argnums=3,
    )
    out, plain = run(small_ref.params, x, points, True), run(small_ref.params, x, points, False)
    assert plain.vision_hidden_states is None
    np.testing.assert_array_equal(out.pred_masks, plain.pred_masks)
    assert len(out.vision_hidden_states) == len(ref.vision_hidden_states)
    for i, (ours, theirs) in enumerate(zip(out.vision_hidden_states, ref.vision_hidden_states, strict=True)):
        assert_rel_close(ours, theirs.numpy(), TOL, f"vision hidden state {i}")
    _compare(out, ref, "pixels with output_hidden_states")
    with pytest.raises(ValueError, match="output_hidden_states needs pixel_values"):
        small_ref.model.apply(
            {"params": small_ref.params}, image_embeddings=out.image_embeddings, output_hidden_states=True
        )


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_persam_inputs_match_transformers(tiny_ref, tiny_case, implementation):
    """PerSAM's ``attention_similarity`` (added to the token-to-image logits) and ``target_embedding`` (added
    to the tokens before every layer) against transformers, two objects, both together and each alone."""
    import torch

    rng = np.random.default_rng(9)
    points = np.array([[[[500, 375]], [[650, 750]]]], np.float32)
    labels = np.ones((1, 2, 1), np.int64)
    heads, tokens = tiny_ref.config.mask_decoder_config.num_attention_heads, 6 + 2  # output tokens + point + pad
    similarity = rng.standard_normal((1, 2, heads, tokens, 64 * 64)).astype(np.float32)
    target = rng.standard_normal((1, 2, 1, 256)).astype(np.float32)
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1] for e in _embeddings_torch(tiny_case)]
    model = Sam2Model(tiny_ref.config, implementation=implementation)
    apply = jax.jit(lambda p, kw: model.apply({"params": p}, image_embeddings=emb_ours, **kw))
    plain = apply(tiny_ref.params, dict(input_points=points, input_labels=labels))
    for what, sim, tgt in (("both", similarity, target), ("similarity", similarity, None), ("target", None, target)):
        kwargs = dict(input_points=points, input_labels=labels, attention_similarity=sim, target_embedding=tgt)
        ref = tiny_ref.torch_forward(
            image_embeddings=emb_theirs,
            input_points=points,
            input_labels=labels,
            attention_similarity=None if sim is None else torch.from_numpy(sim.reshape(2, heads, tokens, -1)),
            target_embedding=None if tgt is None else torch.from_numpy(tgt),
        )
        out = apply(tiny_ref.params, {k: v for k, v in kwargs.items() if v is not None})
        _compare(out, ref, f"PerSAM {what} ({implementation})")
        assert not np.allclose(out.pred_masks, plain.pred_masks, atol=1e-3)  # the input matters


def _embeddings_torch(tiny_case):
    return tiny_case["theirs"].image_embeddings


def _parity(tiny_ref, what, emb_ours, emb_theirs, **kwargs):
    """Decode the same prompts from the same embeddings with both models, compare, return ours."""
    ref = tiny_ref.torch_forward(image_embeddings=emb_theirs, **kwargs)
    out = tiny_ref.apply(tiny_ref.params, image_embeddings=emb_ours, **kwargs)
    _compare(out, ref, what)
    return out


CASES = {
    "positive_point": dict(input_points=[[[[500, 375]]]], input_labels=[[[1]]]),
    "positive_and_negative": dict(input_points=[[[[500, 375], [1125, 625], [300, 200]]]], input_labels=[[[1, 0, 1]]]),
    "box": dict(input_boxes=[[[75, 275, 1725 / 1.8, 850]]]),
    "points_and_box": dict(input_points=[[[[500, 375]]]], input_labels=[[[1]]], input_boxes=[[[75, 275, 900, 850]]]),
    "two_objects": dict(input_points=[[[[500, 375]], [[650, 750]]]], input_labels=[[[1], [1]]]),
    "not_a_point_label": dict(input_points=[[[[500, 375], [0, 0]]]], input_labels=[[[1, -1]]]),
    "no_prompt": dict(),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_prompt_cases_single_image(tiny_ref, tiny_case, case, multimask):
    kwargs = {k: np.asarray(v, np.int64 if k == "input_labels" else np.float32) for k, v in CASES[case].items()}
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1] for e in _embeddings_torch(tiny_case)]
    _parity(tiny_ref, case, emb_ours, emb_theirs, multimask_output=multimask, **kwargs)


def test_two_images_padded_objects_and_points(tiny_ref, tiny_case):
    # image 0: two objects with one point each; image 1: one object with two points -> padded with -10
    points = np.array(
        [[[[500, 375], [0, 0]], [[650, 750], [0, 0]]], [[[400, 300], [630, 300]], [[0, 0], [0, 0]]]], np.float32
    )
    labels = np.array([[[1, -10], [1, -10]], [[1, 1], [-10, -10]]], np.int64)
    for multimask in (True, False):
        _parity(
            tiny_ref,
            f"padded batch multimask={multimask}",
            tiny_case["ours"],
            list(_embeddings_torch(tiny_case)),
            input_points=points,
            input_labels=labels,
            multimask_output=multimask,
        )


def test_mask_input_refinement(tiny_ref, tiny_case):
    """The seed's "previous mask as input" example: best mask fed back with image_embeddings reused."""
    points = np.array([[[[500, 375]]]], np.float32)
    labels = np.ones((1, 1, 1), np.int64)
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1] for e in _embeddings_torch(tiny_case)]
    first = tiny_ref.torch_forward(image_embeddings=emb_theirs, input_points=points, input_labels=labels)
    best = int(first.iou_scores.squeeze().argmax())
    mask_input = first.pred_masks[:, :, best].numpy()  # (1, 1, 256, 256)
    new_points = np.array([[[[500, 375], [450, 300]]]], np.float32)
    new_labels = np.ones((1, 1, 2), np.int64)
    out = _parity(
        tiny_ref,
        "mask input",
        emb_ours,
        emb_theirs,
        input_points=new_points,
        input_labels=new_labels,
        input_masks=mask_input,
        multimask_output=False,
    )
    # the mask prompt must matter: without it the answer differs
    plain = tiny_ref.apply(
        tiny_ref.params,
        image_embeddings=emb_ours,
        input_points=new_points,
        input_labels=new_labels,
        multimask_output=False,
    )
    assert not np.allclose(plain.pred_masks, out.pred_masks, atol=1e-3)


def test_labels_default_to_positive(tiny_ref, tiny_case):
    emb = tuple(e[:1] for e in tiny_case["ours"])
    pts = np.array([[[[500, 375]]]], np.float32)
    a = tiny_ref.apply(tiny_ref.params, image_embeddings=emb, input_points=pts)
    b = tiny_ref.apply(
        tiny_ref.params, image_embeddings=emb, input_points=pts, input_labels=np.ones((1, 1, 1), np.int32)
    )
    np.testing.assert_array_equal(np.asarray(a.pred_masks), np.asarray(b.pred_masks))


def test_bad_inputs_are_named(tiny_ref, tiny_case):
    emb = tuple(e[:1] for e in tiny_case["ours"])
    with pytest.raises(ValueError, match="Exactly one of pixel_values or image_embeddings"):
        tiny_ref.model.apply({"params": tiny_ref.params}, input_points=np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match="input_points must have shape"):
        tiny_ref.model.apply({"params": tiny_ref.params}, image_embeddings=emb, input_points=np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="input_labels shape"):
        tiny_ref.model.apply(
            {"params": tiny_ref.params},
            image_embeddings=emb,
            input_points=np.zeros((1, 1, 2, 2)),
            input_labels=np.ones((1, 1, 3)),
        )
    with pytest.raises(ValueError, match="as many bounding boxes"):
        tiny_ref.model.apply(
            {"params": tiny_ref.params},
            image_embeddings=emb,
            input_points=np.zeros((1, 2, 1, 2)),
            input_labels=np.ones((1, 2, 1)),
            input_boxes=np.zeros((1, 1, 4)),
        )
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        tiny_ref.model.apply({"params": tiny_ref.params}, pixel_values=np.zeros((1, 512, 512, 3), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "base_plus", "large"])
def test_full_size_pixel_path(size):
    """Every released size at 1024 px, pixels to masks, one positive and one negative point."""
    from conftest import Reference

    from sam2_jax import get_config

    ref = Reference(get_config(size), seed=3)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 1024, 1024, 3)).astype(np.float32)
    points = np.array([[[[500.0, 375.0], [800.0, 600.0]]]], np.float32)
    labels = np.array([[[1, 0]]], np.int64)
    theirs = ref.torch_forward(pixel_values=pixels, input_points=points, input_labels=labels)
    out = ref.apply(ref.params, pixel_values=pixels, input_points=points, input_labels=labels)
    _compare(out, theirs, size)
    for ours, expected in zip(out.image_embeddings, theirs.image_embeddings, strict=True):
        assert_rel_close(ours, expected.permute(0, 2, 3, 1).numpy(), TOL, f"{size} image embedding")


def test_mask_input_of_another_size_is_resized_like_transformers(tiny_ref, tiny_case):
    """transformers resizes non-256 mask inputs with antialiased bilinear; so must we."""
    rng = np.random.default_rng(5)
    mask = rng.standard_normal((1, 1, 300, 700)).astype(np.float32)
    points = np.array([[[[500, 375]]]], np.float32)
    labels = np.ones((1, 1, 1), np.int64)
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1] for e in _embeddings_torch(tiny_case)]
    ref = tiny_ref.torch_forward(
        image_embeddings=emb_theirs, input_points=points, input_labels=labels, input_masks=mask
    )
    out = tiny_ref.apply(
        tiny_ref.params, image_embeddings=emb_ours, input_points=points, input_labels=labels, input_masks=mask
    )
    _compare(out, ref, "resized mask input")


def _mask_iou(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    inter = (a & b).sum(axis=(-2, -1))
    union = (a | b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def test_bfloat16_agrees_with_float32(tiny_ref, tiny_case):
    """bf16 computation (f32 params; softmax, LayerNorm and score heads in f32) against the f32 model."""
    import jax
    import jax.numpy as jnp

    from sam2_jax import Sam2Model

    model16 = Sam2Model(tiny_ref.config, dtype=jnp.bfloat16)
    pixels = tiny_case["pixels"]
    points = np.array([[[[500, 375]], [[650, 750]]], [[[120, 900]], [[800, 200]]]], np.float32)
    labels = np.ones((2, 2, 1), np.int32)
    boxes = np.array([[[75, 275, 900, 850], [400, 100, 700, 500]]] * 2, np.float32)
    f32 = tiny_ref.apply(tiny_ref.params, image_embeddings=tiny_case["ours"], input_points=points, input_labels=labels)
    f32_box = tiny_ref.apply(tiny_ref.params, image_embeddings=tiny_case["ours"], input_boxes=boxes)

    @jax.jit
    def run16(params):
        emb = model16.apply({"params": params}, pixels, method=Sam2Model.get_image_embeddings)
        a = model16.apply({"params": params}, image_embeddings=emb, input_points=points, input_labels=labels)
        b = model16.apply({"params": params}, image_embeddings=emb, input_boxes=boxes)
        return emb[-1].dtype == jnp.bfloat16, a, b

    is_bf16, p16, b16 = run16(tiny_ref.params)
    assert bool(is_bf16)
    for name, lo, hi in (("points", p16, f32), ("boxes", b16, f32_box)):
        iou = _mask_iou(lo.pred_masks, hi.pred_masks)
        score = np.abs(np.asarray(lo.iou_scores) - np.asarray(hi.iou_scores)).max()
        print(f"[bf16] {name}: min mask IoU {iou.min():.4f}, mean {iou.mean():.4f}, max score diff {score:.4f}")
        assert iou.min() > 0.9 and iou.mean() > 0.95, f"{name}: bf16 masks differ from f32 (IoU {iou.min():.3f})"
        assert score < 0.02, f"{name}: bf16 IoU scores differ by {score:.3f}"


def test_many_objects_decoded_in_chunks(tiny_ref, tiny_case):
    """Five objects: on CPU the decoder scans over chunks of prompts (the last one padded); same answer as
    transformers and as decoding them all at once, with per-object mask prompts and masked padding points."""
    import jax

    from sam2_jax import Sam2Model

    rng = np.random.default_rng(3)
    points = rng.uniform(0, 1024, (1, 5, 2, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (1, 5, 2)).astype(np.int64)
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1] for e in _embeddings_torch(tiny_case)]
    for multimask in (True, False):
        _parity(
            tiny_ref,
            f"5 objects multimask={multimask}",
            emb_ours,
            emb_theirs,
            input_points=points,
            input_labels=labels,
            multimask_output=multimask,
        )

    kwargs = dict(
        image_embeddings=emb_ours,
        input_points=points,
        input_labels=labels,
        input_masks=rng.standard_normal((1, 5, 256, 256)).astype(np.float32),
        prompt_mask=np.array([[[1, 0], [1, 1], [0, 0], [1, 0], [1, 1]]], bool),
    )
    outs = {}
    for chunk in (2, 3, None):
        impl = dataclasses.replace(PRESETS["fast"], prompt_chunk=chunk)
        model = Sam2Model(tiny_ref.config, implementation=impl)
        assert model.bind({"params": tiny_ref.params}).mask_decoder.implementation.prompt_chunk == chunk
        outs[chunk] = jax.jit(lambda p, kw, m=model: m.apply({"params": p}, **kw))(tiny_ref.params, kwargs)
    for chunk in (2, 3):
        for name in ("pred_masks", "iou_scores", "object_score_logits"):
            assert_rel_close(getattr(outs[chunk], name), getattr(outs[None], name), 1e-5, f"chunk {chunk} {name}")


def test_decoder_gradients_match_torch_autograd(tiny_ref, tiny_case):
    """Fine-tuning: d(loss)/d(params) of the prompt encoder and mask decoder equals torch autograd's, with
    three objects (decoded in chunks on CPU) and a mask prompt. The torch gradients are converted by the
    same key table as the weights."""
    import jax
    import torch

    from sam2_jax.checkpoints.key_mapping import convert_state_dict

    rng = np.random.default_rng(5)
    points = rng.uniform(0, 1024, (1, 3, 2, 2)).astype(np.float32)
    labels = np.array([[[1, 0], [1, 1], [0, 1]]], np.int64)
    mask_in = rng.standard_normal((1, 1, 256, 256)).astype(np.float32)
    w_masks = rng.standard_normal((1, 3, 3, 256, 256)).astype(np.float32) / 256
    w_iou = rng.standard_normal((1, 3, 3)).astype(np.float32)
    emb_ours = tuple(e[:1] for e in tiny_case["ours"])
    emb_theirs = [e[:1].clone() for e in _embeddings_torch(tiny_case)]

    tm = tiny_ref.torch_model
    tm.zero_grad()
    out = tm(
        image_embeddings=emb_theirs,
        input_points=torch.from_numpy(points),
        input_labels=torch.from_numpy(labels),
        input_masks=torch.from_numpy(mask_in),
    )
    loss = (out.pred_masks * torch.from_numpy(w_masks)).sum() + (out.iou_scores * torch.from_numpy(w_iou)).sum()
    loss = loss + out.object_score_logits.sum()
    loss.backward()
    grads_t = {
        k: (p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32))
        for k, p in tm.named_parameters()
    }
    # buffers (the random Fourier matrix is one in torch, a param here) get zeros and are not compared
    grads_t.update({k: np.zeros_like(v) for k, v in tiny_ref.state.items() if k not in grads_t})
    expected = convert_state_dict(grads_t, tiny_ref.config)
    tm.zero_grad()

    def loss_fn(params):
        o = tiny_ref.model.apply(
            {"params": params},
            image_embeddings=emb_ours,
            input_points=points,
            input_labels=labels,
            input_masks=mask_in,
        )
        return (o.pred_masks * w_masks).sum() + (o.iou_scores * w_iou).sum() + o.object_score_logits.sum()

    grads = jax.jit(jax.grad(loss_fn))(tiny_ref.params)
    compared = 0
    for part in ("mask_decoder", "prompt_encoder"):
        flat = jax.tree_util.tree_flatten_with_path(grads[part])[0]
        flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected[part])[0])
        for path, g in flat:
            ref = np.asarray(flat_expected[path])
            if not np.any(ref):  # buffers, and parameters the loss does not reach (the unused no_mask_embed)
                continue
            if path[-2:] == (jax.tree_util.DictKey("k_proj"), jax.tree_util.DictKey("bias")):
                # softmax is shift-invariant: the key bias's true gradient is 0 (torch's is rounding noise)
                scale = np.linalg.norm(flat_expected[(*path[:-1], jax.tree_util.DictKey("kernel"))])
                assert np.linalg.norm(ref) < 1e-4 * scale and np.linalg.norm(np.asarray(g)) < 1e-4 * scale
                continue
            assert_rel_close(g, ref, 1e-3, f"grad {part}{jax.tree_util.keystr(path)}")
            compared += 1
    assert compared > 60
