"""Every usage example of the seed document (transformers' SAM 2 docs page), run through transformers and through
sam2-jax on the real photographs, with the same randomised tiny model: the post-processed masks agree.

Two comparisons per example. ``exact``: our processor's prompts and our model, fed transformers' pixel values,
against transformers end to end; only float noise separates them. ``pipeline``: our processor's own pixels too
(Pillow's resize, within one 8-bit level of transformers'), which moves a few boundary pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES as IMAGES
from conftest import assert_rel_close
from PIL import Image

import sam2_jax

TRUCK = [[[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]]]
GROCERIES = [[[450, 170, 520, 350], [350, 190, 450, 350], [500, 170, 580, 350], [580, 170, 640, 350]]]

# name: (images, prompts, multimask_output); the second image of the batched examples is groceries.jpg (the
# docs' dog picture is not on this machine)
EXAMPLES = {
    "single_point": (["truck"], dict(input_points=[[[[500, 375]]]], input_labels=[[[1]]]), True),
    "multiple_points": (["truck"], dict(input_points=[[[[500, 375], [1125, 625]]]], input_labels=[[[1, 1]]]), True),
    "box": (["truck"], dict(input_boxes=[[[75, 275, 1725, 850]]]), True),
    "multiple_objects": (
        ["truck"],
        dict(input_points=[[[[500, 375]], [[650, 750]]]], input_labels=[[[1], [1]]]),
        False,
    ),
    "batched_images": (
        ["truck", "groceries"],
        dict(input_points=[[[[500, 375]]], [[[770, 200]]]], input_labels=[[[1]], [[1]]]),
        False,
    ),
    "batched_objects": (
        ["truck", "groceries"],
        dict(input_points=[[[[500, 375]], [[650, 750]]], [[[770, 200]]]], input_labels=[[[1], [1]], [[1]]]),
        False,
    ),
    "batched_objects_multiple_points": (
        ["truck", "groceries"],
        dict(
            input_points=[[[[500, 375]], [[650, 750]]], [[[400, 300]], [[630, 300], [550, 300]]]],
            input_labels=[[[1], [1]], [[1], [1, 1]]],
        ),
        False,
    ),
    "batched_boxes": (["truck", "groceries"], dict(input_boxes=TRUCK + GROCERIES), False),
}


@pytest.fixture(scope="module")
def photos():
    return {name: Image.open(f"{IMAGES}/{name}.jpg").convert("RGB") for name in ("truck", "groceries")}


@pytest.fixture(scope="module")
def processors():
    import transformers

    theirs = transformers.Sam2Processor(image_processor=transformers.Sam2ImageProcessor())
    return theirs, sam2_jax.Sam2Processor()


@pytest.fixture(scope="module")
def embeddings(tiny_ref, photos, processors):
    """Per photo: transformers' embeddings, ours from transformers' pixels, ours from our pixels."""
    import torch

    theirs_proc, ours_proc = processors
    out = {}
    for name, image in photos.items():
        pixels = theirs_proc(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            ref = tiny_ref.torch_model.get_image_embeddings(pixels)
        exact = tiny_ref.embed(tiny_ref.params, pixels.permute(0, 2, 3, 1).numpy())
        own = tiny_ref.embed(tiny_ref.params, ours_proc(images=image)["pixel_values"])
        out[name] = (ref, exact, own)
    return out


def _stack(embs, which):
    import torch

    if which == 0:
        return [torch.cat(level) for level in zip(*embs, strict=True)]
    return tuple(np.concatenate([np.asarray(e) for e in level]) for level in zip(*embs, strict=True))


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def _run(tiny_ref, processors, photos, embeddings, names, prompts, multimask, input_masks=None, prev=None):
    """Returns (transformers' outputs and masks, ours exact, ours pipeline)."""
    import torch

    theirs_proc, ours_proc = processors
    images = [photos[n] for n in names]
    t_in = theirs_proc(images=images, return_tensors="pt", **prompts)
    t_in.pop("pixel_values")
    o_in = ours_proc(images=images, **prompts)
    pixels = o_in.pop("pixel_values")
    assert pixels.shape == (len(names), 1024, 1024, 3)
    for key in t_in:  # the processors agree on every prompt tensor
        np.testing.assert_allclose(o_in[key], t_in[key].numpy(), rtol=1e-6, atol=1e-4, err_msg=key)

    kw = {k: o_in[k] for k in ("input_points", "input_labels", "input_boxes") if k in o_in}
    results = []
    for which in range(3):
        emb = _stack([embeddings[n][which] for n in names], which)
        masks_in = None if input_masks is None else input_masks[which]
        if which == 0:
            with torch.no_grad():
                kwargs = {} if masks_in is None else {"input_masks": masks_in}
                out = tiny_ref.torch_model(**t_in, image_embeddings=emb, multimask_output=multimask, **kwargs)
            masks = theirs_proc.post_process_masks(out.pred_masks, t_in["original_sizes"])
            results.append((out.pred_masks.numpy(), out.iou_scores.numpy(), [m.numpy() for m in masks]))
        else:
            out = tiny_ref.apply(
                tiny_ref.params, image_embeddings=emb, multimask_output=multimask, input_masks=masks_in, **kw
            )
            masks = ours_proc.post_process_masks(np.asarray(out.pred_masks), o_in["original_sizes"])
            results.append((np.asarray(out.pred_masks), np.asarray(out.iou_scores), masks))
    return results


def _check(results, what):
    (_, ref_scores, ref_masks), (_, scores, masks), (_, own_scores, own_masks) = results
    assert_rel_close(scores, ref_scores, 1e-4, f"{what} scores")
    ious = []
    for ours, theirs, own in zip(masks, ref_masks, own_masks, strict=True):
        assert ours.shape == theirs.shape == own.shape and ours.dtype == np.bool_
        flipped = np.mean(ours != theirs)
        assert flipped <= 1e-5, f"{what}: {flipped:.2e} of mask pixels differ from transformers"
        flat = own.shape[-2:]
        ious += [_iou(a, b) for a, b in zip(own.reshape(-1, *flat), theirs.reshape(-1, *flat), strict=True)]
    score_diff = np.abs(own_scores - ref_scores).max()
    print(f"[parity] {what}: pipeline mask IoU min {min(ious):.4f}, score diff {score_diff:.1e}")
    assert min(ious) >= 0.995, f"{what}: through our own pixels the mask IoU drops to {min(ious):.4f}"


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_seed_example(tiny_ref, processors, photos, embeddings, example):
    names, prompts, multimask = EXAMPLES[example]
    _check(_run(tiny_ref, processors, photos, embeddings, names, prompts, multimask), example)


def test_seed_example_previous_mask_as_input(tiny_ref, processors, photos, embeddings):
    """The docs' refinement loop: best mask of a first click fed back with a second click, embeddings reused."""
    import torch

    first = _run(
        tiny_ref,
        processors,
        photos,
        embeddings,
        ["truck"],
        dict(input_points=[[[[500, 375]]]], input_labels=[[[1]]]),
        True,
    )
    _check(first, "first click")
    inputs = []
    for which, (low_res, scores, _) in enumerate(first):
        best = low_res[:, :, int(np.argmax(scores.squeeze()))]
        inputs.append(torch.from_numpy(best) if which == 0 else best)
    second = dict(input_points=[[[[500, 375], [450, 300]]]], input_labels=[[[1, 1]]])
    _check(_run(tiny_ref, processors, photos, embeddings, ["truck"], second, False, input_masks=inputs), "refinement")
