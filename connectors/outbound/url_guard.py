"""Outbound requests to URLs a patient gave (push endpoints): where the hub may connect, and the bounded POST.

Owns: the SSRF rules for a patient-given URL, checked when the URL is registered and again at every send:
| check   | refused when                                                                  | rule                  |
|---------|-------------------------------------------------------------------------------|-----------------------|
| scheme  | not https (http only with `allow_http`, a test setting)                       | push.endpoint.scheme  |
| host    | absent, userinfo in the URL, or a name DNS cannot resolve                     | push.endpoint.host    |
| address | ANY resolved address is loopback, private, link-local, multicast, reserved,   | push.endpoint.address |
|         | unspecified, shared (CGNAT) or otherwise not global; IPv4-mapped, 6to4,       |                       |
|         | Teredo and NAT64 IPv6 addresses are judged by the IPv4 address they carry     |                       |
|         | (`allow_private`, a test setting, lets loopback/private unicast through)      |                       |
Then the POST connects to the address that was checked (the URL is rewritten to the IP literal, the Host
header and the TLS SNI / certificate name stay the host's): no second resolution, so no DNS rebinding
between check and use.  No redirects are followed, no proxy from the environment is used, the whole
exchange has one deadline (a timer cuts the socket) and at most `max_response_bytes` of the answer are read.
Does not: decide what a status code means for a notice (notify_channels), or log the URL (a patient's).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the IP addresses it resolves to (as strings); socket.getaddrinfo by default.
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class UrlRefused(Exception):
    """A patient-given URL the hub will not call: `rule` is the refusal's code, `message_en/fr` say why."""

    def __init__(self, rule: str, message_en: str, message_fr: str) -> None:
        super().__init__(rule)
        self.rule, self.message_en, self.message_fr = rule, message_en, message_fr


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Where patient-given URLs may point.  The defaults are production's; the two allow_* are for tests."""

    allow_http: bool = False
    allow_private: bool = False
    timeout_s: float = 10.0  # the whole exchange: connect, TLS, request, answer
    max_response_bytes: int = 64 * 1024
    ssl_context: ssl.SSLContext | None = None  # None: the system's CA store


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: the host as written, the port, and the address that was checked (to connect to)."""

    scheme: str
    host: str
    port: int
    address: Address
    path_and_query: str

    def pinned_url(self) -> str:
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return urlunsplit((self.scheme, f"{literal}:{self.port}", self.path_and_query or "/", "", ""))

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def system_resolver(host: str, port: int) -> Sequence[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def blocked(address: Address) -> bool:
    """True for every address a patient-given URL must not reach (see the table above)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return blocked(embedded)
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global
            or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED))


def _private_but_allowed(address: Address) -> bool:
    """With allow_private (tests): loopback and private unicast pass; multicast and unspecified never do."""
    return not (address.is_multicast or address.is_unspecified)


def check_url(url: str, policy: UrlPolicy, *, resolve: Resolver = system_resolver) -> Target:
    """The target to connect to, or UrlRefused.  Resolves the host once; every address must be allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refused_host() from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        raise UrlRefused("push.endpoint.scheme", "The push endpoint must be an https:// URL.",
                         "L'adresse de notification push doit être une URL https://.")
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.password is not None:
        raise _refused_host()
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port, resolve)
    for address in addresses:
        if blocked(address) and not (policy.allow_private and _private_but_allowed(address)):
            raise UrlRefused("push.endpoint.address",
                             "The push endpoint points to a loopback, private, link-local, multicast or reserved "
                             "address: the hub only calls public Internet addresses.",
                             "L'adresse de notification push désigne une adresse locale, privée, de lien local, "
                             "multicast ou réservée : le hub n'appelle que des adresses publiques d'Internet.")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0], path_and_query=path)


def _resolve(host: str, port: int, resolve: Resolver) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
    except (OSError, UnicodeError, ValueError):
        found = []
    if not found:
        raise _refused_host()
    return found


def _refused_host() -> UrlRefused:
    return UrlRefused("push.endpoint.host", "The push endpoint has no usable host name (unknown, or with "
                      "credentials in the URL).", "L'adresse de notification push n'a pas de nom d'hôte "
                      "utilisable (inconnu, ou avec des identifiants dans l'URL).")


class DeadlinePassed(OSError):
    """The exchange with a patient-given URL did not finish within the policy's timeout."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # at most max_response_bytes


def bounded_post(target: Target, payload: dict[str, Any], *, policy: UrlPolicy,
                 headers: dict[str, str] | None = None) -> Answer:
    """POST JSON to the checked address; one deadline for connect, TLS, request and answer.

    Raises DeadlinePassed past the deadline, OSError (ssl.SSLError included) or http.client.HTTPException
    when the far end is unreachable or speaks no HTTP.  Redirects are answers like any other (not followed)."""
    deadline = time.monotonic() + policy.timeout_s
    try:
        sock = socket.create_connection((str(target.address), target.port), timeout=policy.timeout_s)
    except TimeoutError:
        raise DeadlinePassed("connect timed out") from None
    live = [sock]  # the socket in use (TLS wraps it into another object)
    expired = threading.Event()

    def cut() -> None:  # the deadline: whatever the far end is doing, the socket stops
        expired.set()
        with contextlib.suppress(OSError):
            live[0].shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        conn = _connection(target, sock, policy)
        live[0] = conn.sock
        answer = _exchange(conn, target, payload, headers or {}, policy.max_response_bytes)
        if expired.is_set():  # the cut socket ends headers or body early: what was read is not the answer
            raise DeadlinePassed("deadline passed")
        return answer
    except (OSError, http.client.HTTPException):
        if expired.is_set() or isinstance(sys.exc_info()[1], TimeoutError):
            raise DeadlinePassed("deadline passed") from None
        raise
    finally:
        timer.cancel()
        live[0].close()


def _exchange(conn: http.client.HTTPConnection, target: Target, payload: dict[str, Any], headers: dict[str, str],
              limit: int) -> Answer:
    """The request on the open connection, and at most `limit` bytes of the answer."""
    body = json.dumps(payload).encode()
    conn.request("POST", target.path_and_query or "/", body=body, headers={
        **headers, "Host": target.host_header(), "Content-Type": "application/json",
        "Content-Length": str(len(body)), "Connection": "close"})
    response = conn.getresponse()
    return Answer(response.status, response.read(limit))


def _connection(target: Target, sock: socket.socket, policy: UrlPolicy) -> http.client.HTTPConnection:
    """An HTTP(S) connection on the already connected socket (TLS: SNI and certificate name = the host)."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=policy.timeout_s)
    if target.scheme == "https":
        context = policy.ssl_context or ssl.create_default_context()
        conn.sock = context.wrap_socket(sock, server_hostname=target.host)
    else:
        conn.sock = sock
    return conn
