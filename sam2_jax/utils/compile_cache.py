"""JAX's persistent compilation cache for sam2-jax's entry points, so that a second run does not compile again.

``enable_compile_cache()`` is called by the command line and by every ``from_pretrained`` (image predictor, mask
generator, video predictor); the functional API (``sam2_jax.load``, ``model.apply``) leaves JAX's configuration
alone. It points JAX at a directory under the user's cache home, ``$XDG_CACHE_HOME/sam2_jax/xla`` (by default
``~/.cache/sam2_jax/xla``), and caches every compilation that took at least ``MIN_COMPILE_SECONDS``.

  SAM2_JAX_COMPILE_CACHE=/some/dir   use that directory instead
  SAM2_JAX_COMPILE_CACHE=0           (or ``off``, ``false``, ``no``) leave the cache off

A cache directory the user already configured in JAX (``jax_compilation_cache_dir``) wins and is left as it is.
In: nothing (or an explicit directory). Out: the directory in use, or None when off. Idempotent.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "SAM2_JAX_COMPILE_CACHE"
MIN_COMPILE_SECONDS = 0.2  # the encoder and decoders take 0.3-3 s to compile on a CPU; tiny helpers are left out
_OFF = {"0", "off", "false", "no", "none"}


def default_cache_dir() -> Path:
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(home) / "sam2_jax" / "xla"


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (see the module docstring); returns its directory or None."""
    import jax

    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in _OFF:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    directory = Path(path or setting or default_cache_dir()).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
