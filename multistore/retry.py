"""Retrying requests and resuming reads: one helper for every driver.

A driver describes *what* may be retried (a :class:`RetryPolicy`: how many
attempts, how long to wait, which exceptions are worth another try) and the
core does the rest the same way everywhere:

- :meth:`RetryPolicy.call` runs a request again after a retryable failure,
  with exponential backoff (built on tenacity, what OpenStack's own
  libraries use);
- :class:`ResumingRead` delivers one range of an image from a function that
  opens the image at a byte offset; when the body breaks (connection reset,
  a server gone, a body ending early) it opens it again at the first byte
  not yet delivered, so the consumer sees one unbroken stream. Attempts are
  counted since the last byte delivered: a long read over a flaky link
  keeps going as long as each attempt makes progress.

Whether an exception is retryable is decided from its type and fields (an
HTTP status attribute, an errno), never from its message text.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TypeVar

import tenacity

from multistore import errors

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def connection_trouble(exc: BaseException) -> bool:
    """The default test: the network or the server went away."""
    return isinstance(exc, (ConnectionError, TimeoutError, ShortBody))


class ShortBody(Exception):
    """A body ended before the bytes it announced (raised by :class:`ResumingRead`)."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How a driver retries.

    :param attempts: further attempts after a failure (0: never retry).
    :param first_backoff: seconds before the first retry; doubled each time.
    :param max_backoff: the longest wait between two attempts.
    :param retryable: whether an exception is worth another attempt.
    """

    attempts: int = 3
    first_backoff: float = 0.5
    max_backoff: float = 8.0
    retryable: Callable[[BaseException], bool] = connection_trouble

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return float(min(self.max_backoff, self.first_backoff * 2 ** (failures - 1)))

    def call(self, fn: Callable[[], T], *, what: str = "request") -> T:
        """``fn()``, again after each retryable failure; the last error is re-raised."""
        if self.attempts <= 0:
            return fn()

        def log(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            LOG.warning("%s failed (%s: %s); attempt %d of %d in %.1f s", what,
                        type(exc).__name__, exc, state.attempt_number, self.attempts,
                        state.next_action.sleep if state.next_action else 0.0)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts + 1),
            wait=tenacity.wait_exponential(multiplier=self.first_backoff,
                                           exp_base=2, max=self.max_backoff),
            retry=tenacity.retry_if_exception(self.retryable),
            before_sleep=log, reraise=True)
        return retrying(fn)


class ResumingRead(Iterator[bytes]):
    """``length`` bytes from ``offset``, resumed where a retryable failure broke them.

    :param open_at: ``open_at(position)`` returns the image's bytes from
        ``position`` to the end of the range (an iterable; closed with
        ``close()`` if it has one). It may raise retryable errors itself.
    :param offset: the first byte of the range.
    :param length: the number of bytes the range holds, ``None`` when the
        backend does not say (then a body that ends is the end).
    :param policy: how many attempts in a row without progress, and waits.
    :param what: how to name the read in messages (never with secrets).
    """

    def __init__(self, open_at: Callable[[int], Iterable[bytes]], offset: int,
                 length: int | None, policy: RetryPolicy, what: str = "the image") -> None:
        self.position = offset
        self.end = None if length is None else offset + length
        self.resumes = 0
        self._open_at = open_at
        self._policy = policy
        self._what = what
        self._body: Iterable[bytes] | None = None
        self._chunks = self._read()

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def _drop(self) -> None:
        body, self._body = self._body, None
        closer = getattr(body, "close", None)
        if closer is not None:
            closer()

    def _read(self) -> Generator[bytes, None, None]:
        failures = 0
        try:
            while self.end is None or self.position < self.end:
                try:
                    if self._body is None:
                        self._body = self._open_at(self.position)
                    for chunk in self._body:
                        if not chunk:
                            continue
                        if self.end is not None and self.position + len(chunk) > self.end:
                            raise errors.SizeMismatch(
                                f"the backend sent more than the {self.end - self.position} "
                                f"bytes left of {self._what}")
                        failures = 0
                        self.position += len(chunk)
                        yield chunk
                    self._drop()
                    if self.end is None or self.position >= self.end:
                        return
                    raise ShortBody(f"the body ended {self.end - self.position} bytes early")
                except GeneratorExit:
                    raise
                except Exception as exc:
                    self._drop()
                    if not self._policy.retryable(exc):
                        raise
                    failures += 1
                    if failures > self._policy.attempts:
                        if isinstance(exc, errors.MultistoreError):
                            raise
                        raise errors.BackendUnavailable(
                            f"reading {self._what} failed at byte {self.position}: "
                            f"{type(exc).__name__}: {exc} (gave up after "
                            f"{failures - 1} attempts to resume)") from exc
                    self.resumes += 1
                    LOG.warning("reading %s broke at byte %d (%s: %s); resuming, "
                                "attempt %d of %d", self._what, self.position,
                                type(exc).__name__, exc, failures, self._policy.attempts)
                    time.sleep(self._policy.backoff(failures))
        finally:
            self._drop()


__all__ = ["RetryPolicy", "ResumingRead", "ShortBody", "connection_trouble"]
