"""MSSanté rules: patient addresses, RCPT refusals, sender trust, patient replies, flags, masking."""

from __future__ import annotations

import re

import pytest

from hub.errors import ConfigError
from hub.records import PatientStatus
from pipelines.mail.core.mime import parse_mail
from pipelines.mail.core.mss import (
    REPLIES,
    MssRules,
    RecipientKind,
    ThreadFacts,
    classify_recipient,
    hops_reply,
    masking_findings,
    may_patient_reply,
    mss_flags,
    recipient_reply,
    sender_trusted,
    too_many_hops,
)
from pipelines.mail.core.xdm_metadata import XdmEntry
from tests.builders import TEST_INS, with_key

RULES = MssRules.from_mapping({
    "patient_domain": "patient.mssante.fr",
    "local_domains": ["hub.mssante.fr"],
    "org_mailboxes": ["Pharmacie.Centrale@hub.mssante.fr", "accueil@hub.mssante.fr"],
    "trusted_domains": ["*.mssante.fr", "mssante.fr"],
    "pharmacy_first_contact": ["pharmacie.centrale@hub.mssante.fr"],
})
DOCTOR = "dr.test@hopital.mssante.fr"


# -- patient addresses ------------------------------------------------------------------------------


def test_ans_test_ins_is_a_valid_patient_address() -> None:
    recipient = classify_recipient(f"{TEST_INS}@patient.mssante.fr", RULES)
    assert recipient.kind is RecipientKind.PATIENT
    assert recipient.ins == TEST_INS
    assert recipient_reply(recipient, "active") is None


def test_domain_case_and_angle_brackets_do_not_matter() -> None:
    recipient = classify_recipient(f"<{TEST_INS}@Patient.MSSante.FR>", RULES)
    assert (recipient.kind, recipient.address) == (RecipientKind.PATIENT, f"{TEST_INS}@patient.mssante.fr")


@pytest.mark.parametrize("nir13", ["185052A004123", "185052B004123"])
def test_corsican_ins_is_valid_in_either_case(nir13: str) -> None:
    ins = with_key(nir13)
    assert classify_recipient(f"{ins}@patient.mssante.fr", RULES).ins == ins
    assert classify_recipient(f"{ins.lower()}@patient.mssante.fr", RULES).ins == ins


@pytest.mark.parametrize(("local", "rule"), [
    ("27903512151898912345", "mss.patient-address.length"),  # 20 digits
    ("2790351215189", "mss.patient-address.length"),  # no key
    ("221042545611404", "mss.patient-address.key"),  # ANS example with a wrong key
    ("27903512151898X", "mss.patient-address.format"),
    ("jeanne.test.1979", "mss.patient-address.length"),
])
def test_malformed_patient_address_gets_553_5_1_3(local: str, rule: str) -> None:
    recipient = classify_recipient(f"{local}@patient.mssante.fr", RULES)
    assert recipient.kind is RecipientKind.BAD_ADDRESS
    assert recipient.finding is not None and recipient.finding.rule == rule
    reply = recipient_reply(recipient)
    assert reply is not None and (reply.code, reply.status) == (553, "5.1.3")
    assert "INS" in reply.text


@pytest.mark.parametrize("address", ["", "no-at-sign", "a@", "@b.fr", "a b@c.fr", "a@b", "a@-b.fr", "a@b..fr"])
def test_non_addresses_are_bad(address: str) -> None:
    recipient = classify_recipient(address, RULES)
    assert recipient.kind is RecipientKind.BAD_ADDRESS
    reply = recipient_reply(recipient)
    assert reply is not None and str(reply).startswith("553 5.1.3 ")


# -- the RCPT refusal table -------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "expected"), [
    (None, (550, "5.1.1")),
    (PatientStatus.OPPOSED, (550, "5.7.1")),
    (PatientStatus.CLOSED, (550, "5.2.1")),
    (PatientStatus.ACTIVE, None),
    (PatientStatus.CREATED, None),
])
def test_patient_status_decides_the_reply(status: str | None, expected: tuple[int, str] | None) -> None:
    reply = recipient_reply(RecipientKind.PATIENT, status)
    assert (None if reply is None else (reply.code, reply.status)) == expected


def test_opposition_reply_tells_the_sender_to_stop_and_use_another_means() -> None:
    reply = recipient_reply(RecipientKind.PATIENT, "opposed")
    assert reply is not None
    assert "oppose" in reply.text and "autre moyen" in reply.text and "another means" in reply.text


def test_closed_profile_reply_says_dmp_closed() -> None:
    reply = recipient_reply(RecipientKind.PATIENT, "closed")
    assert reply is not None and "DMP ferme" in reply.text


def test_unknown_status_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown patient status"):
        recipient_reply(RecipientKind.PATIENT, "deleted")


def test_relay_needs_authentication() -> None:
    remote = classify_recipient("someone@clinique.mssante.fr", RULES)
    assert remote.kind is RecipientKind.REMOTE
    reply = recipient_reply(remote)
    assert reply is not None and (reply.code, reply.status) == (554, "5.7.1")
    assert recipient_reply(remote, authenticated=True) is None


def test_local_mailboxes() -> None:
    org = classify_recipient("pharmacie.centrale@HUB.mssante.fr", RULES)
    assert org.kind is RecipientKind.LOCAL_ORG and recipient_reply(org) is None
    unknown = classify_recipient("nobody@hub.mssante.fr", RULES)
    assert unknown.kind is RecipientKind.LOCAL_UNKNOWN
    reply = recipient_reply(unknown)
    assert reply is not None and (reply.code, reply.status) == (550, "5.1.1")


def test_too_many_hops() -> None:
    assert not too_many_hops(30, RULES) and too_many_hops(31, RULES)
    assert hops_reply(30, RULES) is None
    reply = hops_reply(31, RULES)
    assert reply is not None and (reply.code, reply.status) == (554, "5.4.6")


def test_every_reply_is_short_ascii_bilingual_and_free_of_health_data() -> None:
    for reply in REPLIES.values():
        line = str(reply)
        assert re.fullmatch(r"[245]\d\d [245]\.\d{1,3}\.\d{1,3} .+", line)
        assert line.isascii() and len(line) < 250
        assert " / " in reply.text  # French / English
        assert not re.search(r"\d{13}", line)


# -- senders and replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mail_from", "trusted"), [
    (DOCTOR, True),
    ("DR@Hopital.MSSANTE.FR", True),
    ("admin@mssante.fr", True),
    ("x@mssante.fr.evil.com", False),
    ("x@evilmssante.fr", False),
    ("x@gmail.com", False),
    ("<>", False),
    ("", False),
])
def test_sender_trust_follows_the_domain_patterns(mail_from: str, trusted: bool) -> None:
    assert sender_trusted(mail_from, RULES) is trusted


def test_patient_may_reply_only_to_who_wrote_first_and_did_not_close() -> None:
    thread = ThreadFacts.from_messages([(DOCTOR, False), ("closer@hopital.mssante.fr", True)])
    assert may_patient_reply(thread, "Dr.Test@hopital.mssante.fr", RULES) is None
    refused = may_patient_reply(thread, "other@hopital.mssante.fr", RULES)
    assert refused is not None and refused.rule == "mss.reply.not-initiated"
    closed = may_patient_reply(thread, "closer@hopital.mssante.fr", RULES)
    assert closed is not None and closed.rule == "mss.reply.closed"


def test_a_later_message_without_fin_reopens_the_exchange() -> None:
    thread = ThreadFacts.from_messages([(DOCTOR, True), (DOCTOR, False)])
    assert may_patient_reply(thread, DOCTOR, RULES) is None


def test_patient_may_write_first_to_a_listed_pharmacy_only() -> None:
    assert may_patient_reply(ThreadFacts(), "pharmacie.centrale@hub.mssante.fr", RULES) is None
    refused = may_patient_reply(ThreadFacts(), "accueil@hub.mssante.fr", RULES)
    assert refused is not None and refused.rule == "mss.reply.not-initiated"


def test_mss_flags_are_read_from_the_headers() -> None:
    raw = (b"From: dr@h.mssante.fr\r\nx-mss-mes: fin\r\nX-MSS-CODECDA: 11502-2, 18748-4\r\nX-MSS-INS: O\r\n"
           b"X-MSS-NIL: NIL-123\r\n\r\nbody\r\n")
    mail = parse_mail(raw).mail
    assert mail is not None
    flags = mss_flags(mail)
    assert flags.end_of_exchange is True
    assert flags.cda_codes == ("11502-2", "18748-4")
    assert flags.qualified_ins is True and flags.nil == "NIL-123"
    plain = parse_mail(b"From: dr@h.mssante.fr\r\n\r\nbody\r\n").mail
    assert plain is not None and mss_flags(plain).end_of_exchange is False and mss_flags(plain).qualified_ins is None


# -- masking ----------------------------------------------------------------------------------------


def _entry(*codes: str) -> XdmEntry:
    return XdmEntry(entry_id="Document01", subset="SUBSET01", uri="DOC0001.XML", member="", unique_id="1.2^x",
                    patient_id="", mime_type="text/xml", hash="", size=None, type_code="11502-2", class_code="10",
                    format_code="", confidentiality=("N", *codes))


def test_masked_document_is_never_mailed_to_a_professional() -> None:
    assert [f.rule for f in masking_findings([_entry("MASQUE_PS")], recipient_is_professional=True)] == [
        "mss.masking.masked-ps"]
    assert masking_findings([_entry("MASQUE_PS")], recipient_is_professional=False) == ()


def test_document_invisible_to_the_patient_is_never_mailed_to_them() -> None:
    assert [f.rule for f in masking_findings([_entry("INVISIBLE_PATIENT")], recipient_is_professional=False)] == [
        "mss.masking.invisible-patient"]
    assert masking_findings([_entry("INVISIBLE_PATIENT")], recipient_is_professional=True) == ()


def test_invisible_to_legal_representatives_goes_to_the_patient_only() -> None:
    entries = [_entry("INVISIBLE_REPRESENTANTS_LEGAUX")]
    assert masking_findings(entries, recipient_is_professional=False) == ()
    assert [f.rule for f in masking_findings(entries, recipient_is_professional=True)] == [
        "mss.masking.invisible-representatives"]


def test_normal_documents_go_to_everyone() -> None:
    assert masking_findings([_entry(), _entry("R")], recipient_is_professional=True) == ()
    assert masking_findings([_entry(), _entry("V")], recipient_is_professional=False) == ()


# -- rules from configuration -----------------------------------------------------------------------


def test_rules_are_normalised_and_defaulted() -> None:
    assert RULES.org_mailboxes == ("pharmacie.centrale@hub.mssante.fr", "accueil@hub.mssante.fr")
    defaults = MssRules.from_mapping({})
    assert (defaults.patient_domain, defaults.max_hops, defaults.trusted_domains) == (
        "patient.mssante.fr", 30, ("*.mssante.fr",))


@pytest.mark.parametrize("table", [{"max_hops": "30"}, {"max_hops": 0}, {"local_domains": "hub.fr"},
                                   {"org_mailboxes": [1]}, {"patient_domain": ""}])
def test_wrong_configuration_fails_at_start_with_the_key(table: dict[str, object]) -> None:
    key = next(iter(table))
    with pytest.raises(ConfigError, match=key):
        MssRules.from_mapping(table)
