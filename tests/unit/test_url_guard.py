"""Which addresses a patient-given URL may reach (connectors.outbound.url_guard): the SSRF table, no socket."""

from __future__ import annotations

import pytest

from connectors.outbound.url_guard import UrlPolicy, UrlRefused, check_url

PUBLIC = ["93.184.215.14"]


def _resolver(*answers: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(answers)


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "[::1]", "[::]", "[fe80::1]", "[fc00::1]", "[fd12:3456::1]", "[ff02::1]", "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "[2002:7f00:1::1]", "[64:ff9b::7f00:1]", "[2001:db8::1]",
    "[::127.0.0.1]",
])
def test_internal_addresses_are_refused(host: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(f"https://{host}/x", UrlPolicy(), resolve=_resolver(*PUBLIC))
    assert refused.value.rule == "push.endpoint.address"


@pytest.mark.parametrize("answers", [("127.0.0.1",), ("93.184.215.14", "10.1.2.3"), ("::ffff:192.168.0.1",),
                                     ("fe80::1%eth0",)])
def test_a_name_is_refused_when_any_of_its_addresses_is_internal(answers: tuple[str, ...]) -> None:
    with pytest.raises(UrlRefused, match=r"push\.endpoint\.address"):
        check_url("https://push.example.org/x", UrlPolicy(), resolve=_resolver(*answers))


@pytest.mark.parametrize(("url", "rule"), [
    ("http://push.example.org/x", "push.endpoint.scheme"), ("ftp://push.example.org/x", "push.endpoint.scheme"),
    ("file:///etc/passwd", "push.endpoint.scheme"), ("https:///x", "push.endpoint.host"),
    ("https://user:pw@push.example.org/x", "push.endpoint.host"), ("https://push.example.org:99999/x",
                                                                    "push.endpoint.host"),
])
def test_unusable_urls_are_refused(url: str, rule: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, UrlPolicy(), resolve=_resolver(*PUBLIC))
    assert refused.value.rule == rule


def test_a_name_nobody_resolves_is_refused() -> None:
    with pytest.raises(UrlRefused, match=r"push\.endpoint\.host"):
        check_url("https://push.example.org/x", UrlPolicy(), resolve=_resolver())


def test_a_public_https_url_is_pinned_to_its_checked_address() -> None:
    target = check_url("https://Push.Example.org/v1/d?x=1", UrlPolicy(), resolve=_resolver("2606:2800:21f::1"))
    assert target.pinned_url() == "https://[2606:2800:21f::1]:443/v1/d?x=1"
    assert target.host_header() == "push.example.org"


def test_the_test_policy_lets_loopback_through_but_never_multicast_or_unspecified() -> None:
    policy = UrlPolicy(allow_http=True, allow_private=True)
    assert check_url("http://127.0.0.1:8000/x", policy).port == 8000
    for host in ("0.0.0.0", "224.0.0.1", "[::]"):
        with pytest.raises(UrlRefused):
            check_url(f"http://{host}/x", policy)
