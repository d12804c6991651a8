"""Hub repo ids (``facebook/sam2.1-hiera-tiny``) -> a local snapshot directory through huggingface_hub's cache.

In: a repo id (and optionally a cache directory and a revision). Out: the snapshot directory holding the repo's
transformers files (``config.json``, ``model.safetensors``; nothing else is fetched), which ``loading`` reads
like any local transformers directory. ``HF_HUB_OFFLINE=1`` (read at call time) or ``local_files_only=True``
uses the cache alone, so tests run against a fake cache directory and never reach the network. A repo that is
neither cached nor downloadable raises ``HubUnavailableError`` with one line naming what to pass instead. A string that
names an existing path is a path, never a repo id.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Sam2Config, get_config
from .errors import HubUnavailableError
from .readers import CONFIG_FILE, TRANSFORMERS_WEIGHTS

HUB_FILES = [CONFIG_FILE, TRANSFORMERS_WEIGHTS]

__all__ = ["HUB_FILES", "is_repo_id", "download", "known_config"]


def is_repo_id(src: str | os.PathLike) -> bool:
    """``owner/name`` that is not an existing local path."""
    parts = str(src).split("/")
    return isinstance(src, str) and len(parts) == 2 and all(parts) and not os.path.exists(src)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def download(
    repo_id: str,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """Fetch (or find in the cache) the transformers files of a Hub repo; returns the snapshot directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    local_only = _offline() if local_files_only is None else local_files_only
    try:
        path = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_FILES, local_files_only=local_only
        )
    except LocalEntryNotFoundError:  # offline, or the Hub cannot be reached, and nothing cached
        why = "offline mode is on (HF_HUB_OFFLINE)" if local_only else "the Hugging Face Hub cannot be reached"
        raise HubUnavailableError(
            f"{repo_id} is not in the local Hugging Face cache and {why}; pass a local checkpoint instead: a "
            "converted directory (sam2-jax convert), a transformers directory (config.json + model.safetensors) "
            "or an original .pt"
        ) from None
    return Path(path)


def known_config(repo_id: str) -> Sam2Config | None:
    """The config of a known checkpoint name (``sam2_jax.config.CHECKPOINTS``), or None."""
    try:
        return get_config(repo_id)
    except KeyError:
        return None
