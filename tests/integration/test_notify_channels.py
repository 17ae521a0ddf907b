"""The notification channels against real servers on loopback: an aiosmtpd smart host (tests.smtp_sink,
with real STARTTLS from a trustme CA), a local HTTP server playing the SMS provider and a push endpoint,
and outbox folders on disk."""

from __future__ import annotations

import contextlib
import email
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from connectors.outbound.notify_channels import (
    HttpPushChannel,
    HttpSmsChannel,
    InAppChannel,
    OutboxEmailChannel,
    OutboxSmsChannel,
    SmtpEmailChannel,
)
from connectors.outbound.url_guard import UrlPolicy
from hub.errors import ChannelRefused, ChannelUnavailable
from hub.notices import Channel, Outgoing
from tests.services import free_port
from tests.smtp_sink import Running, Sink, start_sink

SENDER = "ne-pas-repondre@mes.test"
ADDRESS = "jeanne.dupont@example.org"
PHONE = "+33612345678"
API_KEY = "sk-test-4f1c"
TEXT = "Bonjour,\n\nUn nouveau document est disponible dans Mon espace santé.\n\nhttps://mes.test/notifications"
HTML = "<!doctype html><html><body><p>Un nouveau document est disponible.</p></body></html>"


def outgoing(channel: Channel = Channel.EMAIL, *, address: str = ADDRESS, delivery_id: str = "n-0123abcd",
             **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {"subject": "Mon espace santé : nouveau document", "text": TEXT, "html": HTML,
                              "link": "https://mes.test/notifications", **changes}
    return Outgoing(delivery_id=delivery_id, channel=channel, address=address, **fields)


def parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): str(part.get_content()).replace("\r\n", "\n") for part in message.walk()
            if part.get_content_maintype() == "text"}


# --- e-mail through a smart host -------------------------------------------------------------------

@contextlib.contextmanager
def smart_host(sink: Sink | None = None, **smtp_kwargs: Any) -> Iterator[Running]:
    yield from start_sink(sink or Sink(), **smtp_kwargs)


def test_the_email_arrives_with_text_and_html_and_a_deterministic_message_id() -> None:
    with smart_host() as host:
        channel = SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, helo_name="hub.mes.test", timeout_s=5)
        first = channel.send(outgoing())
        again = channel.send(outgoing())  # a retry of the same notice
        other = channel.send(outgoing(delivery_id="n-99"))
    assert [r.mail_from for r in host.sink.received] == [SENDER] * 3
    assert [r.rcpt_tos for r in host.sink.received] == [[ADDRESS]] * 3
    message, retried, _ = (parse(r.content) for r in host.sink.received)
    assert message["From"] == SENDER and message["To"] == ADDRESS
    assert message["Subject"] == "Mon espace santé : nouveau document"
    assert message["Auto-Submitted"] == "auto-generated" and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    body = parts(message)
    assert body["text/plain"].strip() == TEXT and body["text/html"].strip() == HTML
    assert message["Message-ID"] == "<n-0123abcd@mes.test>" == retried["Message-ID"]
    assert first.provider_ref == again.provider_ref == "<n-0123abcd@mes.test>" and not first.delivered
    assert other.provider_ref == "<n-99@mes.test>"


def test_a_text_only_notice_gets_an_escaped_html_alternative() -> None:
    with smart_host() as host:
        SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, timeout_s=5).send(
            outgoing(html="", text="Codes <b>& liens</b>\n\nhttps://mes.test/x?a=1&b=2"))
    body = parts(parse(host.sink.received[0].content))
    assert body["text/plain"].strip() == "Codes <b>& liens</b>\n\nhttps://mes.test/x?a=1&b=2"
    assert "<p>Codes &lt;b&gt;&amp; liens&lt;/b&gt;</p>" in body["text/html"]
    assert "<b>" not in body["text/html"] and "a=1&amp;b=2" in body["text/html"]


@pytest.mark.parametrize(("script", "error", "reason"), [
    ({"data_script": ["451 4.3.0 Try again later"]}, ChannelUnavailable, "smtp 451 4.3.0"),
    ({"rcpt_script": {ADDRESS: [f"450 4.2.1 <{ADDRESS}> mailbox busy"]}}, ChannelUnavailable, "smtp 450 4.2.1"),
    ({"rcpt_script": {ADDRESS: [f"550 5.1.1 <{ADDRESS}> no such user"]}}, ChannelRefused, "smtp 550 5.1.1"),
    ({"data_script": ["554 5.7.1 Message rejected as spam"]}, ChannelRefused, "smtp 554 5.7.1"),
], ids=["451-data", "450-rcpt", "550-rcpt", "554-data"])
def test_smtp_replies_map_to_retry_or_refusal_without_the_address(script: dict[str, Any], error: type[Exception],
                                                                  reason: str) -> None:
    with smart_host(Sink(**script)) as host:
        channel = SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, timeout_s=5)
        with pytest.raises(error) as raised:
            channel.send(outgoing())
        assert host.sink.received == []
        if error is ChannelRefused:
            assert raised.value.reason == reason  # type: ignore[attr-defined]
        assert reason in str(raised.value)
        assert ADDRESS not in str(raised.value) and "jeanne" not in str(raised.value)
        assert "no such user" not in str(raised.value) and "spam" not in str(raised.value)
        # the script is used up: the same notice sent again goes through, with the same Message-ID
        assert channel.send(outgoing()).provider_ref == "<n-0123abcd@mes.test>"
        assert len(host.sink.received) == 1


def test_nothing_listening_is_unavailable() -> None:
    port = free_port()
    with pytest.raises(ChannelUnavailable) as raised:
        SmtpEmailChannel("127.0.0.1", port, sender=SENDER, timeout_s=2).send(outgoing())
    assert f"127.0.0.1:{port}" in str(raised.value) and ADDRESS not in str(raised.value)


def test_a_smart_host_that_never_greets_times_out_as_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never says 220
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        started = time.monotonic()
        with pytest.raises(ChannelUnavailable):
            SmtpEmailChannel("127.0.0.1", listener.getsockname()[1], sender=SENDER, timeout_s=0.5).send(outgoing())
        assert time.monotonic() - started < 3


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_starttls_and_login_with_the_given_ca(ca: trustme.CA, tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_tls)
    sink = Sink()
    with smart_host(sink, tls_context=server_tls, require_starttls=True, authenticator=sink.authenticate) as host:
        SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, starttls=True, cafile=str(cafile),
                         username="hub", password="pw", timeout_s=5).send(outgoing())
        with pytest.raises(ChannelUnavailable) as wrong:  # the smart host's fault, not this notice's
            SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, starttls=True, cafile=str(cafile),
                             username="hub", password="wrong", timeout_s=5).send(outgoing())
        untrusted = tmp_path / "other.pem"
        trustme.CA().cert_pem.write_to_path(str(untrusted))
        with pytest.raises(ChannelUnavailable):
            SmtpEmailChannel("127.0.0.1", host.port, sender=SENDER, starttls=True, cafile=str(untrusted),
                             timeout_s=5).send(outgoing())
    assert sink.logins == ["hub"] and [r.tls for r in sink.received] == [True]
    assert "wrong" not in str(wrong.value) and "535" in str(wrong.value)


# --- outboxes ----------------------------------------------------------------------------------------

def test_the_email_outbox_writes_one_file_per_delivery_id(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "email"
    channel = OutboxEmailChannel(outbox, sender=SENDER)
    result = channel.send(outgoing())
    assert result.provider_ref == "n-0123abcd.eml" and result.delivered
    again = channel.send(outgoing(subject="Mon espace santé : rappel"))
    assert again == result
    assert sorted(p.name for p in outbox.iterdir()) == ["n-0123abcd.eml"]  # no duplicate, no temp file left
    message = parse((outbox / "n-0123abcd.eml").read_bytes())
    assert message["Subject"] == "Mon espace santé : rappel" and message["To"] == ADDRESS
    assert message["Message-ID"] == "<n-0123abcd@mes.test>" and message["Auto-Submitted"] == "auto-generated"
    assert parts(message)["text/plain"].strip() == TEXT
    channel.send(outgoing(delivery_id="n-2"))
    assert sorted(p.name for p in outbox.iterdir()) == ["n-0123abcd.eml", "n-2.eml"]


def test_a_delivery_id_cannot_escape_the_outbox(tmp_path: Path) -> None:
    with pytest.raises(ChannelRefused):
        OutboxEmailChannel(tmp_path / "email").send(outgoing(delivery_id="../escape"))
    assert not (tmp_path / "escape.eml").exists()


def test_the_sms_outbox_writes_one_json_file_per_delivery_id(tmp_path: Path) -> None:
    channel = OutboxSmsChannel(tmp_path / "sms")
    result = channel.send(outgoing(Channel.SMS, address=PHONE, text="Votre code : 123456"))
    assert result.provider_ref == "n-0123abcd.json" and result.delivered
    channel.send(outgoing(Channel.SMS, address=PHONE, text="Votre code : 654321"))
    assert sorted(p.name for p in (tmp_path / "sms").iterdir()) == ["n-0123abcd.json"]
    assert json.loads((tmp_path / "sms" / "n-0123abcd.json").read_text()) == {
        "to": PHONE, "text": "Votre code : 654321", "sender": "MonEspaceSante", "reference": "n-0123abcd"}


def test_inapp_sends_nothing_and_is_delivered() -> None:
    result = InAppChannel().send(outgoing(Channel.INAPP, address=""))
    assert result.provider_ref == "n-0123abcd" and result.delivered


# --- a local HTTP server playing the SMS provider and the push endpoint -------------------------------

@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Provider:
    """Answers from `script` (status, JSON body or None; "hang" waits past the client's timeout), then 201."""

    url: str
    script: list[tuple[int, Any] | str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    default: tuple[int, Any] = (201, {"id": "prov-1"})


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            provider.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                             json.loads(raw)))
            answer = provider.script.pop(0) if provider.script else provider.default
            if isinstance(answer, str):  # "hang"
                provider.release.wait(5)
                return
            status, body = answer
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


#: the push endpoint here is a local http server: a test-only policy lets it through (production: public https)
LOCAL_PUSH = UrlPolicy(allow_http=True, allow_private=True)


@pytest.fixture
def provider() -> Iterator[Provider]:
    port = free_port()
    running = Provider(url=f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(running))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.release.set()
        server.shutdown()
        server.server_close()


def sms(provider: Provider, **kwargs: Any) -> HttpSmsChannel:
    return HttpSmsChannel(f"{provider.url}/v1/sms", API_KEY, **{"timeout_s": 5, **kwargs})


def test_an_sms_is_posted_with_the_bearer_key_and_the_idempotency_key(provider: Provider) -> None:
    result = sms(provider).send(outgoing(Channel.SMS, address=PHONE, text="Votre code : 123456"))
    assert result.provider_ref == "prov-1" and not result.delivered
    [request] = provider.requests
    assert request.path == "/v1/sms"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["idempotency-key"] == "n-0123abcd"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"to": PHONE, "text": "Votre code : 123456", "sender": "MonEspaceSante",
                            "reference": "n-0123abcd"}


@pytest.mark.parametrize(("answer", "ref"), [((200, {"message_id": "m-9"}), "m-9"), ((202, None), "n-0123abcd")])
def test_the_provider_reference_is_its_id_else_the_delivery_id(provider: Provider, answer: tuple[int, Any],
                                                               ref: str) -> None:
    provider.script.append(answer)
    assert sms(provider, sender_id="MES").send(outgoing(Channel.SMS, address=PHONE)).provider_ref == ref
    assert provider.requests[0].body["sender"] == "MES"


@pytest.mark.parametrize("answer", [(500, {"error": "internal"}), (503, None), (429, {"error": "rate_limited"})])
def test_provider_overload_is_unavailable_and_a_retry_reuses_the_idempotency_key(provider: Provider,
                                                                                answer: tuple[int, Any]) -> None:
    provider.script.append(answer)
    channel = sms(provider)
    with pytest.raises(ChannelUnavailable) as raised:
        channel.send(outgoing(Channel.SMS, address=PHONE))
    assert str(answer[0]) in str(raised.value) and PHONE not in str(raised.value)
    assert channel.send(outgoing(Channel.SMS, address=PHONE)).provider_ref == "prov-1"
    assert [r.headers["idempotency-key"] for r in provider.requests] == ["n-0123abcd", "n-0123abcd"]


def test_an_invalid_number_is_refused_with_the_provider_code_only(provider: Provider) -> None:
    provider.script.append((400, {"error": "invalid_number", "detail": f"{PHONE} is not a mobile number"}))
    with pytest.raises(ChannelRefused) as raised:
        sms(provider).send(outgoing(Channel.SMS, address=PHONE))
    assert raised.value.reason == "sms provider 400: invalid_number"
    assert PHONE not in str(raised.value) and API_KEY not in str(raised.value)


def test_a_provider_that_hangs_times_out_as_unavailable(provider: Provider) -> None:
    provider.script.append("hang")
    started = time.monotonic()
    with pytest.raises(ChannelUnavailable):
        sms(provider, timeout_s=0.5).send(outgoing(Channel.SMS, address=PHONE))
    assert time.monotonic() - started < 3


def test_no_provider_listening_is_unavailable() -> None:
    with pytest.raises(ChannelUnavailable):
        HttpSmsChannel(f"http://127.0.0.1:{free_port()}/v1/sms", API_KEY, timeout_s=2).send(
            outgoing(Channel.SMS, address=PHONE))


def test_an_sms_over_three_parts_is_refused_before_sending(provider: Provider) -> None:
    with pytest.raises(ChannelRefused) as raised:
        sms(provider).send(outgoing(Channel.SMS, address=PHONE, text="x" * 481))
    assert "too long" in raised.value.reason and provider.requests == []
    sms(provider).send(outgoing(Channel.SMS, address=PHONE, text="x" * 480))
    assert len(provider.requests) == 1


def test_a_push_is_posted_to_the_device_endpoint(provider: Provider) -> None:
    endpoint = f"{provider.url}/push/device-42"
    result = HttpPushChannel(timeout_s=5, policy=LOCAL_PUSH).send(outgoing(Channel.PUSH, address=endpoint))
    assert result.provider_ref == "n-0123abcd"
    [request] = provider.requests
    assert request.path == "/push/device-42" and "authorization" not in request.headers
    assert request.body == {"title": "Mon espace santé : nouveau document", "body": TEXT,
                            "link": "https://mes.test/notifications", "id": "n-0123abcd"}


@pytest.mark.parametrize("status", [410, 404])
def test_a_gone_push_endpoint_is_refused(provider: Provider, status: int) -> None:
    provider.script.append((status, None))
    with pytest.raises(ChannelRefused) as raised:
        HttpPushChannel(timeout_s=5, policy=LOCAL_PUSH).send(
            outgoing(Channel.PUSH, address=f"{provider.url}/push/old"))
    assert raised.value.reason == "push endpoint gone"


@pytest.mark.parametrize("answer", [(429, None), (500, None), "hang"])
def test_a_busy_push_endpoint_is_unavailable(provider: Provider, answer: tuple[int, Any] | str) -> None:
    provider.script.append(answer)
    with pytest.raises(ChannelUnavailable):
        HttpPushChannel(timeout_s=0.5, policy=LOCAL_PUSH).send(
            outgoing(Channel.PUSH, address=f"{provider.url}/push/d"))


def test_a_push_endpoint_that_is_not_a_web_url_is_refused() -> None:
    with pytest.raises(ChannelRefused):
        HttpPushChannel().send(outgoing(Channel.PUSH, address="file:///etc/passwd"))
