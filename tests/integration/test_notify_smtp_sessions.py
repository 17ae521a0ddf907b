"""SMTP sessions to the smart host are reused (connectors.outbound.smtp_sessions), against a real aiosmtpd
sink on loopback: several e-mails on one session, a sink restart survived, idle sessions closed, and the
replies still mapped to retry or refusal as on a new session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.outbound.notify_channels import SmtpEmailChannel
from hub.errors import ChannelRefused, ChannelUnavailable
from hub.notices import Channel, Outgoing
from tests.services import free_port
from tests.smtp_sink import Sink, SinkController

SENDER = "ne-pas-repondre@mes.test"
ADDRESS = "jeanne.dupont@example.org"


@dataclass
class SessionSink(Sink):
    """The scripted sink, noting which SMTP session carried each accepted message."""

    sessions: list[Session] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("2"):
            self.sessions.append(session)
        return reply

    def distinct_sessions(self) -> int:
        return len({id(s) for s in self.sessions})


class Host:
    """A sink on one fixed port that can be stopped and started again (a smart host restart)."""

    def __init__(self, sink: SessionSink) -> None:
        self.sink, self.port = sink, free_port()
        self._controller: SinkController | None = None

    def start(self) -> None:
        self._controller = SinkController(self.sink, hostname="127.0.0.1", port=self.port,
                                          server_hostname="sink.test")
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def host() -> Iterator[Host]:
    running = Host(SessionSink())
    running.start()
    yield running
    running.stop()


def outgoing(n: int) -> Outgoing:
    return Outgoing(delivery_id=f"n-{n}", channel=Channel.EMAIL, address=ADDRESS, subject="Mon espace santé",
                    text="Un nouveau document est disponible.")


def channel(port: int, **kwargs: Any) -> SmtpEmailChannel:
    return SmtpEmailChannel("127.0.0.1", port, sender=SENDER, timeout_s=5, **kwargs)


def test_one_session_carries_several_emails(host: Host) -> None:
    # Given a channel, When it sends five e-mails one after the other
    email = channel(host.port)
    refs = [email.send(outgoing(n)).provider_ref for n in range(5)]
    email.close()
    # Then all five arrived, on one SMTP session
    assert refs == [f"<n-{n}@mes.test>" for n in range(5)]
    assert len(host.sink.received) == 5 and host.sink.distinct_sessions() == 1 and email.sessions_opened == 1


def test_a_smart_host_restart_in_between_is_survived(host: Host) -> None:
    email = channel(host.port)
    email.send(outgoing(1))
    # Given the smart host restarted since (the idle session is dead)
    host.stop()
    host.start()
    # When the next e-mail goes, Then it arrives on a new session, without an error
    assert email.send(outgoing(2)).provider_ref == "<n-2@mes.test>"
    email.send(outgoing(3))
    assert [r.content.count(b"Message-ID: <n-") for r in host.sink.received] == [1, 1, 1]
    assert email.sessions_opened == 2 and host.sink.distinct_sessions() == 2
    email.close()


def test_an_idle_session_is_closed_and_a_new_one_opened() -> None:
    now = [0.0]
    running = Host(SessionSink())
    running.start()
    try:
        email = channel(running.port, idle_s=30, clock=lambda: now[0])
        email.send(outgoing(1))
        now[0] = 29.0
        email.send(outgoing(2))  # within the idle time: the same session
        now[0] = 60.0
        email.send(outgoing(3))  # idle for 31 s: QUIT, and a new session
        email.close()
    finally:
        running.stop()
    assert email.sessions_opened == 2 and running.sink.distinct_sessions() == 2


@pytest.mark.parametrize(("script", "error", "reason"), [
    ({"data_script": ["451 4.3.0 Try again later"]}, ChannelUnavailable, "smtp 451 4.3.0"),
    ({"rcpt_script": {ADDRESS: [f"550 5.1.1 <{ADDRESS}> no such user"]}}, ChannelRefused, "smtp 550 5.1.1"),
    ({"data_script": ["554 5.7.1 Message rejected as spam"]}, ChannelRefused, "smtp 554 5.7.1"),
], ids=["451-data", "550-rcpt", "554-data"])
def test_replies_on_a_reused_session_map_as_on_a_new_one(host: Host, script: dict[str, Any],
                                                          error: type[Exception], reason: str) -> None:
    email = channel(host.port)
    email.send(outgoing(1))  # the session is open and idle
    for key, value in script.items():
        setattr(host.sink, key, value)
    with pytest.raises(error) as raised:
        email.send(outgoing(2))
    assert reason in str(raised.value) and ADDRESS not in str(raised.value)
    assert email.send(outgoing(2)).provider_ref == "<n-2@mes.test>"  # the next try goes through
    assert len(host.sink.received) == 2
    email.close()
