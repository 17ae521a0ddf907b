"""A stored copy that fails its check is never served: over HTTP on the production stack, a document whose
object was overwritten in the bucket answers 502 `stored-bytes-corrupt` (a JSON error, not a 500, and
not the bytes)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from config.settings import Settings
from tests.cda_builders import cda
from tests.integration.hub_harness import PRODUCER_TOKEN, RunningHub, running_hub
from tests.integration.test_write_rules_e2e import ME, indexed, settings, with_roster  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(settings: Settings) -> Iterator[RunningHub]:  # noqa: F811
    with running_hub(settings) as running:
        yield with_roster(running)


def test_a_tampered_object_is_a_502_and_never_its_bytes(hub: RunningHub) -> None:
    document_id = indexed(hub, PRODUCER_TOKEN, cda(extension="integrity-1", ins=ME))["document_id"]
    record = hub.hub.index.document(document_id)
    assert record is not None
    garbage = b"<ClinicalDocument>not what was stored</ClinicalDocument>"
    hub.hub.store.client.put_object(record.blob_bucket, record.blob_key, io.BytesIO(garbage), len(garbage))
    with hub.admin() as admin:
        response = admin.get(f"/v1/documents/{document_id}/content")
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "stored-bytes-corrupt"
    assert b"not what was stored" not in response.content
