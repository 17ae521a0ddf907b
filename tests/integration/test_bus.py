"""The bus end to end, on the embedded SQLite bus and on a real RabbitMQ: publish, work, retry,
dead-letter, survive crashes (kill -9) without losing or endlessly looping on a message."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.bus import open_connection, sqlite_path
from hub.bus.kombu_bus import KombuPublisher, declare
from hub.bus.worker import Worker
from hub.envelope import Envelope
from hub.errors import BusUnavailable, PermanentError, TransientError
from hub.retry import RetryPolicy
from hub.topology import Topology
from tests.integration._bus_proc import make_envelope, topology_to_json

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROC = Path(__file__).with_name("_bus_proc.py")
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.2, max_delay_s=1.0)


@pytest.fixture(params=["sqlite", "amqp"])
def bus_url(request: pytest.FixtureRequest, sqlite_bus_url: str, topology: Topology) -> str:
    """A bus with `topology` declared, for each transport."""
    url: str = sqlite_bus_url if request.param == "sqlite" else request.getfixturevalue("amqp_url")
    with open_connection(url) as connection:
        declare(connection, topology)
    return url


@pytest.fixture
def publisher(bus_url: str, topology: Topology) -> Iterator[KombuPublisher]:
    publisher = KombuPublisher(open_connection(bus_url), topology)
    yield publisher
    publisher.close()


class Recorder:
    """A handler that records what it saw and fails the way it is told to."""

    def __init__(self, fail: dict[int, Exception] | None = None) -> None:
        self.fail = fail or {}
        self.seen: list[tuple[str, int, float]] = []

    def __call__(self, envelope: Envelope) -> None:
        self.seen.append((envelope.submission_id, envelope.attempt, time.monotonic()))
        if envelope.attempt in self.fail:
            raise self.fail[envelope.attempt]


def worker(url: str, topology: Topology, handler: Any, retry: RetryPolicy = FAST_RETRY) -> Worker:
    return Worker(lambda: open_connection(url), topology, handler, retry=retry)


def take_all(url: str, queue: str) -> list[tuple[dict[str, Any], bytes]]:
    """Headers and bodies of every message in `queue`, which is left empty."""
    taken = []
    with open_connection(url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue)) is not None:
            body = message.body
            taken.append((dict(message.headers or {}), body.encode() if isinstance(body, str) else body))
            channel.basic_ack(message.delivery_tag)
    return taken


def message_count(url: str, queue: str) -> int:
    with open_connection(url) as connection:
        return int(connection.channel().queue_declare(queue=queue, passive=True).message_count)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(PROC), *args], env=env, text=True, stdout=subprocess.PIPE)


def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for_lines(path: Path, count: int, timeout_s: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{path.name}: fewer than {count} lines after {timeout_s}s")


def test_published_envelope_is_handled_once(bus_url: str, topology: Topology,
                                            publisher: KombuPublisher) -> None:
    # Given an envelope on the bus
    envelope = make_envelope()
    publisher.publish(envelope)
    # When a worker drains the queue
    handler = Recorder()
    processed = worker(bus_url, topology, handler).drain(timeout_s=1.0)
    # Then the handler saw it exactly once, and nothing is left
    assert processed == 1
    assert [(sid, attempt) for sid, attempt, _ in handler.seen] == [(envelope.submission_id, 0)]
    assert message_count(bus_url, topology.main_queue) == 0
    assert message_count(bus_url, topology.dead_queue) == 0


def test_transient_error_is_retried_after_a_delay(bus_url: str, topology: Topology,
                                                  publisher: KombuPublisher) -> None:
    # Given a handler that fails transiently on the first attempt only
    publisher.publish(make_envelope())
    handler = Recorder(fail={0: TransientError("index down")})
    # When a worker drains the queue (retry delay 0.1-0.2 s; the 1 s tier on RabbitMQ)
    processed = worker(bus_url, topology, handler).drain(timeout_s=3.0)
    # Then the envelope came back with attempt 1, after the delay, and succeeded
    assert processed == 2
    assert [attempt for _, attempt, _ in handler.seen] == [0, 1]
    assert handler.seen[1][2] - handler.seen[0][2] >= 0.1
    assert message_count(bus_url, topology.dead_queue) == 0


def test_permanent_error_goes_to_the_dead_queue_with_its_reason(bus_url: str, topology: Topology,
                                                                publisher: KombuPublisher) -> None:
    envelope = make_envelope()
    publisher.publish(envelope)
    handler = Recorder(fail={0: PermanentError("unknown recipient")})

    assert worker(bus_url, topology, handler).drain(timeout_s=1.0) == 1

    [(headers, body)] = take_all(bus_url, topology.dead_queue)
    assert headers["x-meshub-reason"] == "PermanentError: unknown recipient"
    assert envelope.submission_id.encode() in body
    assert message_count(bus_url, topology.main_queue) == 0


def test_exhausted_retries_go_to_the_dead_queue(bus_url: str, topology: Topology,
                                                publisher: KombuPublisher) -> None:
    publisher.publish(make_envelope())
    handler = Recorder(fail={0: TransientError("down"), 1: RuntimeError("still down")})

    worker(bus_url, topology, handler, retry=RetryPolicy(max_attempts=1, base_delay_s=0.2)).drain(3.0)

    assert [attempt for _, attempt, _ in handler.seen] == [0, 1]
    [(headers, _)] = take_all(bus_url, topology.dead_queue)
    # A third-party error is named by its class only: its message could quote data.
    assert headers["x-meshub-reason"] == "retries exhausted: RuntimeError"


def test_the_hubs_own_error_messages_are_kept_in_the_reason(bus_url: str, topology: Topology,
                                                            publisher: KombuPublisher) -> None:
    publisher.publish(make_envelope())
    handler = Recorder(fail={0: PermanentError("stored bytes unusable")})

    worker(bus_url, topology, handler).drain(2.0)

    [(headers, _)] = take_all(bus_url, topology.dead_queue)
    assert headers["x-meshub-reason"].endswith("PermanentError: stored bytes unusable")


def test_undecodable_message_goes_to_the_dead_queue(bus_url: str, topology: Topology) -> None:
    with open_connection(bus_url) as connection:
        connection.Producer().publish(b"not an envelope", exchange=topology.exchange,
                                      routing_key=topology.main_queue, content_type="application/json",
                                      content_encoding="utf-8", delivery_mode=2)
    handler = Recorder()

    assert worker(bus_url, topology, handler).drain(timeout_s=1.0) == 1

    assert handler.seen == []
    [(headers, body)] = take_all(bus_url, topology.dead_queue)
    assert headers["x-meshub-reason"].startswith("EnvelopeDecodeError: body is not JSON")
    assert body == b"not an envelope"


def test_poison_message_is_dead_lettered_after_the_delivery_limit(bus_url: str, topology: Topology,
                                                                  publisher: KombuPublisher,
                                                                  tmp_path: Path) -> None:
    # Given a message whose handler kills the worker process every time
    publisher.publish(make_envelope())
    starts = tmp_path / "starts.txt"
    # When workers are restarted after each crash, as a supervisor would
    for _ in range(topology.delivery_limit + 3):
        proc = spawn("worker", bus_url, topology_to_json(topology), str(starts), "crash", "0")
        dead = until(lambda proc=proc: proc.poll() is not None  # type: ignore[misc]
                     or message_count(bus_url, topology.dead_queue) > 0)
        proc.kill()
        proc.wait()
        if dead and message_count(bus_url, topology.dead_queue):
            break
    # Then it was delivered delivery_limit + 1 times, then moved to the dead queue: no endless loop
    assert len(wait_for_lines(starts, 1)) == topology.delivery_limit + 1
    [(headers, _)] = take_all(bus_url, topology.dead_queue)
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert message_count(bus_url, topology.main_queue) == 0


def test_kill_9_mid_message_loses_nothing(bus_url: str, topology: Topology, publisher: KombuPublisher,
                                          tmp_path: Path) -> None:
    # Given 20 envelopes, and a worker killed with SIGKILL while it handles the 5th
    ids = set()
    for _ in range(20):
        envelope = make_envelope()
        publisher.publish(envelope)
        ids.add(envelope.submission_id)
    started = tmp_path / "started.txt"
    proc = spawn("worker", bus_url, topology_to_json(topology), str(started), "hang", "5")
    first = wait_for_lines(started, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # When another worker takes over
    handler = Recorder()
    worker(bus_url, topology, handler).drain(timeout_s=2.0)
    # Then the one in flight was redelivered, and every envelope was processed
    second = {sid for sid, _, _ in handler.seen}
    assert len(first) == 5 and first[-1] in second
    assert set(first[:4]).isdisjoint(second)
    assert ids == set(first) | second
    assert message_count(bus_url, topology.main_queue) == 0
    assert message_count(bus_url, topology.dead_queue) == 0


def test_sqlite_publish_survives_kill_9_of_the_publisher(sqlite_bus_url: str, topology: Topology) -> None:
    with open_connection(sqlite_bus_url) as connection:
        declare(connection, topology)
    # Given a process that published and was killed right after publish() returned
    proc = spawn("publish", sqlite_bus_url, topology_to_json(topology), "1")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Then the message is in the file
    assert line.startswith("published ")
    with sqlite3.connect(sqlite_path(sqlite_bus_url)) as db:
        rows = db.execute("SELECT payload FROM messages WHERE queue = ?", (topology.main_queue,)).fetchall()
    assert len(rows) == 1
    handler = Recorder()
    assert worker(sqlite_bus_url, topology, handler).drain(timeout_s=0.5) == 1
    assert handler.seen[0][0] == line.split()[1]


def test_publisher_is_thread_safe(bus_url: str, topology: Topology, publisher: KombuPublisher) -> None:
    errors: list[BaseException] = []

    def publish_many() -> None:
        try:
            for _ in range(25):
                publisher.publish(make_envelope())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert message_count(bus_url, topology.main_queue) == 200


def test_publish_fails_fast_when_the_broker_is_down(topology: Topology) -> None:
    publisher = KombuPublisher(open_connection("amqp://guest:guest@127.0.0.1:1//"), topology)
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        publisher.publish(make_envelope())
    assert time.monotonic() - started < 3.0
