"""The secrets guard itself: what it collects, what it catches, and that a
leaking test fails."""

import logging

import pytest
from oslo_config import cfg

import multistore
from multistore import errors
from multistore.drivers.memory import MemoryDriver
from multistore.testing import make_conf
from multistore.testing.secrets import SecretsGuard, conf_secrets, url_secrets

TOKEN = "s3cr3t-token-value"
KEY = "k/ey?with#odd@chars"


class KeyedDriver(MemoryDriver):
    """A memory store with a secret option and a URL option, as swift has."""

    options = [*MemoryDriver.options,
               cfg.StrOpt("keyed_token", secret=True),
               cfg.StrOpt("keyed_endpoint")]


def keyed_conf(tmp_path):
    return make_conf({
        "DEFAULT": {"enabled_backends": {"k": "keyed"}},
        "glance_store": {"default_backend": "k"},
        "k": {"keyed_token": TOKEN,
              "keyed_endpoint": "https://admin:pass%2Fword@keystone:5000/v3?temp_url_sig=f00d1e"},
    }, tmp_path)


def test_url_secrets():
    assert list(url_secrets("see swift+https://t%3Au:" + KEY + "@ks/v3/c/o")) == [KEY]
    assert list(url_secrets("https://h/x?X-Amz-Signature=abcd1234&part=2")) == ["abcd1234"]
    assert list(url_secrets("http://user@host/ and file:///a/b")) == []


def test_secrets_of_a_loaded_configuration(tmp_path):
    conf = keyed_conf(tmp_path)
    with SecretsGuard() as guard:
        multistore.load(conf, drivers={"keyed": KeyedDriver}).close()
    assert guard.secrets() == {
        TOKEN: "[k] keyed_token",
        "pass%2Fword": "a password in a URL of [k] keyed_endpoint",
        "pass/word": "a password in a URL of [k] keyed_endpoint",
        "f00d1e": "a password in a URL of [k] keyed_endpoint"}
    assert conf_secrets(conf) == guard.secrets()
    guard.verify()   # nothing leaked: loading logs no value


def test_a_secret_in_a_log_line_or_an_exception_fails(tmp_path):
    conf = keyed_conf(tmp_path)
    with SecretsGuard() as guard:
        multistore.load(conf, drivers={"keyed": KeyedDriver}).close()
        logging.getLogger("some.library").debug("connecting with %s", TOKEN)
    with pytest.raises(AssertionError) as info:
        guard.verify()
    assert "[k] keyed_token (s3***)" in str(info.value) and TOKEN not in str(info.value)
    try:
        try:
            raise ConnectionError("refused for pass/word")
        except ConnectionError as exc:
            raise errors.BackendUnavailable("the server went away") from exc
    except errors.BackendUnavailable as exc:
        with pytest.raises(AssertionError, match="keyed_endpoint"):
            guard.check(exc)
    with pytest.raises(AssertionError, match="registered"):
        guard.register("swift-reference-key")
        guard.check({"listing": "swift-reference-key"})


def test_a_logged_exception_is_checked_too():
    with SecretsGuard() as guard:
        guard.register("hunter2-password")
        try:
            raise ValueError("bad password hunter2-password")
        except ValueError:
            logging.getLogger("multistore.x").exception("failed")
    with pytest.raises(AssertionError, match="multistore.x"):
        guard.verify()


def test_short_secrets_cannot_be_registered():
    with pytest.raises(ValueError):
        SecretsGuard().register("abc")


def test_every_test_of_this_suite_is_guarded(pytester):
    """A test that logs a configured secret fails, with the conftest's autouse guard."""
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(autouse=True)
        def _guard(multistore_secrets):
            return multistore_secrets
    """)
    pytester.makepyfile(test_leak=f"""
        import logging
        from oslo_config import cfg
        import multistore
        from multistore.drivers.memory import MemoryDriver
        from multistore.testing import make_conf

        class Keyed(MemoryDriver):
            options = [*MemoryDriver.options, cfg.StrOpt("keyed_token", secret=True)]

        def load(tmp_path):
            return multistore.load(make_conf({{
                "DEFAULT": {{"enabled_backends": {{"k": "keyed"}}}},
                "glance_store": {{"default_backend": "k"}},
                "k": {{"keyed_token": "{TOKEN}"}}}}, tmp_path), drivers={{"keyed": Keyed}})

        def test_leaks(tmp_path):
            stores = load(tmp_path)
            logging.getLogger("careless").info("token is %s", stores["k"].conf.keyed_token)

        def test_clean(tmp_path):
            load(tmp_path).add("img", b"x", 1)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*secrets in the logs*",
                                 "*careless*shows [[]k[]] keyed_token (s3[*][*][*])*"])
    # The guard's message names the secret without showing it (pytest's own
    # "captured log" section does show the offending line).
    assert not [line for line in result.stdout.lines if "shows" in line and TOKEN in line]
