import pytest

from multistore.location import redact, scheme_of


def test_scheme():
    assert scheme_of("RBD://a/b") == "rbd"
    assert scheme_of("/no/scheme") == ""


def test_redact_masks_passwords_however_they_are_written():
    cases = {
        "http://user:secret@host/path": "http://user:***@host/path",
        "swift+https://tenant%3Auser:k/ey@ks:5000/v3/glance/img":
            "swift+https://tenant%3Auser:***@ks:5000/v3/glance/img",
        "https://u:p@ss@host/x?y=1": "https://u:***@host/x?y=1",
        "http://host/plain": "http://host/plain",
        "http://onlyuser@host/": "http://onlyuser@host/",
    }
    for given, expected in cases.items():
        assert redact(given) == expected
        assert "secret" not in redact(given) and "k/ey" not in redact(given)


def test_redact_masks_signed_url_parameters():
    url = ("https://s3.example/b/img?X-Amz-Credential=AKIA%2Fx&X-Amz-Signature=abcdef"
           "&temp_url_sig=f00&part=2&token=t0k")
    assert redact(url) == ("https://s3.example/b/img?X-Amz-Credential=***&X-Amz-Signature=***"
                           "&temp_url_sig=***&part=2&token=***")


# A password may hold '#' or '?' written unescaped: urlsplit then ends the
# authority there, and a redaction that trusts it printed the password
# whole (issue 16, item 7). Every place either character can stand.
HASH_AND_QUESTION = {
    "http://u:p#ss@h/x": "http://u:***@h/x",
    "http://u:p?ss@h/x": "http://u:***@h/x",
    "http://u:pa#ss?wd@h/x": "http://u:***@h/x",
    "http://u:pa?ss#wd@h/x": "http://u:***@h/x",
    "http://u:#start@h/x": "http://u:***@h/x",
    "http://u:?start@h/x": "http://u:***@h/x",
    "http://u:end#@h/x": "http://u:***@h/x",
    "http://u:end?@h/x": "http://u:***@h/x",
    "http://u:#@h/x": "http://u:***@h/x",
    "http://u:?@h": "http://u:***@h",
    "http://u:#?@h/x": "http://u:***@h/x",
    # Digits before the '#'/'?' parse as a port: still a password.
    "http://u:12#34@h/x": "http://u:***@h/x",
    "http://u:12?34@h/x": "http://u:***@h/x",
    # With a port, a query and a fragment of its own after the real host.
    "http://u:p#ss@h:8080/x?y=1#z": "http://u:***@h:8080/x?y=1#z",
    "http://u:p?ss@h:8080/x?y=1": "http://u:***@h:8080/x?y=1",
    "https://u:p#s?s@[::1]:8443/x": "https://u:***@[::1]:8443/x",
    # ... and with a signed query parameter, masked too.
    "http://u:p#ss@h/x?X-Amz-Signature=abc": "http://u:***@h/x?X-Amz-Signature=***",
    # Escaped, as it should be written.
    "https://u:pa%23ss%3F@h/x": "https://u:***@h/x",
    # Legacy swift URLs: user and key written raw.
    "swift+https://tenant%3Auser:key?with@ks:5000/v3/glance/img":
        "swift+https://tenant%3Auser:***@ks:5000/v3/glance/img",
    "swift+https://tenant%3Auser:k#e?y@ks:5000/v3/glance/img":
        "swift+https://tenant%3Auser:***@ks:5000/v3/glance/img",
    "swift+config://ref1:k?e#y@glance/img": "swift+config://ref1:***@glance/img",
}

#: '#', '?' and '@' where no password is: nothing to mask.
NOTHING_TO_MASK = ["http://h/x#frag", "http://h/x?q=1#a@b", "http://h/x#a@b",
                   "http://u@h/x?y#z", "http://h/x?mail=a@b", "http://h/x?#", "http://h?#@"]


@pytest.mark.parametrize("url, expected", HASH_AND_QUESTION.items())
def test_redact_masks_passwords_holding_hash_or_question_mark(url, expected):
    assert redact(url) == expected
    secret = url.split("://", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]
    assert secret not in redact(url)
    assert redact(redact(url)) == expected


@pytest.mark.parametrize("url", NOTHING_TO_MASK)
def test_redact_leaves_urls_without_password_alone(url):
    assert redact(url) == url
