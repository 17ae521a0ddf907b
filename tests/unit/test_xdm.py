"""read_xdm(): IHE XDM zips around real ANS CDA examples, and the archive attacks it must refuse."""

from __future__ import annotations

import time
import zlib
from dataclasses import replace

import pytest

from hub.findings import Severity
from pipelines.mail.core.xdm import XdmLimits, XdmReport, read_xdm
from pipelines.mail.core.xdm_metadata import read_metadata
from tests.builders import TEST_INS, TEST_OID
from tests.mail_builders import (
    MetaEntry,
    RawMember,
    deflated_zeros,
    entry_for,
    fixture_cda,
    make_metadata_xml,
    make_raw_zip,
    make_xdm_zip,
    make_zip,
)

BIO = "BIO-CR-BIO_2024.01_TSH_1.xml"
VAC = "VAC-NOTE_2023.01.xml"


def rules_of(report: XdmReport) -> list[str]:
    return [f.rule for f in report.findings]


@pytest.fixture(scope="module")
def bio() -> bytes:
    return fixture_cda(BIO)


@pytest.fixture(scope="module")
def vac() -> bytes:
    return fixture_cda(VAC)


# -- well-formed archives ---------------------------------------------------------------------------


@pytest.mark.parametrize("subset", ["SUBSET01", "SS000001"])
def test_both_documents_are_read_whatever_the_subset_folder(subset: str, bio: bytes, vac: bytes) -> None:
    # Given an XDM zip with two real CDA documents in a subset folder named the IHE or the ANS way
    report = read_xdm(make_xdm_zip([bio, vac], subset=subset))

    # Then both documents come out, byte for byte, with their metadata
    assert report.ok and report.findings == ()
    assert [d.data for d in report.documents] == [bio, vac]
    first = report.documents[0].entry
    assert first.subset == subset
    assert first.member == f"IHE_XDM/{subset}/DOC0001.XML"
    assert first.unique_id == "1.2.250.1.213.1.1.1.55.2024.9.1"  # the CDA's own id
    assert first.type_code == "11502-2"
    assert first.class_code == "10"
    assert first.format_code == "urn:ihe:lab:xd-lab:2008"
    assert first.mime_type == "text/xml"
    assert first.size == len(bio)
    assert (first.patient_ins, first.patient_oid) == (TEST_INS, TEST_OID)
    assert report.documents[1].entry.type_code == "87273-9"


def test_several_subsets_are_all_read(bio: bytes, vac: bytes) -> None:
    one = make_xdm_zip([bio], subset="SUBSET01", extra_members={
        "IHE_XDM/SUBSET02/METADATA.XML": make_metadata_xml([entry_for(vac, "DOC0001.XML")]),
        "IHE_XDM/SUBSET02/DOC0001.XML": vac,
    })
    report = read_xdm(one)
    assert report.ok, report.findings
    assert sorted((d.entry.subset, d.data == (bio if d.entry.subset == "SUBSET01" else vac))
                  for d in report.documents) == [("SUBSET01", True), ("SUBSET02", True)]


def test_confidentiality_codes_are_all_kept(bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio], confidentiality=("N", "MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX")))
    assert report.documents[0].entry.confidentiality == ("N", "MASQUE_PS", "INVISIBLE_REPRESENTANTS_LEGAUX")


def test_deletion_action_slot_is_read(bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio], action="D"))
    assert report.documents[0].entry.action == "D"
    assert read_xdm(make_xdm_zip([bio])).documents[0].entry.action == ""


def test_a_uri_split_over_several_values_is_joined(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "DOC0001.XML")]).replace(
        b"<rim:Value>DOC0001.XML</rim:Value>", b"<rim:Value>2|0001.XML</rim:Value><rim:Value>1|DOC</rim:Value>")
    report = read_xdm(make_xdm_zip([bio], metadata=metadata))
    assert report.ok and report.documents[0].entry.uri == "DOC0001.XML"


# -- broken archives ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x03\x04" + b"\x00" * 40])
def test_unreadable_bytes_are_corrupt(data: bytes) -> None:
    assert rules_of(read_xdm(data)) == ["xdm.corrupt"]


def test_truncated_archive_is_corrupt(bio: bytes) -> None:
    data = make_xdm_zip([bio])
    assert rules_of(read_xdm(data[: len(data) // 2])) == ["xdm.corrupt"]


def test_archive_without_metadata_is_refused(bio: bytes) -> None:
    report = read_xdm(make_zip({"INDEX.HTM": b"<html/>", "IHE_XDM/SUBSET01/DOC0001.XML": bio}))
    assert rules_of(report) == ["xdm.no-metadata"] and report.documents == ()


def test_uri_naming_no_member_is_reported(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "DOC0009.XML")])
    report = read_xdm(make_xdm_zip([bio], metadata=metadata))
    assert rules_of(report) == ["xdm.missing-document"]
    assert report.documents == ()


@pytest.mark.parametrize("lie", [{"hash": "0" * 40}, {"size": 12}])
def test_hash_or_size_mismatch_refuses_the_document(lie: dict[str, object], bio: bytes) -> None:
    entry = replace(entry_for(bio, "DOC0001.XML"), **lie)  # type: ignore[arg-type]
    report = read_xdm(make_xdm_zip([bio], entries=[entry]))
    assert rules_of(report) == ["xdm.hash-mismatch"]
    assert report.documents == ()


def test_entry_without_hash_is_a_warning(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "DOC0001.XML")])
    start = metadata.index(b'<rim:Slot name="hash">')
    metadata = metadata[:start] + metadata[metadata.index(b"</rim:Slot>", start) + len(b"</rim:Slot>"):]
    report = read_xdm(make_xdm_zip([bio], metadata=metadata))
    assert rules_of(report) == ["xdm.no-hash"] and report.ok and len(report.documents) == 1


# -- attacks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "IHE_XDM\\SUBSET01\\x.xml", "C:/Windows/x",
                                  "IHE_XDM/SUBSET01/../../x", "IHE_XDM/SUBSET01/a\x01b"])
def test_unsafe_member_names_are_refused_and_never_read(name: str, bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio], extra_members={name: b"root:x:0:0"}))
    assert "xdm.unsafe-path" in rules_of(report)
    assert not report.ok
    assert all(b"root:x" not in d.data for d in report.documents)


def test_uri_with_traversal_is_refused(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "../../etc/passwd")])
    report = read_xdm(make_xdm_zip([bio], metadata=metadata))
    assert rules_of(report) == ["xdm.unsafe-path"] and report.documents == ()


def test_gigabyte_of_zeros_is_refused_quickly_as_a_bomb() -> None:
    # Given 1 GiB of zeros deflated to about 1 MB, honestly declared, named as the document
    stream, crc = deflated_zeros(1024)
    metadata = make_metadata_xml([MetaEntry(uri="DOC0001.XML", data=b"", size=1 << 30)])
    bomb = make_raw_zip([
        RawMember("IHE_XDM/SUBSET01/METADATA.XML", zlib.compress(metadata)[2:-4], zlib.crc32(metadata),
                  len(metadata)),
        RawMember("IHE_XDM/SUBSET01/DOC0001.XML", stream, crc, 1 << 30),
    ])

    # When it is read
    started = time.perf_counter()
    report = read_xdm(bomb)

    # Then it is refused as a bomb, without inflating it
    assert time.perf_counter() - started < 1.0
    assert "xdm.bomb" in rules_of(report)
    assert report.documents == ()


def test_lying_sizes_do_not_make_the_reader_inflate_more_than_it_may() -> None:
    # Given 256 MiB of zeros whose header claims 10 MiB (under every declared-size cap)
    stream, crc = deflated_zeros(256)
    metadata = make_metadata_xml([MetaEntry(uri="DOC0001.XML", data=b"", size=10 << 20)])
    liar = make_raw_zip([
        RawMember("IHE_XDM/SUBSET01/METADATA.XML", zlib.compress(metadata)[2:-4], zlib.crc32(metadata),
                  len(metadata)),
        RawMember("IHE_XDM/SUBSET01/DOC0001.XML", stream, crc, 10 << 20),
    ])
    started = time.perf_counter()
    report = read_xdm(liar)

    # Then reading stops at the declared size (the CRC no longer matches) and nothing is returned
    assert time.perf_counter() - started < 2.0
    assert rules_of(report) == ["xdm.corrupt"]
    assert report.documents == ()


def test_total_uncompressed_size_is_capped(bio: bytes, vac: bytes) -> None:
    limits = XdmLimits(max_total_bytes=len(bio) + len(vac) // 2)
    report = read_xdm(make_xdm_zip([bio, vac]), limits=limits)
    assert "xdm.too-large" in rules_of(report)


def test_member_over_the_size_cap_is_refused(bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio]), limits=XdmLimits(max_member_bytes=len(bio) - 1))
    assert rules_of(report) == ["xdm.too-large", "xdm.missing-document"]


def test_too_many_members_is_refused_before_reading(bio: bytes) -> None:
    many = make_xdm_zip([bio], extra_members={f"IHE_XDM/SUBSET01/F{i:05d}.TXT": b"x" for i in range(3000)})
    started = time.perf_counter()
    report = read_xdm(many)
    assert time.perf_counter() - started < 0.5
    assert rules_of(report) == ["xdm.too-many-members"]


def test_encrypted_member_is_not_read(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "DOC0001.XML")])
    archive = make_raw_zip([
        RawMember("IHE_XDM/SUBSET01/METADATA.XML", metadata, zlib.crc32(metadata), len(metadata), method=0),
        RawMember("IHE_XDM/SUBSET01/DOC0001.XML", bio, zlib.crc32(bio), len(bio), method=0, flags=1),
    ])
    report = read_xdm(archive)
    assert rules_of(report) == ["xdm.encrypted", "xdm.missing-document"]


def test_nested_zip_is_not_expanded(bio: bytes) -> None:
    inner = make_xdm_zip([bio])
    report = read_xdm(make_xdm_zip([bio], extra_members={"IHE_XDM/SUBSET01/INNER.ZIP": inner}))
    assert rules_of(report) == ["xdm.nested-zip"]
    assert report.ok and len(report.documents) == 1  # only the outer document


def test_duplicate_member_names_are_ambiguous_and_refused(bio: bytes) -> None:
    metadata = make_metadata_xml([entry_for(bio, "DOC0001.XML")])
    archive = make_zip([("IHE_XDM/SUBSET01/METADATA.XML", metadata), ("IHE_XDM/SUBSET01/DOC0001.XML", bio),
                        ("IHE_XDM/SUBSET01/doc0001.xml", b"<evil/>")])
    report = read_xdm(archive)
    assert "xdm.duplicate-member" in rules_of(report)
    assert report.documents == ()


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE lcm:SubmitObjectsRequest [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">&xxe;</lcm:SubmitObjectsRequest>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">&lol3;</lcm:SubmitObjectsRequest>"""


@pytest.mark.parametrize("metadata", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_xml_attacks_in_metadata_are_refused(metadata: bytes, bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio], metadata=metadata))
    assert rules_of(report) == ["xdm.metadata-unsafe"]
    assert all("root:" not in f.message_en for f in report.findings)


@pytest.mark.parametrize(("metadata", "rule"), [
    (b"<lcm:SubmitObjectsRequest", "xdm.metadata-malformed"),
    (b"<other xmlns='urn:x'/>", "xdm.metadata-invalid"),
    (b"<lcm:SubmitObjectsRequest xmlns:lcm='urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0'/>", "xdm.no-documents"),
])
def test_unusable_metadata_is_reported(metadata: bytes, rule: str, bio: bytes) -> None:
    assert rules_of(read_xdm(make_xdm_zip([bio], metadata=metadata))) == [rule]


def test_findings_are_bilingual_and_never_carry_document_content(bio: bytes) -> None:
    report = read_xdm(make_xdm_zip([bio], entries=[replace(entry_for(bio, "DOC0001.XML"), hash="1" * 40)]))
    for finding in report.findings:
        assert finding.message_fr and finding.message_en and finding.severity is Severity.ERROR
        assert TEST_INS not in finding.message_fr + finding.message_en + finding.location


def test_read_metadata_alone_gives_the_entries(bio: bytes) -> None:
    entries, findings = read_metadata(make_metadata_xml([entry_for(bio, "DOC0001.XML", title="CR")]),
                                      subset="S", location="m")
    assert findings == ()
    assert [(e.uri, e.title, e.hash) for e in entries] == [("DOC0001.XML", "CR", entries[0].hash)]
    assert len(entries[0].hash) == 40
