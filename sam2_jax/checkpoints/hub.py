"""Hub repo ids (``facebook/sam2.1-hiera-tiny``) -> a local snapshot directory through huggingface_hub's cache.

In: a repo id (and optionally a cache directory and a revision). Out: the snapshot directory holding the repo's
transformers files (``config.json``, ``model.safetensors``; nothing else is fetched), which ``loading`` reads
like any local transformers directory. ``HF_HUB_OFFLINE=1`` (read at call time) or ``local_files_only=True``
uses the cache alone, so tests run against a fake cache directory and never reach the network. A string that
names an existing path is a path, never a repo id.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Sam2Config, get_config
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

    local_only = _offline() if local_files_only is None else local_files_only
    path = snapshot_download(
        repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_FILES, local_files_only=local_only
    )
    return Path(path)


def known_config(repo_id: str) -> Sam2Config | None:
    """The config of a known checkpoint name (``sam2_jax.config.CHECKPOINTS``), or None."""
    try:
        return get_config(repo_id)
    except KeyError:
        return None
