"""Progress reporting: a tqdm bar when asked for, or a no-op with the same methods."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class NoProgress:
    """Accepts what a tqdm bar accepts and does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CallbackProgress(NoProgress):
    """Calls ``callback(done, total)`` at the start and after every ``update`` (a server's progress report)."""

    def __init__(self, total: int | None, callback: Callable[[int, int | None], None]):
        self.total, self.done, self.callback = total, 0, callback
        self._lock = threading.Lock()  # batches may end in several threads
        callback(0, total)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            done = self.done
        self.callback(done, self.total)


def progress_bar(total: int | None, enabled: Any = True, desc: str | None = None, unit: str = "it") -> Any:
    """A tqdm bar over ``total`` steps when ``enabled`` is True, a ``CallbackProgress`` when it is a callable
    ``(done, total) -> None``, else a ``NoProgress``."""
    if callable(enabled):
        return CallbackProgress(total, enabled)
    if not enabled:
        return NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
