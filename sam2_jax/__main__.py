"""``python -m sam2_jax segment ...``: the same as the ``sam2-jax`` command."""

import sys

from .cli import main

sys.exit(main())
