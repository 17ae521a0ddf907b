"""The mail trust rules (pipelines.mail.core.trust) and the credentials' `mail_addresses` loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from config.settings import settings_from_mapping
from hub.errors import ConfigError
from meshub.datadir import dev_credentials
from pipelines.mail.core.mss import MssRules
from pipelines.mail.core.trust import (
    Carried,
    all_or_nothing,
    carries_documents,
    finding,
    mailbox_findings,
    own_addresses,
    sender_is_own,
    sender_may_file,
)
from pipelines.mail.core.xdm import read_xdm
from tests import mail_builders
from tests.builders import TEST_INS, with_key

OTHER_INS = with_key("2800575123456")
MINIMAL_CDA = Path(__file__).resolve().parents[1] / "data" / "minimal_cda.xml"


def minimal_cda() -> bytes:
    return MINIMAL_CDA.read_bytes()


@pytest.mark.parametrize(("mail_from", "own", "expected"), [
    ("dr.a@chu.mssante.fr", ("dr.a@chu.mssante.fr",), True),
    ("Dr.A@CHU.mssante.fr", ("dr.a@chu.mssante.fr",), True),         # case-insensitive
    ("dr.b@chu.mssante.fr", ("dr.a@chu.mssante.fr",), False),         # another person of the same domain
    ("anyone@chu.mssante.fr", ("chu.mssante.fr",), True),             # a domain: any of its addresses
    ("anyone@x.chu.mssante.fr", ("chu.mssante.fr",), False),          # ... not its subdomains
    ("anyone@x.chu.mssante.fr", ("*.chu.mssante.fr",), True),
    ("anyone@chu.mssante.fr", ("*.chu.mssante.fr",), False),
    ("anyone@evilchu.mssante.fr", ("*.chu.mssante.fr",), False),
    ("", ("chu.mssante.fr",), False),                                  # the null reverse-path is nobody's
    ("dr.fake@chu.mssante.fr", (), False),                             # no addresses: sends nothing
])
def test_sender_binding(mail_from: str, own: tuple[str, ...], expected: bool) -> None:
    assert sender_is_own(mail_from, own) is expected


def test_a_patient_credential_sends_as_its_own_patient_address() -> None:
    own = own_addresses((), role="patient", ins=TEST_INS, rules=MssRules())
    assert sender_is_own(f"{TEST_INS}@patient.mssante.fr", own)
    assert not sender_is_own(f"{OTHER_INS}@patient.mssante.fr", own)
    assert own_addresses(("a.fr",), role="insurer", ins="", rules=MssRules()) == ("a.fr",)


@pytest.mark.parametrize(("mail_from", "auth", "files"), [
    ("", "", False), ("<>", "lab-1", False), ("", "hub:report", False),  # null reverse-path: never
    ("spam@example.net", "", False),                                      # unauthenticated, untrusted
    ("dr.a@chu.mssante.fr", "", True),                                    # the trust list (MX role)
    ("secretariat@clinic.example", "lab-1", True),                        # authenticated (bound at MAIL)
    ("spam@example.net", "hub:report", False),                            # the hub's own reports
])
def test_only_an_identified_sender_files(mail_from: str, auth: str, files: bool) -> None:
    refusal = sender_may_file(mail_from, auth=auth, rules=MssRules())
    assert (refusal is None) is files
    assert refusal is None or refusal.rule == "mss.sender.untrusted"


def test_documents_that_are_not_the_mailbox_patients_are_904() -> None:
    own, other = minimal_cda(), minimal_cda().replace(TEST_INS.encode(), OTHER_INS.encode())
    found = mailbox_findings([Carried("S#1", own, TEST_INS), Carried("S#2", other, TEST_INS),
                              Carried("S#3", own, ""), Carried("S#4", own, OTHER_INS), Carried("a.xml", own)],
                             TEST_INS)
    assert [(f.location, f.rule, f.code) for f in found] == [
        ("S#2", "xdm.patient-mismatch", "904"), ("S#3", "xdm.patient-mismatch", "904"),
        ("S#4", "xdm.patient-mismatch", "904")]
    assert TEST_INS not in str([f.to_dict() for f in found]) and OTHER_INS not in str([f.to_dict() for f in found])


@pytest.mark.parametrize(("data", "rule"), [
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "xml.dtd-forbidden"),
    (b"<ClinicalDocument", "xml.well-formed"),
    (b"<x/>", "cda.root"),
])
def test_a_document_unsafe_to_read_is_refused(data: bytes, rule: str) -> None:
    [found] = mailbox_findings([Carried("S#1", data, TEST_INS)], TEST_INS)
    assert found.rule == rule


def test_one_error_stops_the_whole_xdm_and_warnings_do_not() -> None:
    archive = mail_builders.make_xdm_zip([minimal_cda()], extra_members={"../evil.xml": b"<x/>"})
    report = read_xdm(archive)
    assert len(report.documents) == 1  # the benign member is readable...
    stops = all_or_nothing(report.findings)
    assert [f.rule for f in stops] == ["xdm.unsafe-path", "xdm.rejected"]  # ...but nothing is filed
    assert all_or_nothing([finding("xdm.patient-mismatch", "S#1")])[-1].rule == "xdm.rejected"
    clean = read_xdm(mail_builders.make_xdm_zip([minimal_cda()],
                                                entries=[mail_builders.entry_for(minimal_cda(), "DOC0001.XML",
                                                                                 hash="")]))
    assert clean.findings and all_or_nothing(clean.findings) == ()  # xdm.no-hash is a warning


@pytest.mark.parametrize(("content_type", "names", "types", "expected"), [
    ("multipart/mixed", ["IHE_XDM.ZIP"], ["application/zip"], True),
    ("multipart/mixed", ["cr.xml"], ["text/xml"], True),
    ("multipart/mixed", [""], ["application/hl7-cda+xml"], True),
    ("multipart/report", ["IHE_XDM.ZIP"], ["application/zip"], False),   # a report may reattach; it files nothing
    ("text/plain", [], [], False),                                         # an auto-reply
])
def test_what_a_null_reverse_path_may_not_carry(content_type: str, names: list[str], types: list[str],
                                                expected: bool) -> None:
    assert carries_documents(content_type, names, types) is expected


def _credentials(row: dict[str, Any]) -> Any:
    base = {"name": "c", "role": "producer", "token_sha256": "0" * 64}
    return settings_from_mapping({"credentials": [{**base, **row}]},
                                 data_dir=Path("/tmp/meshub-test")).credentials[0]


def test_credential_mail_addresses_are_read_lower_cased() -> None:
    assert _credentials({}).mail_addresses == ()
    cred = _credentials({"mail_addresses": ["Dr.A@CHU.mssante.fr", "clinique.mssante.fr", "*.ght.mssante.fr"]})
    assert cred.mail_addresses == ("dr.a@chu.mssante.fr", "clinique.mssante.fr", "*.ght.mssante.fr")


@pytest.mark.parametrize("value", ["chu.mssante.fr", [3], ["not an address"], ["@chu"], ["dr@"]])
def test_bad_mail_addresses_fail_at_start(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"credentials\[0\]\.mail_addresses"):
        _credentials({"mail_addresses": value})


def test_the_development_credentials_send_as_sensible_addresses(tmp_path: Path) -> None:
    creds = {c.role: c for c in dev_credentials(tmp_path)[0]}
    assert creds["producer"].mail_addresses == ("hopital-dev.mssante.fr",)
    assert creds["professional"].mail_addresses == ("dev.medecin@medecin.mssante.fr",)
    assert creds["insurer"].mail_addresses == () and creds["admin"].mail_addresses == ()
    # A credentials.json written before addresses existed gets the role's default
    path = tmp_path / "credentials.json"
    old = {role: {k: v for k, v in entry.items() if k != "mail_addresses"}
           for role, entry in json.loads(path.read_text()).items()}
    path.write_text(json.dumps(old))
    again = {c.role: c for c in dev_credentials(tmp_path)[0]}
    assert again["producer"].mail_addresses == ("hopital-dev.mssante.fr",)
