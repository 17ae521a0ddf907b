"""The patient's notification page in a real headless Chromium: the hub's HTTP API on a loopback port
(uvicorn), the notices on a real SQLite index, the page's own JavaScript reading the list, the live
Server-Sent Events stream (fetch + ReadableStream, resumed with Last-Event-ID) and "Marquer comme lu".

Needs the `chromium` Debian package (scripts/services.sh installs it) and the `playwright` Python package
(dev extra; its own browser downloads are not used).  Skipped locally when either is missing, FAILS when
CI=true (tests.services.missing)."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from connectors.inbound.http.app import ApiParts, DocumentPorts, NotificationPorts, OperationPorts, create_app
from hub.auth import Authenticator, token_sha256
from hub.credentials import Credential
from hub.intake import Intake
from hub.notices import Channel, EventKind, Notice, NoticeState
from hub.writes import ProducersOnly
from storage.memory.blobs import MemoryBlobStore
from storage.memory.bus import MemoryPublisher
from storage.sql.index import SqlIndex
from storage.sql.notifications import SqlNotifications
from tests import builders
from tests.services import free_port, missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
INS = builders.TEST_INS
OTHER_INS = builders.with_key("1790399123456")
TOKEN = "patient-token-for-the-page-test"
OTHER_TOKEN = "another-patient-token"
WAIT_MS = 10_000  # the stream polls the store every second
T0 = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)


def _no_roster(_raw: bytes) -> dict[str, Any]:
    raise AssertionError("no roster import here")


@dataclass
class Served:
    url: str
    notices: SqlNotifications

    def add(self, n: int, *, ins: str = INS, kind: EventKind = EventKind.NEW_DOCUMENT) -> Notice:
        """One delivered in-app notice, `n` minutes after T0; returns it as stored (with its seq)."""
        at = T0 + timedelta(minutes=n)
        notice = Notice(notice_id=uuid.uuid4().hex, event_id=f"document:test-{n}-{uuid.uuid4().hex[:6]}",
                        kind=kind, ins=ins, about_ins=ins, channel=Channel.INAPP, address="",
                        state=NoticeState.DELIVERED, created_at=at, due_at=at, sent_at=at)
        (stored,) = self.notices.add([notice])
        return stored

    def page_url(self, ins: str = INS, token: str = TOKEN) -> str:
        return f"{self.url}/patients/notifications#ins={ins}&token={token}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    index = SqlIndex.connect(f"sqlite:///{tmp_path / 'index.db'}")
    notices = SqlNotifications.beside(index)
    auth = Authenticator([Credential("jeanne", "patient", token_sha256(TOKEN), ins=INS),
                          Credential("paul", "patient", token_sha256(OTHER_TOKEN), ins=OTHER_INS)])
    blobs, bus, limit = MemoryBlobStore(), MemoryPublisher(), 1024 * 1024
    intake = Intake(store=blobs, index=index, publisher=bus)
    ctx = ApiParts(auth=auth, blobs=blobs, documents=DocumentPorts(intake, index, ProducersOnly(), limit),
                   operations=OperationPorts(_no_roster, (("index", index.ping), ("store", blobs.ping)), limit),
                   notifications=NotificationPorts(notices))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, access_log=False,
                                           log_config=None, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield Served(f"http://127.0.0.1:{port}", notices)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        index.dispose()
    # the notification routes store no blob (so read none) and publish nothing
    assert blobs.objects == {} and bus.published == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        missing(f"{CHROMIUM} not found (apt-get install chromium chromium-driver, or scripts/services.sh)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Error as exc:
            missing(f"Chromium did not start: {exc}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris")
    try:
        yield context.new_page()
    finally:
        context.close()


def _unread(page: Page, count: int) -> None:
    # expect() polls without eval: the page's Content-Security-Policy forbids 'unsafe-eval'
    from playwright.sync_api import expect
    expect(page.locator("#unread-count")).to_have_text(str(count), timeout=WAIT_MS)


def _live(page: Page, status: str) -> None:
    from playwright.sync_api import expect
    expect(page.locator("#live-status")).to_have_text(status, timeout=WAIT_MS)


def _ids(page: Page) -> list[str]:
    return [str(i) for i in page.eval_on_selector_all("#notifications > li",
                                                      "items => items.map(li => li.dataset.noticeId)")]


def _record(page: Page) -> list[Request]:
    seen: list[Request] = []
    page.on("request", lambda request: seen.append(request))
    return seen


def test_lists_streams_and_marks_read(served: Served, page: Page) -> None:
    older, newer = served.add(1), served.add(2, kind=EventKind.NEW_MESSAGE)
    requests = _record(page)

    page.goto(served.page_url())
    page.wait_for_selector(f'#notifications > li[data-notice-id="{newer.notice_id}"]', timeout=WAIT_MS)
    assert _ids(page) == [newer.notice_id, older.notice_id]  # newest first
    _unread(page, 2)
    first = page.locator(f'li[data-notice-id="{newer.notice_id}"]')
    assert first.get_attribute("data-state") == "unread"
    assert "Nouveau message dans votre messagerie" in first.inner_text()
    assert "Non lu" in first.inner_text()
    assert "5 mars 2026" in first.inner_text()  # fr-FR date
    assert "Nouveau document dans votre profil" in page.locator(f'li[data-notice-id="{older.notice_id}"]').inner_text()
    assert page.title().startswith("(2) Mon espace santé")
    _live(page, "connecté")
    assert "token=" not in page.url  # the fragment is cleared from the address bar

    third = served.add(3, kind=EventKind.FIRST_ACCESS)  # arrives live, no reload
    page.wait_for_selector(f'#notifications > li:first-child[data-notice-id="{third.notice_id}"]', timeout=WAIT_MS)
    _unread(page, 3)
    assert _ids(page) == [third.notice_id, newer.notice_id, older.notice_id]
    assert "Premier accès d'un professionnel de santé" in page.locator("#notifications > li").first.inner_text()

    page.click(f'li[data-notice-id="{older.notice_id}"] button:has-text("Marquer comme lu")')
    page.wait_for_selector(f'li[data-notice-id="{older.notice_id}"][data-state="read"]', timeout=WAIT_MS)
    _unread(page, 2)
    assert page.locator(f'li[data-notice-id="{older.notice_id}"] button').count() == 0
    stored = served.notices.notice(older.notice_id)
    assert stored is not None and stored.read_at is not None
    assert served.notices.notice(newer.notice_id).read_at is None  # type: ignore[union-attr]

    api = [r for r in requests if "/v1/" in r.url]
    assert {r.method + " " + r.url.split("/v1/", 1)[1] for r in api} >= {
        f"GET patients/{INS}/notifications?channel=inapp", f"GET patients/{INS}/notifications/stream",
        f"POST patients/{INS}/notifications/{older.notice_id}/read"}
    for r in requests:
        assert TOKEN not in r.url, f"the token leaked into a URL: {r.method} {r.url}"
    for r in api:
        assert r.headers.get("authorization") == f"Bearer {TOKEN}", r.url


def test_another_patients_token_is_refused(served: Served, page: Page) -> None:
    mine = served.add(1)
    with httpx.Client(base_url=served.url, timeout=10) as client:
        other = {"Authorization": f"Bearer {OTHER_TOKEN}"}
        assert client.get(f"/v1/patients/{INS}/notifications", headers=other).status_code == 403
        assert client.post(f"/v1/patients/{INS}/notifications/{mine.notice_id}/read",
                           headers=other).status_code == 403
        assert client.get(f"/v1/patients/{INS}/notifications").status_code == 401
        assert client.get(f"/v1/patients/{INS}/notifications",
                          headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert served.notices.notice(mine.notice_id).read_at is None  # type: ignore[union-attr]

    page.goto(served.page_url(token=OTHER_TOKEN))
    page.wait_for_selector("#message:has-text('Accès refusé')", timeout=WAIT_MS)
    assert page.locator("#notifications > li").count() == 0
    _live(page, "déconnecté")


def test_reconnects_with_last_event_id(served: Served, page: Page) -> None:
    """The first stream answer ends at once after one frame (`id:` older than the list's newest, `retry:`
    short): the page reconnects with that id as Last-Event-ID, misses nothing and shows no duplicate."""
    older, newer = served.add(1), served.add(2)
    frame = (f"retry: 300\n\n: comment\r\nid: {older.seq}\r\nevent: notification\r\n"
             f"data: {json.dumps(older.to_dict())}\r\n\r\n")
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if r.url.endswith("/notifications/stream") else None)
    answered: list[str] = []

    def first_stream(route: Any) -> None:
        if answered:
            route.continue_()
            return
        answered.append(route.request.url)
        route.fulfill(status=200, content_type="text/event-stream", body=frame)

    page.route("**/notifications/stream", first_stream)
    page.goto(served.page_url())
    page.wait_for_selector(f'li[data-notice-id="{newer.notice_id}"]', timeout=WAIT_MS)
    deadline = time.monotonic() + WAIT_MS / 1000
    while len(streams) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(streams) >= 2, "the page did not reconnect"
    assert streams[0].headers.get("last-event-id") == str(newer.seq)  # resumes after what it listed
    assert streams[1].headers.get("last-event-id") == str(older.seq)  # then after the last id: it saw
    _live(page, "connecté")

    third = served.add(3)
    page.wait_for_selector(f'#notifications > li:first-child[data-notice-id="{third.notice_id}"]', timeout=WAIT_MS)
    # `newer` came again on the resumed stream (it is after older.seq), before `third`: deduplicated
    assert _ids(page) == [third.notice_id, newer.notice_id, older.notice_id]
    _unread(page, 3)


def test_sse_parser_in_the_page(served: Served, page: Page) -> None:
    """The page's SSE parser on awkward chunking: CRLF split across chunks, bare CR, comments, multi-line
    data, a field with no value, `retry:`, an id with no event kept for the next one."""
    page.goto(served.page_url(token="x"))
    got = page.evaluate("""() => {
        const events = [], retries = [];
        const p = new window.mesNotifications.SseParser(e => events.push(e), ms => retries.push(ms));
        for (const chunk of ["retry: 2000\\n\\n: keep-alive\\n\\nid: 7\\r", "\\nevent: notification\\rdata: {\\"a\\"",
                             ":1}\\r\\n\\r\\n", "id: 8\\ndata\\ndata: second\\n", "\\n", "id: 9\\n\\ndata:x\\n\\n"]) {
            p.feed(chunk);
        }
        return {events, retries};
    }""")
    assert got["retries"] == [2000]
    assert got["events"] == [{"type": "notification", "data": '{"a":1}', "id": "7"},
                             {"type": "message", "data": "\nsecond", "id": "8"},
                             {"type": "message", "data": "x", "id": "9"}]


def test_stream_frames(served: Served) -> None:
    """The wire format the page parses: `retry:` first, then per notice `id: <seq>`, `event: notification`
    and the notice as JSON, resumed strictly after Last-Event-ID."""
    older, newer = served.add(1), served.add(2)
    headers = {"Authorization": f"Bearer {TOKEN}", "Last-Event-ID": str(older.seq)}
    with httpx.Client(base_url=served.url, timeout=10) as client, client.stream(
            "GET", f"/v1/patients/{INS}/notifications/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if text.count("\n\n") >= 2:
                break
    retry, frame = text.split("\n\n")[:2]
    assert retry == "retry: 2000"
    lines = frame.split("\n")
    assert lines[:2] == [f"id: {newer.seq}", "event: notification"]
    assert lines[2].startswith("data: ")
    data = json.loads(lines[2].removeprefix("data: "))
    assert data["notice_id"] == newer.notice_id and data["channel"] == "inapp" and data["read_at"] is None
    assert "code" not in data  # never the one-time codes
