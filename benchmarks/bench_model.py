"""Encoder and decoder latency of sam2-jax against transformers' Sam2Model, measured in the same run.

    python benchmarks/bench_model.py [--sizes tiny base_plus] [--repeats 5] [--dtype float32]
        [--implementations auto reference fast]

Both models carry the same randomised weights (speed does not depend on their values). Prints one table:
medians over repeats after a warm-up call, sam2-jax compile time apart, and the ratio transformers / sam2-jax
(> 1 means sam2-jax is faster). With several ``--implementations`` (``sam2_jax.modeling.implementation``) each
is timed in the same run against the same transformers timings: this is how a platform's default is chosen.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import machine, median_time, peak_rss_mb  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base_plus"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-64", action="store_true", help="skip the 64-object decoder case")
    parser.add_argument("--implementations", nargs="+", default=["auto"], help="auto, reference, fast")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    print(f"# {machine()}, dtype {args.dtype}")
    rows = []
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 1024, 1024, 3)).astype(np.float32)
    for size in args.sizes:
        rows += bench_size(size, dtype, pixels, args.repeats, args.skip_64, args.implementations)

    head = f"{'size':10s} {'implementation':15s} {'what':32s} {'transformers s':>15s} {'sam2-jax s':>11s}"
    print(f"{head} {'ratio':>7s} {'jax compile s':>14s}")
    for size, impl, name, t_torch, t_jax, compile_s in rows:
        print(
            f"{size:10s} {impl:15s} {name:32s} {t_torch:15.4f} {t_jax:11.4f} {t_torch / t_jax:7.2f} {compile_s:14.2f}"
        )
    print(f"# peak host memory of this process (both models): {peak_rss_mb():.0f} MiB")


def bench_size(size, dtype, pixels, repeats, skip_64, implementations=("auto",)):
    """Rows (size, implementation, case, transformers s, sam2-jax s, sam2-jax compile s) for one model size.

    transformers is timed once per case; each implementation's times sit beside it (interleaved per case)."""
    import torch
    from reference import build_transformers_model, state_dict_numpy

    from sam2_jax import Sam2Model, get_config
    from sam2_jax.checkpoints.key_mapping import convert_state_dict

    rng = np.random.default_rng(0)
    pixels_t = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    config = get_config(size)
    tm = build_transformers_model(config, seed=0)
    params = jax.device_put(convert_state_dict(state_dict_numpy(tm), config))
    fns = {}
    for impl in implementations:
        model = Sam2Model(config, dtype, implementation=impl)
        fns[impl] = (
            jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, method=Sam2Model.get_image_embeddings)),
            jax.jit(lambda p, e, m=model, **kw: m.apply({"params": p}, image_embeddings=e, **kw)),
        )
    rows = []

    def torch_encoder():
        with torch.no_grad():
            return tm.get_image_embeddings(pixels_t)

    t_torch, _ = median_time(torch_encoder, repeats)
    for impl, (embed, _) in fns.items():
        t_jax, first = median_time(lambda embed=embed: jax.block_until_ready(embed(params, pixels)), repeats)
        rows.append((size, impl, "encoder, batch 1", t_torch, t_jax, first - t_jax))

    emb = fns[implementations[0]][0](params, pixels)
    emb_t = torch_encoder()
    cases = {
        "decoder, 1 point": dict(
            input_points=np.array([[[[500.0, 375.0]]]], np.float32), input_labels=np.ones((1, 1, 1), np.int32)
        ),
        "decoder, 1 box": dict(input_boxes=np.array([[[75.0, 275.0, 900.0, 850.0]]], np.float32)),
    }
    if not skip_64:
        cases["decoder, 64 objects x 1 point"] = dict(
            input_points=rng.uniform(0, 1024, (1, 64, 1, 2)).astype(np.float32),
            input_labels=np.ones((1, 64, 1), np.int32),
        )
    for name, kw in cases.items():
        kw_t = {k: torch.from_numpy(v).long() if v.dtype.kind == "i" else torch.from_numpy(v) for k, v in kw.items()}

        def torch_decoder(kw_t=kw_t):
            with torch.no_grad():
                return tm(image_embeddings=emb_t, **kw_t).pred_masks

        n = repeats if "64" in name else 4 * repeats  # single prompts are quick and noisier: more repeats
        t_torch, _ = median_time(torch_decoder, n)
        for impl, (_, decode) in fns.items():

            def jax_decoder(kw=kw, decode=decode):
                return jax.block_until_ready(decode(params, emb, **kw).pred_masks)

            t_jax, first = median_time(jax_decoder, n)
            rows.append((size, impl, name, t_torch, t_jax, first - t_jax))
    return rows


if __name__ == "__main__":
    main()
