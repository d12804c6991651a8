"""Counting XLA compilations from outside the library (the library keeps no test-only counters).

``jit_compiles(fn)`` is how many shapes a ``jax.jit`` function has been compiled for (its cache size).
``count_compiles()`` is a context manager counting every backend compilation in the process while it is open
(through ``jax.monitoring``'s compile-duration events), for functions that ``jit_compiles`` cannot see (``pmap``).
"""

from __future__ import annotations

import contextlib
import threading

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_lock = threading.Lock()
_total = [0]


def _listener(event: str, duration_secs: float, **kwargs) -> None:
    if event == COMPILE_EVENT:
        with _lock:
            _total[0] += 1


jax.monitoring.register_event_duration_secs_listener(_listener)  # once, when this module is first imported


def jit_compiles(fn) -> int:
    """Compilations held by a ``jax.jit``-wrapped function."""
    return fn._cache_size()


class _Count:
    def __init__(self):
        self.start = _total[0]
        self.end: int | None = None

    @property
    def n(self) -> int:
        return (_total[0] if self.end is None else self.end) - self.start


@contextlib.contextmanager
def count_compiles():
    """``with count_compiles() as c: ...`` then ``c.n`` compilations happened inside the block."""
    c = _Count()
    try:
        yield c
    finally:
        c.end = _total[0]
