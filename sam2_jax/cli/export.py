"""``sam2-jax export SRC OUT --format transformers|pt [--force]``: params back to PyTorch.

SRC: anything ``sam2_jax.load_params`` accepts, typically a converted (fine-tuned) directory. ``--format
transformers`` (the default) writes OUT as a directory with ``config.json`` and ``model.safetensors`` that
``transformers.Sam2Model.from_pretrained`` (image params) or ``Sam2VideoModel.from_pretrained`` (video params)
loads; ``--format pt`` writes OUT as an original facebookresearch ``.pt`` file (``{"model": state_dict}``, needs
torch and the video params) that ``sam2.build_sam.build_sam2`` loads. OUT is written under a temporary name and
renamed at the end, never overwritten without ``--force``. Progress goes to stderr; bad input exits 1 with one
line ``error: <reason>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import error_line, log

DESCRIPTION = "Export SAM 2 params back to PyTorch: a transformers directory or an original .pt checkpoint."
FORMATS = ("transformers", "pt")  # sam2_jax.checkpoints.export.FORMATS, repeated to keep --help import-light


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="converted directory, checkpoint file or Hub repo id")
    parser.add_argument("out", help="output directory (transformers) or .pt file (pt); must not exist unless --force")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="transformers",
        help="transformers: config.json + model.safetensors; pt: the original {'model': state_dict} (default "
        "transformers)",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--cache-dir", help="huggingface_hub cache directory for repo ids")


def register(sub) -> None:
    parser = sub.add_parser("export", help="export params to a transformers directory or an original .pt")
    parser.description = DESCRIPTION
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from flax.traverse_util import flatten_dict

    from ..checkpoints import CheckpointError, load_params
    from ..checkpoints.export import export

    out = Path(args.out)
    try:
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it")
        start = time.perf_counter()
        log(f"[1/2] reading {args.src}")
        config, params = load_params(args.src, None, args.cache_dir)
        log(f"[2/2] exporting {len(flatten_dict(params))} tensors as {args.format}")
        export(params, config, out, args.format, force=args.force)
        log(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    except (CheckpointError, FileNotFoundError, FileExistsError, KeyError, ValueError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 1
    return 0
