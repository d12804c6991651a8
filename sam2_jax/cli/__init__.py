"""The ``sam2-jax`` command, one module per subcommand:

    sam2-jax segment IMAGE --point X,Y [--point X,Y --label 0 ...] [--box X1,Y1,X2,Y2] \
        [--model MODEL_OR_DIR] --out mask.png [--overlay overlay.png] [--multimask]
    sam2-jax generate IMAGE --out DIR [--model MODEL_OR_DIR] [--points-per-side 32] [--points-per-batch 64]
    sam2-jax track VIDEO --point FRAME:X,Y[:OBJ] [--negative FRAME:X,Y[:OBJ]] [--box FRAME:X1,Y1,X2,Y2[:OBJ]] \
        --out DIR [--model MODEL_OR_DIR] [--overlay] [--preview gif|webp] [--frames START:END] [--restart]
    sam2-jax convert SRC OUT [--size SIZE] [--force]
    sam2-jax export SRC OUT [--format transformers|pt] [--force]
    sam2-jax finetune DATA --model SRC --out OUT [--train decoder|prompt+decoder|all] [--steps N] \
        [--batch-size B] [--lr LR] [--coco FILE] [--eval-fraction F] [--seed S]
    sam2-jax annotate DIR --model SRC --out OUT [--categories cat,dog] [--host 127.0.0.1] [--port 0] \
        [--token T] [--cache-mb N] [--open]

``--model`` is anything ``sam2_jax.load`` accepts: a Hub id (default ``facebook/sam2.1-hiera-tiny``), a
converted directory, a transformers directory or an original ``.pt``. Coordinates are in image pixels.

A command is a module of this package with ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed arguments, returns the exit code); adding one is that module plus its name in
``COMMANDS``. Shared argument types and image files are in ``common``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# modules of this package, in --help order
COMMANDS = ("segment", "generate", "track", "convert", "export", "finetune", "annotate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-jax", description="SAM 2 segmentation in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
