"""``python -m convert SRC OUT``, run from the repository root (not installed): see ``sam2_jax.cli.convert``."""
