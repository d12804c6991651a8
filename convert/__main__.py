"""``python -m convert SRC OUT [--size SIZE | --config YAML] [--image-size N] [--force]`` from the repository
root: ``sam2-jax convert``.

A thin entry point kept for the documented command line; the logic is ``sam2_jax.cli.convert``.
"""

import sys

from sam2_jax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m convert"))
