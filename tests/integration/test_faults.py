"""Fault tests on the production stack: the object store or the broker goes away while producers
submit.  A client gets 503 or its document ends indexed; nothing that got a 202 is lost; a worker
killed mid-message redelivers and the index still holds exactly one entry per document."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from hub.records import DocumentQuery, SubmissionStatus
from storage.seaweed import SeaweedServer
from storage.sql.index import SqlIndex
from tests import builders
from tests.integration.hub_harness import CuttableProxy, hub_settings, running_hub
from tests.integration.test_intake_e2e import BIO, fixture_bytes, import_roster, post_document, variant
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/documents", content=body, headers={"Content-Type": "application/xml"})


def wait_final(client: httpx.Client, submission: str) -> str:
    for _ in range(6):
        status = str(client.get(f"/v1/submissions/{submission}", params={"wait": 20}).json()["status"])
        if status != "pending":
            return status
    return "pending"


def test_object_store_down_gives_503_and_recovery_indexes(tmp_path: Path, amqp_url: str, topology: object,
                                                          pg_url: str) -> None:
    # Given a hub on its own SeaweedFS, so the test can kill it
    s3 = SeaweedServer(tmp_path / "s3", s3_port=free_port(), access_key="faultkey", secret_key="faultsecret")
    s3.start()
    settings = hub_settings(tmp_path, bus_url=amqp_url, index_url=pg_url, s3_endpoint=s3.endpoint,
                            access_key="faultkey", secret_key="faultsecret", bucket="faults",
                            prefix=topology.prefix)  # type: ignore[attr-defined]
    try:
        with running_hub(settings) as hub, hub.client() as client:
            import_roster(hub, builders.roster_line())
            accepted = post(client, variant(fixture_bytes(BIO), extension="before-crash"))
            assert accepted.status_code == 202
            # When the object store dies
            s3.kill()
            started = time.monotonic()
            refused = post(client, variant(fixture_bytes(BIO), extension="during-outage"))
            # Then the producer is told at once to retry, and nothing was accepted
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert time.monotonic() - started < 20
            # And once it is back, new submissions are accepted and the earlier one is indexed
            s3.start()
            again = post(client, variant(fixture_bytes(BIO), extension="after-recovery"))
            assert again.status_code == 202
            assert wait_final(client, accepted.json()["submission"]) == "indexed"
            assert wait_final(client, again.json()["submission"]) == "indexed"
    finally:
        s3.stop()


def test_broker_down_gives_503_and_nothing_accepted_is_lost(stack_settings: Settings) -> None:
    # Given a hub whose connection to RabbitMQ goes through a proxy the test can cut
    proxy = CuttableProxy(5672)
    amqp_via_proxy = stack_settings.bus_url.replace(":5672", f":{proxy.port}")
    settings = replace(stack_settings, bus_url=amqp_via_proxy)
    try:
        with running_hub(settings) as hub, hub.client() as client:
            import_roster(hub, builders.roster_line())
            accepted = [post_document(client, variant(fixture_bytes(BIO), extension=f"pre-{i}")) for i in range(3)]
            # When the broker goes away
            proxy.cut()
            during = post(client, variant(fixture_bytes(BIO), extension="during"))
            # Then new submissions get 503 (never a 202 that could be lost)
            assert during.status_code == 503, during.text
            proxy.restore()
            after = None
            for _ in range(20):  # the publisher reconnects on its own
                after = post(client, variant(fixture_bytes(BIO), extension="after"))
                if after.status_code == 202:
                    break
                time.sleep(0.5)
            assert after is not None and after.status_code == 202
            # And every accepted submission ends indexed
            for submission in [*(a["submission"] for a in accepted), after.json()["submission"]]:
                assert wait_final(client, submission) == "indexed"
    finally:
        proxy.close()


WORKER_SCRIPT = """
import sys, threading, logging
from config.settings import Settings, StoreSettings
from hub.auth import token_sha256
from meshub.compose import build_hub
logging.basicConfig(level=logging.WARNING)
a = sys.argv[1:]
settings = Settings(data_dir=__import__('pathlib').Path(a[0]), bus_url=a[1], bus_prefix=a[2], index_url=a[3],
                    store=StoreSettings(endpoint=a[4], access_key=a[5], secret_key=a[6], bucket=a[7],
                                        kek_file=a[0] + "/keys/kek.json"),  # the API's (hub_settings)
                    key_secret=b"test-key-secret", workers=2)
hub = build_hub(settings)
hub.start_workers(2)
print("ready", flush=True)
threading.Event().wait()
"""


def test_worker_killed_mid_stream_redelivers_and_indexes_each_document_once(
        stack_settings: Settings, tmp_path: Path) -> None:
    s = stack_settings
    # Given 40 accepted submissions and no worker running
    with running_hub(s, workers=False) as hub, hub.client() as client:
        import_roster(hub, builders.roster_line())
        base = fixture_bytes(BIO)
        ids = [post_document(client, variant(base, extension=f"k-{i}"))["submission"] for i in range(40)]
    argv = [sys.executable, "-c", WORKER_SCRIPT, str(tmp_path), s.bus_url, s.bus_prefix, s.index_url,
            s.store.endpoint or "", s.store.access_key, s.store.secret_key, s.store.bucket]
    index = SqlIndex.connect(s.index_url)
    try:
        # When a worker process is killed -9 while it is working through them
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
        assert first.stdout is not None and first.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _done(index, ids) < 5:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        done_at_kill = _done(index, ids)
        assert done_at_kill < len(ids), "worker finished everything before the kill; test proves nothing"
        # And another worker takes over
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _done(index, ids) < len(ids):
            time.sleep(0.1)
        second.send_signal(signal.SIGKILL)
        second.wait()
        # Then every submission is indexed and each document is in the index exactly once
        statuses = [index.submission(i).status for i in ids]  # type: ignore[union-attr]
        assert statuses.count(SubmissionStatus.INDEXED) == len(ids), statuses
        docs = index.documents(builders.TEST_INS, DocumentQuery(limit=1000))
        assert sorted(d.document_id.rsplit("^", 1)[1] for d in docs) == sorted(f"k-{i}" for i in range(40))
    finally:
        index.dispose()


def _done(index: SqlIndex, ids: list[str]) -> int:
    return sum(1 for i in ids if (r := index.submission(i)) is not None and r.final)

