"""The pure side of restitution and purge: safe names, the default visibility rule, the archive's end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub.envelope import BlobRef
from hub.errors import NotFound
from pipelines.record.core.restitution import (
    ARCHIVE_YEARS,
    PurgeReport,
    archive_ends,
    patient_visible,
    purge_due,
    safe_name,
)
from storage.memory.blobs import MemoryBlobStore
from storage.recent import RecentBlobs
from tests.builders import document, envelope

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_safe_names_are_safe_unique_and_stable() -> None:
    ids = ["1.2.3^a/b", "1.2.3^a:b", "../../etc/passwd", ".hidden", "", "é" * 300, "C:\\x\\y", "a\x00b"]
    names = [safe_name(i, ".xml") for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert set(name) <= SAFE and not name.startswith(".") and name.endswith(".xml") and len(name) <= 100
    assert safe_name("1.2.3^a/b", ".xml") == names[0]
    assert safe_name("1.2.250.1.213^doc-1", ".xml").startswith("1.2.250.1.213_doc-1-")


def test_invisible_patient_documents_are_not_visible_by_default() -> None:
    env = envelope()
    assert patient_visible(document(env, confidentiality=("N", "MASQUE_PS")))
    assert not patient_visible(document(env, confidentiality=("N", "INVISIBLE_PATIENT")))


def test_the_archive_ends_ten_years_after_closure() -> None:
    closed = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert ARCHIVE_YEARS == 10 and archive_ends(closed) == datetime(2036, 12, 2, 12, 0, tzinfo=UTC)
    assert not purge_due(closed, now=archive_ends(closed) - timedelta(seconds=1))
    assert purge_due(closed, now=archive_ends(closed))
    assert archive_ends(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2038, 2, 28, tzinfo=UTC)


def test_a_purge_report_is_complete_only_when_every_object_is_erased() -> None:
    refs = (BlobRef("b", "cda/aa/aa", "a" * 64, 1), BlobRef("b", "cda/bb/bb", "b" * 64, 1))
    assert PurgeReport().complete
    assert not PurgeReport(blobs=refs, erased=1, failed=refs[1:]).complete
    assert PurgeReport(blobs=refs, erased=2).to_dict() == {"rows": {}, "blobs": 2, "erased": 2, "failed": 0,
                                                           "audit_redacted": None}


def test_the_read_your_writes_cache_forgets_what_it_deletes(memory_store: MemoryBlobStore) -> None:
    inner = memory_store
    cache = RecentBlobs(inner)
    ref = cache.put(b"<x/>", kind="cda", content_type="text/xml")
    cache.delete(ref)
    cache.delete(ref)  # twice: harmless
    assert ref.key not in inner.objects
    with pytest.raises(NotFound):
        cache.get(ref)  # not served from the cache either (the store's own answer: NotFound)
