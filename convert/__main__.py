"""Convert a SAM 2 checkpoint into a sam2-jax directory that loads without torch.

    python -m convert SRC OUT [--size tiny|small|base_plus|large] [--force]

SRC: a transformers model directory or ``model.safetensors`` (image or Hub video layout), an original
facebookresearch ``.pt`` checkpoint (torch needed), or a Hub repo id (``facebook/sam2.1-hiera-tiny``).
OUT: a new directory with ``config.json`` and ``flax_params.safetensors``; written under a temporary name and
renamed at the end, never overwritten without ``--force``. Exits 1 with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="checkpoint file, directory or Hub repo id")
    parser.add_argument("out", help="output directory (must not exist unless --force)")
    parser.add_argument(
        "--size",
        help="model size or checkpoint name (tiny, small, base_plus, large, facebook/sam2.1-hiera-tiny...); "
        "inferred from config.json or the tensors when omitted",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--cache-dir", help="huggingface_hub cache directory for repo ids")
    args = parser.parse_args(argv)

    from sam2_jax.checkpoints.key_mapping import CheckpointError
    from sam2_jax.checkpoints.loading import load_params, save_converted

    out = Path(args.out)
    try:
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it")
        start = time.perf_counter()
        _log(f"[1/3] reading {args.src}")
        config, params = load_params(args.src, args.size, args.cache_dir)
        n = sum(1 for _ in _leaves(params))
        _log(f"[2/3] converted and checked {n} tensors against the model ({_size_name(config)})")
        save_converted(out, config, params, force=args.force)
        _log(f"[3/3] wrote {out} in {time.perf_counter() - start:.1f} s")
    except (CheckpointError, FileNotFoundError, FileExistsError, KeyError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0] if not isinstance(e, CheckpointError) else " ".join(str(e).split())
        print(f"error: {reason}", file=sys.stderr)
        return 1
    return 0


def _leaves(tree):
    for v in tree.values():
        if isinstance(v, dict):
            yield from _leaves(v)
        else:
            yield v


def _size_name(config) -> str:
    from sam2_jax.config import MODEL_SIZES

    return next((name for name, cfg in MODEL_SIZES.items() if cfg == config), "custom config")


if __name__ == "__main__":
    sys.exit(main())
