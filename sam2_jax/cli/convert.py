"""``sam2-jax convert SRC OUT [--size SIZE | --config YAML] [--image-size N] [--force]`` (also ``python -m convert``).

Converts a SAM 2 checkpoint into a sam2-jax directory that loads without torch. SRC: a transformers model
directory or ``model.safetensors`` (image or Hub video layout), an original facebookresearch ``.pt`` checkpoint
(torch needed), or a Hub repo id (``facebook/sam2.1-hiera-tiny``). OUT: a new directory with ``config.json`` and
``flax_params.safetensors``; written under a temporary name and renamed at the end, never overwritten without
``--force``. Progress goes to stderr; bad input exits 1 with one line ``error: <reason>``.

``--image-size N`` (or ``--config``, the official yaml the checkpoint was trained with) gives the input size of a
checkpoint trained at another size than 1024 px (MedSAM2's 512): no tensor depends on it, so a ``.pt`` cannot tell
it, and one converted without it is a 1024-px model that runs and is wrong. It is written into OUT's
``config.json``, which then needs it no more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import error_line, log

DESCRIPTION = "Convert a SAM 2 checkpoint into a sam2-jax directory that loads without torch."
EPILOG = (
    "An original .pt does not record the input size it was trained at (no tensor depends on it): one trained at "
    "another size than 1024 px (MedSAM2: 512) must be given --image-size or its --config yaml, else it converts "
    "into a 1024-px model that runs and is silently wrong. The size is kept in OUT/config.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint file, directory or Hub repo id")
    parser.add_argument("out", help="output directory (must not exist unless --force)")
    parser.add_argument(
        "--size",
        help="model size or checkpoint name (tiny, small, base_plus, large, facebook/sam2.1-hiera-tiny...); "
        "inferred from config.json or the tensors when omitted",
    )
    parser.add_argument(
        "--config",
        help="the official model yaml the checkpoint was built with (sam2.1_hiera_t512.yaml...): its trunk, "
        "model.image_size and video options (instead of --size)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="input size in px the checkpoint was trained at (a multiple of 16; default: config.json's, the "
        "yaml's, else 1024); a .pt cannot tell it, see below",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--cache-dir", help="huggingface_hub cache directory for repo ids")


def register(sub) -> None:
    parser = sub.add_parser("convert", help="convert a checkpoint into a directory that loads without torch")
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from flax.traverse_util import flatten_dict

    from ..checkpoints import CheckpointError, load_params, save_converted
    from ..config import CHECKPOINTS

    out = Path(args.out)
    try:
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it")
        start = time.perf_counter()
        log(f"[1/3] reading {args.src}")
        if args.size and args.config:
            raise ValueError("give the model as --size or as --config, not both")
        config, params = load_params(args.src, args.config or args.size, args.cache_dir, args.image_size)
        # the release and size, by the short names of the original files (sam2.1_hiera_tiny...), and the input size
        px = config.prompt_encoder_config.image_size
        full = config.at_image_size(1024)
        size = next((n for n, cfg in CHECKPOINTS.items() if "/" not in n and cfg == full), "custom config")
        log(f"[2/3] converted and checked {len(flatten_dict(params))} tensors against the model ({size}, {px} px)")
        save_converted(out, config, params, force=args.force)
        log(f"[3/3] wrote {out} in {time.perf_counter() - start:.1f} s")
    except (CheckpointError, FileNotFoundError, FileExistsError, KeyError, ValueError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m convert") -> int:
    """The conversion command on its own (``convert/__main__.py``)."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    return run(parser.parse_args(argv))
