"""config.settings: the [mime] and [xdm] caps, and that a configured cap reaches the parsers."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from config.settings import _MIME_KEYS, _XDM_KEYS, ParseLimits, settings_from_mapping
from hub.errors import ConfigError
from meshub.compose import parse_limits
from pipelines.mail.core.mime import MailLimits, parse_mail
from pipelines.mail.core.xdm import XdmLimits, read_xdm
from tests import mail_builders


def settings(data: dict[str, Any]) -> Any:
    return settings_from_mapping(data, data_dir=Path("/tmp/meshub-test"))


def test_without_mime_or_xdm_sections_the_parsers_keep_their_defaults() -> None:
    mail = settings({}).mail
    assert mail.limits == ParseLimits()
    assert parse_limits(mail) == (MailLimits(), XdmLimits())
    assert MailLimits().max_bytes == 25 * 1024 * 1024 and XdmLimits().max_total_bytes == 128 * 1024 * 1024


def test_mime_and_xdm_keys_are_read_and_passed_to_the_limits() -> None:
    mail = settings({"mime": {"max_bytes": 1000, "max_parts": 5},
                     "xdm": {"max_members": 10, "max_total_bytes": 2048, "max_ratio": 20}}).mail
    assert mail.limits.mime == {"max_bytes": 1000, "max_parts": 5}
    mime, xdm = parse_limits(mail)
    assert (mime.max_bytes, mime.max_parts, mime.max_depth) == (1000, 5, MailLimits().max_depth)
    assert (xdm.max_members, xdm.max_total_bytes, xdm.max_ratio) == (10, 2048, 20)
    assert xdm.max_member_bytes == XdmLimits().max_member_bytes


def test_the_known_keys_are_exactly_the_limits_fields() -> None:
    assert set(_MIME_KEYS) == {f.name for f in fields(MailLimits)}
    assert set(_XDM_KEYS) == {f.name for f in fields(XdmLimits)}


@pytest.mark.parametrize(("data", "message"), [
    ({"mime": {"max_size": 10}}, "config key mime.max_size is unknown (known: max_bytes"),
    ({"xdm": {"members": 10}}, "config key xdm.members is unknown (known: max_members"),
    ({"xdm": {"max_members": "100"}}, "config key xdm.max_members must be int, got str"),
    ({"mime": {"max_parts": 0}}, "config key mime.max_parts must be a positive int, got 0"),
    ({"xdm": {"max_ratio": True}}, "config key xdm.max_ratio must be a positive int, got True"),
    ({"xdm": 3}, "config section [xdm] must be a table"),
])
def test_bad_keys_fail_at_start_with_their_name(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings(data)
    assert str(raised.value).startswith(message)


def test_a_configured_lower_limit_takes_effect_in_the_parsers() -> None:
    # Given [mime] max_bytes and [xdm] max_members below what this mail carries (5 zip members)
    mime, xdm = parse_limits(settings({"mime": {"max_bytes": 100_000}, "xdm": {"max_members": 4}}).mail)
    cda = mail_builders.fixture_cda("BIO-CR-BIO_2024.01_TSH_1.xml")
    archive = mail_builders.make_xdm_zip([cda, cda.replace(b"<ClinicalDocument", b"<ClinicalDocument ", 1)])
    raw = mail_builders.make_mail_with_xdm([], xdm=archive)
    # Then the defaults accept both, and the configured caps refuse them with their rules
    assert parse_mail(raw).mail is not None and len(read_xdm(archive).documents) == 2
    assert [f.rule for f in parse_mail(raw, limits=mime).findings] == ["mime.too-large"]
    assert [f.rule for f in read_xdm(archive, limits=xdm).findings] == ["xdm.too-many-members"]


def test_notify_section_and_the_notify_smtp_flag() -> None:
    from meshub.cli import _parser, load_settings

    args = _parser().parse_args(["run", "--data-dir", "/tmp/x", "--notify-smtp", "smtp.example:2525"])
    notify = load_settings(args).notify
    assert (notify.smtp_host, notify.smtp_port) == ("smtp.example", 2525)
    assert load_settings(_parser().parse_args(["run", "--data-dir", "/tmp/x"])).notify.smtp_host == ""  # outbox
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_settings(_parser().parse_args(["run", "--data-dir", "/tmp/x", "--notify-smtp", "nohost"]))
    with pytest.raises(ConfigError, match=r"notify\.smtp_hots is unknown"):
        settings_from_mapping({"notify": {"smtp_hots": "x"}}, data_dir=Path("/tmp"))
    with pytest.raises(ConfigError, match=r"notify\.digest_window_s must be int"):
        settings_from_mapping({"notify": {"digest_window_s": "1h"}}, data_dir=Path("/tmp"))


def test_push_endpoints_and_the_embedded_s3_port_default_to_the_safe_choice() -> None:
    """Issue 12: push endpoints are public https unless a test says otherwise; the S3 port is chosen free."""
    default = settings_from_mapping({}, data_dir=Path("/tmp/x"))
    assert (default.notify.push_allow_http, default.notify.push_allow_private) == (False, False)
    assert default.store.embedded_port == 0
    tests = settings_from_mapping({"notify": {"push_allow_http": True, "push_allow_private": True}},
                                  data_dir=Path("/tmp/x"))
    assert (tests.notify.push_allow_http, tests.notify.push_allow_private) == (True, True)
    with pytest.raises(ConfigError, match="push_allow_private"):
        settings_from_mapping({"notify": {"push_allow_private": "yes"}}, data_dir=Path("/tmp/x"))
