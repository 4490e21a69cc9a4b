"""Reproducible image data, produced without holding it in memory.

Used by ``multistore demo``, the benchmarks and the tests (re-exported by
:mod:`multistore.testing`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Reproducible incompressible bytes (not zeros: thin provisioning skips those)."""
    return random.Random(seed).randbytes(size)


class Generated:
    """An iterable of ``size`` reproducible random bytes, produced block by
    block so that a large image never sits in memory; ``md5`` and ``sha512``
    of the whole are known once iterated (or from :meth:`digests`)."""

    def __init__(self, size: int, seed: int = 0, block: int = 1024 * 1024) -> None:
        self.size = size
        self.seed = seed
        self.block = block

    def __iter__(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)
        left = self.size
        while left > 0:
            n = min(self.block, left)
            yield rng.randbytes(n)
            left -= n

    def digests(self) -> tuple[str, str]:
        md5, sha = hashlib.md5(), hashlib.sha512()
        for chunk in self:
            md5.update(chunk)
            sha.update(chunk)
        return md5.hexdigest(), sha.hexdigest()


__all__ = ["Generated", "random_bytes"]
