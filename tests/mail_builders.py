"""Builders for mail tests: IHE XDM zips around real CDA bytes, and MIME mails carrying them.

Small on purpose; integration tests use them too.  The layout follows DOMAIN §4.3:
`INDEX.HTM`, `README.TXT`, `IHE_XDM/<SUBSET>/METADATA.XML` (ebRIM SubmitObjectsRequest with a URI,
SHA-1 hash and size slot per document) and the documents `IHE_XDM/<SUBSET>/DOC0001.XML`...
No real patient data: the CDA files are the ANS examples (test INS 279035121518989).

    cda = fixture_cda("BIO-CR-BIO_2024.01_TSH_1.xml")
    raw = make_mail_with_xdm([cda], to="279035121518989@patient.mssante.fr", from_="dr@hop.mssante.fr",
                             subject="XDM/1.0/DDM+CR de biologie")
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

from lxml import etree

from pipelines.cda.header import read_header
from pipelines.mail.core.xdm_metadata import CLASSIFICATION_SCHEMES, PATIENT_ID_SCHEME, UNIQUE_ID_SCHEME
from tests.builders import TEST_INS, TEST_OID
from tests.services import FIXTURES_CDA, missing

PATIENT_ADDRESS = f"{TEST_INS}@patient.mssante.fr"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DOCUMENT_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
_CONFIDENTIALITY_SYSTEMS = {"N": "2.16.840.1.113883.5.25", "R": "2.16.840.1.113883.5.25",
                            "V": "2.16.840.1.113883.5.25"}  # masking codes: 1.2.250.1.213.1.1.4.13


def fixture_cda(name: str) -> bytes:
    """An ANS example CDA from examples/cda (shipped with the project; skips locally, fails in CI, when absent)."""
    path = Path(FIXTURES_CDA) / name
    if not path.is_file():
        missing(f"CDA fixture missing: {path}")
    return path.read_bytes()


@dataclass(frozen=True)
class MetaEntry:
    """One ExtrinsicObject of METADATA.XML.  `hash`/`size` default to those of `data`."""

    uri: str
    data: bytes = b""
    entry_id: str = "Document01"
    unique_id: str = "1.2.250.1.213.1.1.9^doc-1"
    patient_id: str = f"{TEST_INS}^^^&{TEST_OID}&ISO"
    mime_type: str = "text/xml"
    type_code: str = "11502-2"
    class_code: str = "10"
    format_code: str = "urn:ihe:lab:xd-lab:2008"
    confidentiality: tuple[str, ...] = ("N",)
    title: str = "Document"
    action: str = ""
    hash: str | None = None
    size: int | None = None


def entry_for(cda: bytes, uri: str, **changes: object) -> MetaEntry:
    """A MetaEntry whose uniqueId, typeCode and title come from the CDA header."""
    root = etree.fromstring(cda, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    header = read_header(root)
    entry = MetaEntry(uri=uri, data=cda, unique_id=header.document_id or "1.2.3^doc",
                      type_code=header.type_code or "11502-2", title=header.title or "Document")
    return replace(entry, **changes)  # type: ignore[arg-type]


def make_metadata_xml(entries: Sequence[MetaEntry]) -> bytes:
    """An ebRIM 3.0 SubmitObjectsRequest: one SubmissionSet and one ExtrinsicObject per entry."""
    patient = entries[0].patient_id if entries else f"{TEST_INS}^^^&{TEST_OID}&ISO"
    objects = "".join(_extrinsic_object(e) for e in entries)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
        'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
        '<rim:RegistryPackage id="SubmissionSet01">'
        f'<rim:ExternalIdentifier identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446" '
        f'value={quoteattr(patient)} registryObject="SubmissionSet01" id="ss-pid"/></rim:RegistryPackage>'
        f'<rim:Classification classificationNode="{SUBMISSION_SET_NODE}" classifiedObject="SubmissionSet01" '
        'id="ss-class"/>'
        f"{objects}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>\n"
    ).encode()


def _extrinsic_object(e: MetaEntry) -> str:
    digest = e.hash if e.hash is not None else hashlib.sha1(e.data).hexdigest()
    size = e.size if e.size is not None else len(e.data)
    slots = _slot("creationTime", "20240105120000") + _slot("hash", digest) + _slot("size", str(size))
    slots += _slot("URI", e.uri) + (_slot("action", e.action) if e.action else "")
    codes = [("type_code", e.type_code, "2.16.840.1.113883.6.1"), ("class_code", e.class_code, "1.2.250.1.213.1.1.4.1"),
             ("format_code", e.format_code, "1.2.250.1.213.1.1.4.2.282")]
    codes += [("confidentiality", c, _CONFIDENTIALITY_SYSTEMS.get(c, "1.2.250.1.213.1.1.4.13"))
              for c in e.confidentiality]
    classifications = "".join(_classification(e.entry_id, f"c{i}", CLASSIFICATION_SCHEMES[field], code, system)
                              for i, (field, code, system) in enumerate(codes))
    return (
        f'<rim:ExtrinsicObject id={quoteattr(e.entry_id)} mimeType={quoteattr(e.mime_type)} '
        f'objectType="{DOCUMENT_ENTRY_TYPE}">{slots}'
        f'<rim:Name><rim:LocalizedString value={quoteattr(e.title)}/></rim:Name>{classifications}'
        f"{_external_id(e.entry_id, PATIENT_ID_SCHEME, e.patient_id, 'XDSDocumentEntry.patientId')}"
        f"{_external_id(e.entry_id, UNIQUE_ID_SCHEME, e.unique_id, 'XDSDocumentEntry.uniqueId')}"
        "</rim:ExtrinsicObject>"
    )


def _slot(name: str, value: str) -> str:
    return (f"<rim:Slot name={quoteattr(name)}><rim:ValueList><rim:Value>{_text(value)}</rim:Value>"
            "</rim:ValueList></rim:Slot>")


def _classification(owner: str, suffix: str, scheme: str, code: str, system: str) -> str:
    return (f'<rim:Classification classificationScheme="{scheme}" classifiedObject={quoteattr(owner)} '
            f'nodeRepresentation={quoteattr(code)} id={quoteattr(owner + "-" + suffix)}>'
            f'{_slot("codingScheme", system)}<rim:Name><rim:LocalizedString value={quoteattr(code)}/></rim:Name>'
            "</rim:Classification>")


def _external_id(owner: str, scheme: str, value: str, name: str) -> str:
    return (f'<rim:ExternalIdentifier identificationScheme="{scheme}" value={quoteattr(value)} '
            f'registryObject={quoteattr(owner)} id={quoteattr(owner + "-" + name)}>'
            f'<rim:Name><rim:LocalizedString value="{name}"/></rim:Name></rim:ExternalIdentifier>')


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_zip(members: Mapping[str, bytes] | Sequence[tuple[str, bytes]], *,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of exactly these members, names kept as given (duplicates allowed with a sequence)."""
    items = list(members.items()) if isinstance(members, Mapping) else list(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in items:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 5, 12, 0, 0)), data,
                             compress_type=compression)
    return buffer.getvalue()


def make_xdm_zip(documents: Sequence[bytes], *, subset: str = "SUBSET01", confidentiality: tuple[str, ...] = ("N",),
                 patient_id: str = f"{TEST_INS}^^^&{TEST_OID}&ISO", action: str = "",
                 entries: Sequence[MetaEntry] | None = None, metadata: bytes | None = None,
                 extra_members: Mapping[str, bytes] | None = None) -> bytes:
    """An IHE_XDM.ZIP: INDEX.HTM, README.TXT, IHE_XDM/<subset>/METADATA.XML and DOC0001.XML...

    By default each document gets an entry from its CDA header with the right SHA-1 and size;
    pass `entries` (or raw `metadata`) to lie about them, `extra_members` to add files.
    """
    uris = [f"DOC{i:04d}.XML" for i in range(1, len(documents) + 1)]
    if entries is None:
        entries = [entry_for(cda, uri, entry_id=f"Document{i:02d}", confidentiality=confidentiality,
                             patient_id=patient_id, action=action)
                   for i, (cda, uri) in enumerate(zip(documents, uris, strict=True), start=1)]
    members = {
        "INDEX.HTM": b"<html><body><a href='IHE_XDM/'>IHE_XDM</a></body></html>",
        "README.TXT": b"MES Hub test archive (IHE XDM)\r\n",
        f"IHE_XDM/{subset}/METADATA.XML": metadata if metadata is not None else make_metadata_xml(entries),
        **{f"IHE_XDM/{subset}/{uri}": cda for uri, cda in zip(uris, documents, strict=True)},
        **(extra_members or {}),
    }
    return make_zip(members)


def make_mail_with_xdm(cda_bytes_list: Sequence[bytes], *, to: str | Sequence[str] = PATIENT_ADDRESS,
                       from_: str = "dr.test@hopital.mssante.fr", subject: str = "XDM/1.0/DDM+Document",
                       headers: Mapping[str, str] | None = None, pdf: bytes | None = None,
                       xdm: bytes | None = None, text: str = "Bonjour,\nci-joint un document.\n") -> bytes:
    """multipart/mixed: a text body, IHE_XDM.ZIP (built from the CDAs unless `xdm` is given), an optional PDF."""
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2024, 1, 5, 12, 0, tzinfo=UTC))
    msg["Message-ID"] = "<test-1@hopital.mssante.fr>"
    for name, value in (headers or {}).items():
        del msg[name]
        msg[name] = value
    msg.set_content(text)
    msg.add_attachment(xdm if xdm is not None else make_xdm_zip(cda_bytes_list), maintype="application",
                       subtype="zip", filename="IHE_XDM.ZIP")
    if pdf is not None:
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="document.pdf")
    return msg.as_bytes()


# -- hostile archives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawMember:
    """A zip member written byte by byte: the header may lie about sizes, flags or CRC."""

    name: str
    payload: bytes  # already compressed when method is 8 (raw deflate)
    crc: int
    size: int  # declared uncompressed size
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0  # bit 0 = encrypted


def make_raw_zip(members: Sequence[RawMember]) -> bytes:
    """A zip built by hand (local headers, central directory, end record; no zip64)."""
    body, directory = b"", b""
    for m in members:
        name = m.name.encode()
        fixed = struct.pack("<HHHHHIII", 20, m.flags, m.method, 0, 0x21, m.crc, len(m.payload), m.size)
        directory += (struct.pack("<IH", 0x02014B50, 20) + fixed
                      + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, len(body)) + name)
        body += struct.pack("<I", 0x04034B50) + fixed + struct.pack("<HH", len(name), 0) + name + m.payload
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), len(body), 0)
    return body + directory + end


def deflated_zeros(size_mib: int) -> tuple[bytes, int]:
    """(raw deflate stream, CRC-32) of size_mib MiB of zeros, in milliseconds: one MiB is compressed
    once with a full flush, so every MiB compresses to the same bytes, and the stream repeats them."""
    chunk = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size_mib):
        crc = zlib.crc32(chunk, crc)
    return block * size_mib + compressor.flush(zlib.Z_FINISH), crc
