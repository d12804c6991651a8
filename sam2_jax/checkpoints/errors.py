"""The one error type of checkpoint reading and conversion.

In: nothing. Out: ``CheckpointError``, raised for a file that is not a SAM 2 checkpoint, is truncated or cannot
be read, and for a state dict whose keys or shapes do not fit the model (every offending key in one message).
It is a ``ValueError``, so callers that catch bad input generally catch it too.
"""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model: lists every offending key at once."""
