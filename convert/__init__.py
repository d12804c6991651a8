"""The checkpoint-conversion CLI of sam2-jax: ``python -m convert SRC OUT``."""
