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
