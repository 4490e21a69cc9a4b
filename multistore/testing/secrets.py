"""The secrets guard: a test fails if a configured secret shows anywhere.

Every configuration :func:`multistore.load` reads is announced in a DEBUG
log record (attribute ``multistore_conf``). The guard captures every log
record of the test at DEBUG, collects the secrets of each configuration it
sees announced (every option registered with ``secret=True``, in any group,
and passwords and signed-URL parameters inside any option's URL) plus the
values the test registers, and fails the test if one of them appears in a
log message, in the text of an exception a record carries, or in any text
or object the test hands to :meth:`SecretsGuard.check` (exception texts and
reprs, listings, command output).

With multistore installed, pytest has the fixture ``multistore_secrets``;
make it apply to every test of a project in its ``conftest.py``::

    import pytest

    @pytest.fixture(autouse=True)
    def _no_secret_leaks(multistore_secrets):
        return multistore_secrets

and register what the configuration cannot tell (a token handed to a
request context, a key read from a separate references file)::

    def test_user_token(multistore_secrets, multistore_stores):
        multistore_secrets.register("gAAAA-token", what="the user's token")
        ...
        with pytest.raises(multistore.BackendUnavailable) as info:
            ...
        multistore_secrets.check(info.value)

Secrets shorter than :data:`MIN_LENGTH` characters are not looked for: they
would be found everywhere. Failure messages never print a secret: they name
it (the option it came from) and show its first two characters.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

#: Shorter secrets are not looked for.
MIN_LENGTH = 4

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_SECRET_PARAM = re.compile(r"(?i)sig|signature|token|secret|password|passwd|key|credential")


def url_secrets(text: str) -> Iterator[str]:
    """Passwords and signed-URL parameter values in the URLs inside ``text``."""
    for match in _URL.finditer(text):
        url = match.group(0)
        scheme, sep, rest = url.partition("://")
        # The password is everything between the first ':' of the user
        # information and the last '@' before the path (legacy swift URLs
        # write keys holding '/' unescaped: then the last '@' anywhere).
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, end)
        if at < 0:
            at = rest.rfind("@")
        if at >= 0:
            user, colon, password = rest[:at].partition(":")
            if colon and password and "/" not in user:
                yield password
                unquoted = urllib.parse.unquote(password)
                if unquoted != password:
                    yield unquoted
        query = urllib.parse.urlsplit(url).query
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
            if _SECRET_PARAM.search(name):
                yield value


def conf_secrets(conf: cfg.ConfigOpts) -> dict[str, str]:
    """The secrets in a parsed configuration, each with where it came from:
    values of options registered with ``secret=True`` and passwords in URLs
    of any option. Options registered later (store options are registered
    by :func:`multistore.load`) count: call this after the test."""
    found: dict[str, str] = {}
    for group, opt in _registered(conf):
        where = f"[{group or 'DEFAULT'}] {opt.dest}"
        try:
            value = conf[group][opt.dest] if group else conf[opt.dest]
        except Exception:   # noqa: BLE001 - a value that does not parse holds nothing to find
            continue
        for text in _strings(value):
            if opt.secret:
                found.setdefault(text, where)
            for secret in url_secrets(text):
                found.setdefault(secret, f"a password in a URL of {where}")
    return found


def _registered(conf: cfg.ConfigOpts) -> Iterator[tuple[str | None, cfg.Opt]]:
    # oslo.config has no public listing of registered options with their
    # flags; log_opt_values() walks these same attributes.
    for info in getattr(conf, "_opts", {}).values():
        yield None, info["opt"]
    for name, group in getattr(conf, "_groups", {}).items():
        for info in getattr(group, "_opts", {}).values():
            yield name, info["opt"]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _strings(item)


def describe(value: object) -> str:
    """The text the guard checks for an object: ``str`` and ``repr``, and for
    an exception, every exception of its chain with its notes."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        parts = []
        seen: set[int] = set()
        exc: BaseException | None = value
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            parts += [f"{type(exc).__name__}: {exc}", repr(exc),
                      *getattr(exc, "__notes__", ())]
            exc = exc.__cause__ or exc.__context__
        return "\n".join(parts)
    return f"{value}\n{value!r}"


def _masked(secret: str) -> str:
    return f"{secret[:2]}***"


#: Running guards, innermost last: a record belongs to the innermost one (a
#: test of the guard itself runs its own, inside the suite's autouse guard).
_RUNNING: list[SecretsGuard] = []


class _Capture(logging.Handler):
    def __init__(self, guard: SecretsGuard) -> None:
        super().__init__(logging.DEBUG)
        self.guard = guard
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if _RUNNING and _RUNNING[-1] is not self.guard:
            return
        conf = getattr(record, "multistore_conf", None)
        if conf is not None:
            self.guard.watch(conf)
        self.records.append(record)


class SecretsGuard:
    """Collects secrets and fails if any shows up; see the module docstring.

    Use as a context manager (or :meth:`start`, :meth:`stop`): between the
    two, every log record of every logger is captured at DEBUG (by the
    innermost guard, when guards run inside one another).
    :meth:`verify` raises ``AssertionError`` listing each leak.
    """

    def __init__(self) -> None:
        self._registered: dict[str, str] = {}
        self._confs: list[cfg.ConfigOpts] = []
        self._leaks: list[str] = []
        self._handler = _Capture(self)
        self._level: int | None = None

    # -- what is secret --------------------------------------------------------

    def register(self, *values: str, what: str = "a secret the test registered") -> None:
        """Values that must never show (tokens, keys from other files ...)."""
        for value in values:
            if not isinstance(value, str) or len(value) < MIN_LENGTH:
                raise ValueError(f"a secret to look for is a string of at least "
                                 f"{MIN_LENGTH} characters")
            self._registered.setdefault(value, what)

    def watch(self, conf: cfg.ConfigOpts) -> None:
        """Look for the secrets of ``conf`` too (done for every configuration
        :func:`multistore.load` reads while the guard runs)."""
        if not any(c is conf for c in self._confs):
            self._confs.append(conf)

    def secrets(self) -> dict[str, str]:
        """Every secret looked for, with where it came from."""
        found = dict(self._registered)
        for conf in self._confs:
            for value, where in conf_secrets(conf).items():
                found.setdefault(value, where)
        return {v: w for v, w in found.items() if len(v) >= MIN_LENGTH}

    # -- looking ---------------------------------------------------------------

    def leaks(self, text: str) -> list[str]:
        """What secrets ``text`` holds, described (never shown)."""
        return [f"{where} ({_masked(value)})" for value, where in self.secrets().items()
                if value in text]

    def check(self, value: object, where: str = "") -> None:
        """Fail at once if ``value`` (text, exception, any object: its str
        and repr) holds a secret."""
        found = self.leaks(describe(value))
        if found:
            label = where or f"a {type(value).__name__}"
            raise AssertionError(f"secret(s) shown in {label}: {'; '.join(found)}")

    def verify(self) -> None:
        """Fail if any captured log record showed a secret."""
        problems = []
        for record in self._handler.records:
            try:
                text = record.getMessage()
            except Exception:   # noqa: BLE001 - a malformed record: its parts, raw
                text = f"{record.msg} {record.args}"
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + describe(record.exc_info[1])
            if record.stack_info:
                text += "\n" + record.stack_info
            for leak in self.leaks(text):
                problems.append(f"log record {record.name}:{record.lineno} "
                                f"({record.levelname}) shows {leak}")
        if problems:
            raise AssertionError("secrets in the logs:\n  " + "\n  ".join(problems))

    @property
    def records(self) -> list[logging.LogRecord]:
        """Every record captured so far."""
        return list(self._handler.records)

    # -- capturing -------------------------------------------------------------

    def start(self) -> SecretsGuard:
        _RUNNING.append(self)
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self._handler)
        return self

    def stop(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self._level is not None:
            root.setLevel(self._level)
            self._level = None

    def __enter__(self) -> SecretsGuard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SecretsGuard", "conf_secrets", "url_secrets", "describe", "MIN_LENGTH"]
