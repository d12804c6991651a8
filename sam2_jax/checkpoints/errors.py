"""The error types of checkpoint reading, conversion and download.

In: nothing. Out: ``CheckpointError``, raised for a file that is not a SAM 2 checkpoint, is truncated or cannot
be read, and for a state dict whose keys or shapes do not fit the model (every offending key in one message).
It is a ``ValueError``, so callers that catch bad input generally catch it too. ``HubUnavailableError`` (a
``FileNotFoundError``): a Hub id that is neither in the local cache nor downloadable (no network, or
``HF_HUB_OFFLINE``), said in one line that names what to pass instead.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "HubUnavailableError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model: lists every offending key at once."""


class HubUnavailableError(FileNotFoundError):
    """A Hub checkpoint that is not cached and cannot be downloaded; the message says what to pass instead."""
