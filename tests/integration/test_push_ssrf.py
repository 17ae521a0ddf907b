"""Issue 12, SSRF: a patient-given push endpoint is refused when it points inside (loopback, private, link-local...)
at registration (422 with the rule) and at send time (a permanent refusal); the hub connects to the address it
checked (no second resolution), follows no redirect, and bounds the exchange in time and size.  Real sockets:
a local HTTP(S) server plays the 'internal admin' endpoint and counts what reaches it."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from connectors.outbound.notify_channels import HttpPushChannel
from connectors.outbound.url_guard import UrlPolicy
from hub.errors import ChannelRefused, ChannelUnavailable
from hub.notices import Channel, Outgoing
from tests import builders
from tests.integration.hub_harness import RunningHub
from tests.services import free_port

pytestmark = pytest.mark.integration

LOCAL = UrlPolicy(allow_http=True, allow_private=True, timeout_s=5)


@dataclass
class Endpoint:
    """A local server: `mode` says how it answers; `hits` are the (path, Host header) of requests received."""

    port: int
    mode: str = "ok"
    hits: list[tuple[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/internal-admin", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _handler(endpoint: Endpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            endpoint.hits.append((self.path, self.headers.get("Host", "")))
            if endpoint.mode == "redirect":
                self.send_response(302)
                self.send_header("Location", "/internal-admin/second")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif endpoint.mode == "drip":  # headers, then one byte every 0.2 s, for a minute
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(300):
                        if endpoint.stop.is_set():
                            return
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
            elif endpoint.mode == "drip-headers":  # a status line, then one header line every 0.2 s
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                with contextlib.suppress(OSError):  # the hub cuts the connection
                    for n in range(300):
                        if endpoint.stop.is_set():
                            return
                        self.wfile.write(b"X-Drip-%d: x\r\n" % n)
                        self.wfile.flush()
                        time.sleep(0.2)
            elif endpoint.mode == "endless":  # a 200 whose body never ends
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
                with contextlib.suppress(OSError):
                    while not endpoint.stop.is_set():
                        self.wfile.write(chunk)
            else:
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    yield from _serve(None)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_endpoint(ca: trustme.CA) -> Iterator[Endpoint]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("push.test").configure_cert(context)
    yield from _serve(context)


def _serve(context: ssl.SSLContext | None) -> Iterator[Endpoint]:
    running = Endpoint(port=free_port())
    server = ThreadingHTTPServer(("127.0.0.1", running.port), _handler(running))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        server.shutdown()
        server.server_close()


def push(address: str) -> Outgoing:
    return Outgoing(delivery_id="n-0001", channel=Channel.PUSH, address=address, subject="Nouveau document",
                    text="Un document a été ajouté.", link="https://mes.test/notifications")


def send_within(channel: HttpPushChannel, outgoing: Outgoing, seconds: float) -> tuple[Any, float]:
    """(the result or the exception, elapsed s); fails if the send is still running after `seconds`."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(channel.send(outgoing))
        except Exception as exc:  # handed to the test
            box.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"the push was still running after {seconds} s"
    return box[0], time.monotonic() - started


# --- send time: the production default refuses, and nothing reaches the internal endpoint ---------------

@pytest.mark.parametrize("how", ["http", "https", "localhost", "ipv6-mapped"])
def test_the_default_push_channel_never_reaches_an_internal_endpoint(endpoint: Endpoint, how: str) -> None:
    address = {"http": endpoint.url(), "https": endpoint.url(scheme="https"),
               "localhost": endpoint.url(scheme="https", host="localhost"),
               "ipv6-mapped": endpoint.url(scheme="https", host="[::ffff:127.0.0.1]")}[how]
    with pytest.raises(ChannelRefused) as refused:
        HttpPushChannel().send(push(address))
    assert refused.value.reason.startswith("push endpoint refused: push.endpoint.")
    assert "127.0.0.1" not in refused.value.reason and endpoint.hits == []


def test_a_name_resolving_to_a_public_and_a_loopback_address_is_refused(endpoint: Endpoint) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "127.0.0.1"]

    with pytest.raises(ChannelRefused, match=r"push\.endpoint\.address"):
        HttpPushChannel(resolve=resolver).send(push(endpoint.url(scheme="https", host="rebind.test")))
    assert endpoint.hits == []


def test_the_hub_connects_to_the_address_it_checked_without_resolving_again(endpoint: Endpoint) -> None:
    """`push.invalid` resolves nowhere: the request arrives only because the checked address is used."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    result = HttpPushChannel(policy=LOCAL, resolve=resolver).send(push(endpoint.url("/device", host="push.invalid")))
    assert result.provider_ref == "n-0001" and asked == ["push.invalid"]
    assert endpoint.hits == [("/device", f"push.invalid:{endpoint.port}")]


def test_https_is_verified_against_the_host_name_on_the_pinned_address(tls_endpoint: Endpoint,
                                                                       ca: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    policy = UrlPolicy(allow_private=True, ssl_context=trusted, timeout_s=5)
    HttpPushChannel(policy=policy, resolve=lambda h, p: ["127.0.0.1"]).send(
        push(tls_endpoint.url("/d", scheme="https", host="push.test")))
    assert tls_endpoint.hits == [("/d", f"push.test:{tls_endpoint.port}")]
    with pytest.raises(ChannelUnavailable):  # the certificate is not for this name
        HttpPushChannel(policy=policy, resolve=lambda h, p: ["127.0.0.1"]).send(
            push(tls_endpoint.url("/d", scheme="https", host="other.test")))
    assert len(tls_endpoint.hits) == 1


def test_a_redirect_is_not_followed(endpoint: Endpoint) -> None:
    endpoint.mode = "redirect"
    with pytest.raises(ChannelUnavailable, match="push endpoint 302"):
        HttpPushChannel(policy=LOCAL).send(push(endpoint.url("/device")))
    assert [path for path, _ in endpoint.hits] == ["/device"]


def test_an_answer_dripping_its_headers_is_cut_at_the_deadline(endpoint: Endpoint) -> None:
    endpoint.mode = "drip-headers"
    outcome, elapsed = send_within(HttpPushChannel(policy=LOCAL, timeout_s=1), push(endpoint.url()), 10)
    assert isinstance(outcome, ChannelUnavailable) and str(outcome) == "push endpoint timed out"
    assert elapsed < 3


def test_an_answer_dripping_its_body_is_cut_at_the_deadline(endpoint: Endpoint) -> None:
    endpoint.mode = "drip"
    outcome, elapsed = send_within(HttpPushChannel(policy=LOCAL, timeout_s=1), push(endpoint.url()), 10)
    assert isinstance(outcome, ChannelUnavailable) and str(outcome) == "push endpoint timed out"
    assert elapsed < 3


def test_an_endless_answer_is_read_only_up_to_the_bound(endpoint: Endpoint) -> None:
    endpoint.mode = "endless"
    outcome, elapsed = send_within(HttpPushChannel(policy=LOCAL), push(endpoint.url()), 10)
    assert not isinstance(outcome, Exception), outcome
    assert outcome.provider_ref == "n-0001" and elapsed < 3


# --- registration over HTTP, and the channel the hub wires ---------------------------------------------------

def test_registering_an_internal_push_endpoint_is_a_422_with_the_rule(stack: RunningHub, endpoint: Endpoint) -> None:
    ins = builders.TEST_INS
    with stack.admin() as admin:
        assert admin.post("/v1/patients/import",
                          content=builders.ROSTER_HEADER + builders.roster_line()).status_code == 200
        for address, rule in [(endpoint.url(), "push.endpoint.scheme"),
                              (endpoint.url(scheme="https"), "push.endpoint.address"),
                              (endpoint.url(scheme="https", host="localhost"), "push.endpoint.address"),
                              ("https://[::ffff:169.254.169.254]/latest/meta-data", "push.endpoint.address"),
                              ("https://10.0.0.7/admin", "push.endpoint.address"),
                              ("https://user:pw@push.example.org/x", "push.endpoint.host")]:
            response = admin.post(f"/v1/patients/{ins}/devices", json={"endpoint": address})
            assert response.status_code == 422, (address, response.text)
            error = response.json()["error"]
            assert error["code"] == rule and error["message_en"] and error["message_fr"], address
        assert admin.get(f"/v1/patients/{ins}/notification-preferences").status_code == 200
    # a device stored before this check existed is refused at send time, for good, by the hub's own channel
    channel = stack.hub.notification_channels()[Channel.PUSH]
    with pytest.raises(ChannelRefused):
        channel.send(push(endpoint.url(scheme="https")))
    assert endpoint.hits == []
