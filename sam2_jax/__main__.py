"""``python -m sam2_jax segment|generate|convert ...``: the same as the ``sam2-jax`` command."""

import sys

from .cli import main

sys.exit(main())
