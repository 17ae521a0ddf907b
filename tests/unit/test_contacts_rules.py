"""The patient's own contact addresses (pure): shapes and the confirmation code's digest."""

from __future__ import annotations

import pytest

from pipelines.notify.core.contacts import confirmation_digest, normalise_email, normalise_phone

SECRET = b"k" * 32
INS = "279035121518989"


@pytest.mark.parametrize(("typed", "kept"), [
    ("  Jeanne.Test@Example.ORG ", "Jeanne.Test@example.org"), ("", ""), ("   ", ""),
    ("a+b@sub.example.fr", "a+b@sub.example.fr"),
    ("no-at-sign", None), ("a@b", None), ("a@@b.fr", None), ("a b@c.fr", None), ("é@exemple.fr", None),
    ("x" * 65 + "@example.org", None), ("a@" + "b" * 250 + ".fr", None), ("a@-b.fr", None),
    ("a@b.fr\r\nBcc: c@d.fr", None),
])
def test_email_shapes(typed: str, kept: str | None) -> None:
    assert normalise_email(typed) == kept


@pytest.mark.parametrize(("typed", "kept"), [
    ("06 12 34 56 78", "+33612345678"), ("06.12.34.56.78", "+33612345678"), ("+33 6 12 34 56 78", "+33612345678"),
    ("+32470123456", "+32470123456"), ("", ""), ("0012345678", None), ("612345678", None), ("+0612345678", None),
    ("06 12 34 56 7", None), ("０６１２３４５６７８", None), ("+33612345678; rm", None),
])
def test_phone_shapes(typed: str, kept: str | None) -> None:
    assert normalise_phone(typed) == kept


def test_the_confirmation_code_is_kept_as_a_keyed_digest_bound_to_the_ins() -> None:
    digest = confirmation_digest(SECRET, INS, "ABCD-EFGH-JKMN")
    assert confirmation_digest(SECRET, INS, "abcd efgh jkmn") == digest and "ABCD" not in digest
    assert confirmation_digest(SECRET, INS[:-1] + "0", "ABCD-EFGH-JKMN") != digest
    assert confirmation_digest(b"j" * 32, INS, "ABCD-EFGH-JKMN") != digest
    with pytest.raises(ValueError):
        confirmation_digest(b"", INS, "x")
