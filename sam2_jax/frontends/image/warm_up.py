"""``Sam2ImagePredictor.warm_up``: compile what a ``predict`` call will need before the image is encoded.

A first ``predict`` on a new image size pays for tracing and compiling the decoder's prompt bucket, the
post-processing to that size and a few small device ops (slicing the embedding, taking the scores): ~1 s on a
2-core CPU with an empty compilation cache, ~0.5 s with a warm one. None of it depends on the image's pixels, only
on its size and on the prompts' shapes, so it can run while the encoder runs.

  warm_up(predictor, original_size (H, W), predict_args, background) -> Future | None

runs ``predict``'s own path (``Sam2ImagePredictor.predict_embedded``) once on a zero embedding whose shapes and dtypes
are the encoder's (``jax.eval_shape``, nothing is encoded), with ``predict_args`` = (point_coords, point_labels,
box, mask_input, multimask_output, return_logits, normalize_coords) as ``predict`` takes them. The same functions,
shapes and devices as the real call, so that call finds them compiled (``tests/test_warm_up.py`` counts the
compiles of the real call from outside: none). Invalid prompts raise here as they would in ``predict``; in the
background the error is raised by the future's ``result()``. Nothing is stored on the predictor: ``predict``'s
stateless path is safe to run beside ``set_image`` in another thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp

from .prompt_decoding import ImageEmbedding


def _run(predictor, original_size: tuple[int, int], predict_args: tuple) -> None:
    s = predictor.image_size
    pixels = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
    shapes = jax.eval_shape(predictor._encode, predictor.params, pixels)
    embedding = ImageEmbedding(tuple(jnp.zeros(x.shape, x.dtype) for x in shapes), (original_size,))
    predictor.predict_embedded(embedding, *predict_args)


def warm_up(predictor, original_size: tuple[int, int], predict_args: tuple, background: bool) -> Future | None:
    """See the module docstring."""
    if len(original_size) != 2 or min(original_size) < 1:
        raise ValueError(f"original_size must be (height, width) in pixels, got {original_size}")
    if not background:
        _run(predictor, original_size, predict_args)
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam2-jax-warm-up")
    future = pool.submit(_run, predictor, original_size, predict_args)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future
