"""Progress reporting, modelled on fsspec's ``Callback``.

The core calls :meth:`Callback.set_size` once (``None`` when the size is
unknown) and :meth:`Callback.relative_update` after every buffer; subclass
and override :meth:`Callback.call` to draw something. Calls come from the
thread that runs the transfer.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Callback:
    """Counts bytes; ``call`` is the hook that draws or records progress."""

    def __init__(self, size: int | None = None, value: int = 0, **kwargs: Any) -> None:
        self.size = size
        self.value = value
        self.kw = kwargs

    def set_size(self, size: int | None) -> None:
        self.size = size
        self.call()

    def absolute_update(self, value: int) -> None:
        self.value = value
        self.call()

    def relative_update(self, inc: int = 1) -> None:
        self.value += inc
        self.call()

    def call(self) -> None:
        """Called after every change; does nothing here."""

    def close(self) -> None:
        """The transfer is over (drawers finish their line); does nothing here."""


class NoOpCallback(Callback):
    def call(self) -> None:
        pass


class TextProgressBar(Callback):
    """A one-line bar on a terminal (stderr by default), at most ten redraws a second."""

    def __init__(self, label: str = "", stream: IO[str] | None = None,
                 width: int = 30) -> None:
        super().__init__()
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self._started = time.monotonic()
        self._drawn = 0.0

    def call(self) -> None:
        now = time.monotonic()
        done = self.size is not None and self.value >= self.size
        if not done and now - self._drawn < 0.1:
            return
        self._drawn = now
        elapsed = max(now - self._started, 1e-6)
        rate = self.value / elapsed / 1e6
        if self.size:
            frac = min(self.value / self.size, 1.0)
            bar = "#" * int(frac * self.width)
            text = f"[{bar:<{self.width}}] {frac:6.1%}"
        else:
            text = f"{self.value / 1e6:10.1f} MB"
        self.stream.write(f"\r{self.label} {text} {rate:8.1f} MB/s")
        self.stream.flush()

    def close(self) -> None:
        self._drawn = 0.0
        self.call()
        self.stream.write("\n")
        self.stream.flush()
