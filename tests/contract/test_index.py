"""The Index contract, run against memory, SQLite and PostgreSQL: same code, same expectations."""

from __future__ import annotations

import threading

import pytest

from hub.ports import Index
from hub.records import DocumentQuery, PatientRecord, PatientStatus, SubmissionStatus
from tests import builders

pytestmark = pytest.mark.integration


def test_submission_is_pending_until_indexed(index: Index) -> None:
    # Given a recorded submission
    env = builders.envelope()
    index.create_submission(builders.submission_for(env))
    assert index.submission(env.submission_id).status is SubmissionStatus.PENDING
    # When its document is indexed
    outcome = index.index_document(env, builders.document(env), ())
    # Then the submission is final and the document is listed for the patient
    assert outcome.status is SubmissionStatus.INDEXED and outcome.document_id == "1.2.3^doc-1"
    assert outcome.category == "BIOLOGIE"
    docs = index.documents(builders.TEST_INS, DocumentQuery())
    assert [d.document_id for d in docs] == ["1.2.3^doc-1"]


def test_redelivery_of_the_same_submission_is_idempotent(index: Index) -> None:
    env = builders.envelope()
    index.create_submission(builders.submission_for(env))
    first = index.index_document(env, builders.document(env), ())
    again = index.index_document(env, builders.document(env), ())
    assert first.status is again.status is SubmissionStatus.INDEXED
    assert len(index.documents(builders.TEST_INS, DocumentQuery())) == 1


def test_same_document_id_from_another_submission_is_a_duplicate(index: Index) -> None:
    env1, env2 = builders.envelope(), builders.envelope(sha="b" * 64)
    for env in (env1, env2):
        index.create_submission(builders.submission_for(env))
    index.index_document(env1, builders.document(env1), ())
    outcome = index.index_document(env2, builders.document(env2), ())
    assert outcome.status is SubmissionStatus.DUPLICATE
    assert outcome.findings[-1]["rule"] == "document.duplicate"
    assert env1.submission_id in outcome.findings[-1]["message_en"]
    (doc,) = index.documents(builders.TEST_INS, DocumentQuery())
    assert doc.submission_id == env1.submission_id and doc.sha256 == "a" * 64


def test_concurrent_duplicates_index_exactly_one(index: Index) -> None:
    envs = [builders.envelope(sha=f"{i:064x}") for i in range(8)]
    for env in envs:
        index.create_submission(builders.submission_for(env))
    outcomes = []
    threads = [threading.Thread(target=lambda e=env: outcomes.append(
        index.index_document(e, builders.document(e), ()))) for env in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(str(o.status) for o in outcomes)
    assert statuses == ["duplicate"] * 7 + ["indexed"]
    assert len(index.documents(builders.TEST_INS, DocumentQuery())) == 1


def test_replacement_deprecates_the_parent_and_keeps_both(index: Index) -> None:
    parent_env, child_env = builders.envelope(), builders.envelope(sha="c" * 64)
    index.index_document(parent_env, builders.document(parent_env, "1.2.3^v1"), ())
    index.index_document(child_env, builders.document(child_env, "1.2.3^v2", replaces=("1.2.3^v1",)), ())
    current = index.documents(builders.TEST_INS, DocumentQuery())
    assert [d.document_id for d in current] == ["1.2.3^v2"]
    every = {d.document_id: d for d in index.documents(builders.TEST_INS,
                                                           DocumentQuery(include_deprecated=True))}
    assert every["1.2.3^v1"].status == "deprecated" and every["1.2.3^v1"].replaced_by == "1.2.3^v2"


def test_replacement_arriving_before_its_parent_still_deprecates_the_parent(index: Index) -> None:
    parent_env, child_env = builders.envelope(), builders.envelope(sha="c" * 64)
    index.index_document(child_env, builders.document(child_env, "1.2.3^v2", replaces=("1.2.3^v1",)), ())
    index.index_document(parent_env, builders.document(parent_env, "1.2.3^v1"), ())
    assert [d.document_id for d in index.documents(builders.TEST_INS, DocumentQuery())] == ["1.2.3^v2"]


def test_filters_by_category_class_type_and_dates(index: Index) -> None:
    rows = [("a", "BIOLOGIE", "10", "11502-2", "2024-01-05"), ("b", "RADIO_SC", "31", "18748-4", "2024-03-01"),
            ("c", "SYNTHESE", "11", "60591-5", "2023-12-31")]
    for i, (doc_id, category, class_code, type_code, day) in enumerate(rows):
        env = builders.envelope(sha=f"{i + 1:064x}")
        index.index_document(env, builders.document(env, doc_id, category=category, class_code=class_code,
                                                        type_code=type_code, service_date=day), ())

    def ids(**query: str) -> list[str]:
        return sorted(d.document_id for d in index.documents(builders.TEST_INS, DocumentQuery(**query)))

    assert ids() == ["a", "b", "c"]
    assert ids(category="RADIO_SC") == ["b"]
    assert ids(class_code="11") == ["c"]
    assert ids(type_code="11502-2") == ["a"]
    assert ids(date_from="2024-01-01") == ["a", "b"]
    assert ids(date_from="2024-01-01", date_to="2024-02-01") == ["a"]
    assert index.documents("999999999999999", DocumentQuery()) == []


def test_rejection_keeps_findings_and_indexes_nothing(index: Index) -> None:
    env = builders.envelope()
    index.create_submission(builders.submission_for(env))
    finding = {"rule": "ins.key", "location": "/x", "message_en": "bad key", "code": "904"}
    outcome = index.reject(env, (finding,))
    assert outcome.status is SubmissionStatus.REJECTED and outcome.findings == (finding,)
    assert index.documents(builders.TEST_INS, DocumentQuery(include_deprecated=True)) == []


def test_outcome_is_recorded_even_if_the_pending_row_was_lost(index: Index) -> None:
    env = builders.envelope()  # no create_submission: intake's row lost
    outcome = index.index_document(env, builders.document(env), ())
    assert outcome.status is SubmissionStatus.INDEXED
    assert index.submission(env.submission_id).producer == "lab-1"


def test_forget_only_drops_pending_submissions(index: Index) -> None:
    env = builders.envelope()
    index.create_submission(builders.submission_for(env))
    index.index_document(env, builders.document(env), ())
    index.forget_submission(env.submission_id)
    assert index.submission(env.submission_id) is not None


def test_patients_upsert_by_ins(index: Index) -> None:
    p = PatientRecord(ins=builders.TEST_INS, oid=builders.TEST_OID, birth_name="TEST", status=PatientStatus.CREATED)
    assert index.upsert_patients([p]) == 1
    index.upsert_patients([PatientRecord(ins=p.ins, oid=p.oid, birth_name="TEST", email="x@example.org",
                                             status=PatientStatus.OPPOSED)])
    got = index.patient(builders.TEST_INS)
    assert got is not None and got.status is PatientStatus.OPPOSED and got.email == "x@example.org"
    assert index.patient("123456789012345") is None
