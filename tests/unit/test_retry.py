"""The core's retry and resume helper (multistore.retry)."""

import pytest

from multistore import errors
from multistore.retry import ResumingRead, RetryPolicy

FAST = RetryPolicy(attempts=2, first_backoff=0.0, max_backoff=0.0)
DATA = bytes(range(256)) * 40


def test_call_retries_retryable_errors_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert FAST.call(flaky) == "ok"
    assert len(calls) == 3


def test_call_gives_up_after_the_attempts_and_reraises_the_last_error():
    calls = []

    def dead():
        calls.append(1)
        raise TimeoutError(f"try {len(calls)}")

    with pytest.raises(TimeoutError, match="try 3"):
        FAST.call(dead)
    assert len(calls) == 3


def test_call_does_not_retry_other_errors():
    calls = []

    def wrong():
        calls.append(1)
        raise errors.NotFound("gone")

    with pytest.raises(errors.NotFound):
        FAST.call(wrong)
    assert calls == [1]


def test_no_attempts_means_one_call():
    with pytest.raises(ConnectionError):
        RetryPolicy(attempts=0).call(lambda: (_ for _ in ()).throw(ConnectionError()))


def breaking(data, breaks):
    """open_at for ``data`` whose bodies break after the given numbers of bytes."""
    opened = []

    def open_at(position):
        opened.append(position)
        limit = breaks.pop(0) if breaks else None

        def body():
            sent = 0
            for i in range(position, len(data), 100):
                piece = data[i:i + 100]
                if limit is not None and sent + len(piece) > limit:
                    yield piece[:limit - sent]
                    raise ConnectionResetError("dropped")
                sent += len(piece)
                yield piece
        return body()
    return open_at, opened


def test_resuming_read_continues_where_the_body_broke():
    open_at, opened = breaking(DATA, [1000, 2500, 10])
    reader = ResumingRead(open_at, 0, len(DATA), FAST)
    assert b"".join(reader) == DATA
    assert opened == [0, 1000, 3500, 3510]
    assert reader.resumes == 3


def test_progress_resets_the_count_but_no_progress_gives_up():
    open_at, opened = breaking(DATA, [0, 0, 0])
    reader = ResumingRead(open_at, 0, len(DATA), FAST, what="image x")
    with pytest.raises(errors.BackendUnavailable, match="image x failed at byte 0"):
        b"".join(reader)
    assert opened == [0, 0, 0]


def test_a_range_is_resumed_inside_the_range():
    data = DATA[100:600]

    def open_at(position):
        assert 100 <= position < 600
        chunks = [DATA[position:min(position + 150, 600)]]
        if position == 100:
            return iter(chunks)           # ends early: 150 of 500 bytes
        return iter([DATA[position:600]])

    assert b"".join(ResumingRead(open_at, 100, 500, FAST)) == data


def test_a_body_longer_than_the_range_is_refused():
    with pytest.raises(errors.SizeMismatch):
        b"".join(ResumingRead(lambda p: iter([b"x" * 20]), 0, 10, FAST))


def test_other_errors_are_not_resumed():
    def open_at(position):
        raise errors.NotFound("no such image")

    with pytest.raises(errors.NotFound):
        b"".join(ResumingRead(open_at, 0, 10, FAST))


def test_closing_closes_the_open_body():
    closed = []

    class Body:
        def __iter__(self):
            yield b"abc"
            yield b"def"

        def close(self):
            closed.append(True)

    reader = ResumingRead(lambda p: Body(), 0, 6, FAST)
    assert next(reader) == b"abc"
    reader.close()
    assert closed == [True]
