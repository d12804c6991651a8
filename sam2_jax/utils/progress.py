"""Progress reporting: a tqdm bar when asked for, or a no-op with the same methods."""

from __future__ import annotations

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


def progress_bar(total: int | None, enabled: bool = True, desc: str | None = None, unit: str = "it") -> Any:
    """A tqdm bar over ``total`` steps when ``enabled``, else a ``NoProgress``."""
    if not enabled:
        return NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
