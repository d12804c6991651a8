"""How the networks are evaluated: the plain formulation that mirrors transformers, or faster ones, by name.

Every rewritten evaluation order sits beside the plain one it replaces and gives the same numbers up to float32
rounding (``tests/test_implementation.py`` runs each against the plain one). An ``Implementation`` names one
choice per place; a model takes one (``Sam2Model(config, implementation=...)``) or a preset's name:

  ``"reference"``  every place plain, as transformers computes it: read this one first.
  ``"fast"``       every measured speed-up on.
  ``"auto"``       the default of the platform the model runs on, from ``DEFAULTS`` below.

The places:

  global_attention  "plain": softmax(q k^T) v in one piece. "chunked": long sequences (Hiera's global blocks,
                    4096 x 4096) in chunks of ``attention_chunk`` queries, each chunk's logits kept in cache and
                    the softmax normalised after the value product (``layers.attention``).
  cross_attention   "plain": project queries, keys and values, then attend. "reassociated": between a few
                    tokens and the 4096 image tokens, fold the image side's projections into the few tokens
                    where that costs fewer FLOPs, so the image tokens are never projected
                    (``two_way_transformer.Sam2Attention``). In memory attention, "reassociated" attends
                    over the 64-channel memories and projects the result (softmax(QK^T) (M Wv + bv) =
                    (softmax(QK^T) M) Wv + bv): the value product shrinks 4x (``memory_attention``).
  upscaling         "plain": two transposed convolutions on the interleaved image, then the mask product.
                    "subpixel": keep (pixel, 2, 2) offsets through both and interleave only the returned masks,
                    multiplying only the mask tokens that can be returned (``mask_decoder``).
  prompt_chunk      None: all prompts of a call at once. k: prompts decoded k at a time in a ``scan``, so that
                    one prompt's ~16 MB of activations stays in cache.
  hoist_image_side  whether layer 0's projections of the image side are computed once per call and shared by
                    every prompt (when that is cheaper than the reassociated per-prompt order).

Why the defaults are what they are: ``python benchmarks/bench_model.py --sizes tiny --implementations fast
reference`` on a 2-core x86-64 CPU, float32, medians, both in one run (2026-12-02): encoder 2.81 s fast against
3.31 s reference (1.18x), one point 29 against 49 ms (1.68x), one box 33 against 54 ms (1.62x), 64 objects 1.44
against 2.76 s (1.92x); ``benchmarks/NOTES.md`` has the profiles behind each path. No GPU or TPU has been measured
yet, so those platforms run the reference formulation until a benchmark there says otherwise.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One evaluation choice per place; see the module docstring."""

    global_attention: str = "plain"  # "plain" | "chunked"
    cross_attention: str = "plain"  # "plain" | "reassociated"
    upscaling: str = "plain"  # "plain" | "subpixel"
    prompt_chunk: int | None = None  # prompts per scan step; None: all at once
    hoist_image_side: bool = False
    attention_chunk: int = 256  # queries per chunk for "chunked" attention

    def __post_init__(self):
        for name, allowed in (
            ("global_attention", ("plain", "chunked")),
            ("cross_attention", ("plain", "reassociated")),
            ("upscaling", ("plain", "subpixel")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Implementation.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.prompt_chunk is not None and (not isinstance(self.prompt_chunk, int) or self.prompt_chunk < 1):
            raise ValueError(f"Implementation.prompt_chunk must be a positive int or None, got {self.prompt_chunk!r}")


PRESETS: dict[str, Implementation] = {
    "reference": Implementation(),
    "fast": Implementation(
        global_attention="chunked",
        cross_attention="reassociated",
        upscaling="subpixel",
        prompt_chunk=1,
        hoist_image_side=True,
    ),
}

# The preset each platform runs under "auto", chosen from a benchmark on that platform (module docstring).
DEFAULTS: dict[str, str] = {"cpu": "fast", "gpu": "reference", "cuda": "reference", "tpu": "reference"}


def resolve(implementation: Implementation | str, platform: str | None = None) -> Implementation:
    """An ``Implementation``, a preset's name, or "auto" (the default of ``platform``, by default the platform
    of JAX's default device) -> an ``Implementation``."""
    if isinstance(implementation, Implementation):
        return implementation
    if implementation == "auto":
        platform = platform or jax.devices()[0].platform
        implementation = DEFAULTS.get(platform, "reference")
    if implementation not in PRESETS:
        raise ValueError(
            f"unknown implementation {implementation!r}: use 'auto', one of {sorted(PRESETS)}, or an Implementation"
        )
    return PRESETS[implementation]
