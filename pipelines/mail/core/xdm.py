"""IHE XDM (ITI-32) zip in memory -> METADATA.XML entries + the documents they name, with findings.

Owns: XdmLimits, XdmEntry, XdmDocument, XdmReport, read_xdm() and read_metadata() (DOMAIN §4.3:
`IHE_XDM/<SUBSET>/METADATA.XML`, any subset folder name, possibly several subsets; each ebRIM
ExtrinsicObject names its document with the `URI` slot, relative to its subset folder).
Does not: validate the CDA documents (validation.py), decide who may receive them (mss.py), write
anything to disk, expand nested zips, log, or raise for a bad archive: problems are findings.

Rule 1: the zip is untrusted.  Member names are screened (no "..", no absolute path, no backslash,
        no drive letter, no control character, no duplicate) and an unsafe member is never read.
Rule 2: sizes are checked three times: the declared member count before the central directory is
        parsed, the declared sizes and ratios of every member, then the bytes actually produced,
        read in bounded chunks against the member cap, the archive budget and the ratio cap.
Rule 3: METADATA.XML goes through the hardened parser of validation.py (no DTD, no entity, no network;
        any DOCTYPE refused): XML attacks become `xdm.metadata-unsafe`.
Rule 4: a document is returned only once its bytes were read within the caps and match the SHA-1
        `hash` and `size` slots; otherwise it is left out and a finding says why.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from lxml import etree

from hub.findings import Finding, Severity
from pipelines.cda.validation import parse_untrusted

RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
SUBMIT_OBJECTS_REQUEST = f"{{{LCM_NS}}}SubmitObjectsRequest"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
#: XdmEntry field -> ebRIM classificationScheme (DOMAIN §2.2).
CLASSIFICATION_SCHEMES: Mapping[str, str] = {
    "type_code": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "class_code": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "format_code": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "confidentiality": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
}
_RIM = f"{{{RIM_NS}}}"
_METADATA = re.compile(r"IHE_XDM/([^/]+)/METADATA\.XML", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_CHUNK = 64 * 1024
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
    RuntimeError, struct.error, OverflowError, KeyError,
)


@dataclass(frozen=True, slots=True)
class XdmLimits:
    """Caps for one archive.  Sizes are uncompressed bytes."""

    max_members: int = 100  # zip members, and ExtrinsicObjects per METADATA.XML
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 128 * 1024 * 1024  # everything read from the archive
    max_metadata_bytes: int = 8 * 1024 * 1024
    max_ratio: int = 100  # uncompressed / compressed, checked once a member passes ratio_floor_bytes
    ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class XdmEntry:
    """One ebRIM ExtrinsicObject (XDS DocumentEntry).  Absent items read as "", () or None."""

    entry_id: str  # the ExtrinsicObject @id
    subset: str  # subset folder, e.g. "SUBSET01" or "SS000001"
    uri: str  # URI slot, relative to the subset folder
    member: str  # zip member the URI resolved to; "" until resolved
    unique_id: str
    patient_id: str  # CX as given: "<INS>^^^&<OID>&ISO"
    mime_type: str
    hash: str  # SHA-1 hex as declared, lower-cased
    size: int | None
    type_code: str
    class_code: str
    format_code: str
    confidentiality: tuple[str, ...]  # N/R/V plus MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX
    title: str = ""
    creation_time: str = ""
    action: str = ""  # extra metadata "action": "D" delete, "C" change, "" none (DOMAIN §4.3)

    @property
    def patient_ins(self) -> str:
        """CX.1 of patientId (the INS matricule for a French patient)."""
        return self.patient_id.split("^", 1)[0]

    @property
    def patient_oid(self) -> str:
        """The universal id of CX.4 (`&<OID>&ISO`), "" when absent."""
        parts = self.patient_id.split("^")
        authority = parts[3].split("&") if len(parts) > 3 else []
        return authority[1] if len(authority) > 1 else ""


@dataclass(frozen=True, slots=True)
class XdmDocument:
    entry: XdmEntry
    data: bytes


@dataclass(frozen=True, slots=True)
class XdmReport:
    documents: tuple[XdmDocument, ...]  # only documents read within the caps and matching hash/size
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)


def read_xdm(data: bytes, *, limits: XdmLimits = XdmLimits()) -> XdmReport:
    """Read an IHE_XDM.ZIP held in memory.  Never raises for a bad archive."""
    declared = _declared_member_count(data)
    if declared is not None and declared > limits.max_members:
        return XdmReport((), (_too_many_members("/", limits.max_members),))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS:
        return XdmReport((), (_f("xdm.corrupt", "/"),))
    with archive:
        return _read_archive(archive, limits)


def read_metadata(xml: bytes, *, subset: str, location: str, max_entries: int = 100
                  ) -> tuple[tuple[XdmEntry, ...], tuple[Finding, ...]]:
    """Entries of one METADATA.XML (bytes already size-capped by the caller)."""
    root, problem = parse_untrusted(xml)
    if root is None:
        unsafe = problem is not None and problem.rule == "xml.dtd-forbidden"
        return (), (_f("xdm.metadata-unsafe" if unsafe else "xdm.metadata-malformed", location),)
    if root.tag != SUBMIT_OBJECTS_REQUEST:
        return (), (_f("xdm.metadata-invalid", location),)
    objects = list(root.iter(f"{_RIM}ExtrinsicObject"))
    findings: list[Finding] = []
    if not objects:
        findings.append(_f("xdm.no-documents", location))
    if len(objects) > max_entries:
        findings.append(_too_many_members(location, max_entries))
    entries = tuple(_entry(el, subset) for el in objects[:max_entries])
    findings += [_f("xdm.metadata-incomplete", f"{location}#{_printable(e.entry_id)}")
                 for e in entries if not (e.unique_id and e.patient_id)]
    return entries, tuple(findings)


# -- the archive ------------------------------------------------------------------------------------


def _read_archive(archive: zipfile.ZipFile, limits: XdmLimits) -> XdmReport:
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        return XdmReport((), (_too_many_members("/", limits.max_members),))
    readable, findings = _screen(infos, limits)
    if sum(i.file_size for i in readable.values()) > limits.max_total_bytes:
        return XdmReport((), (*findings, _too_large("/", limits.max_total_bytes)))
    if not any(_METADATA.fullmatch(info.filename) for info in infos):
        return XdmReport((), (*findings, _f("xdm.no-metadata", "/")))
    metadata = sorted((name, m.group(1)) for name in readable if (m := _METADATA.fullmatch(name)))
    reader = _Reader(archive, limits)
    documents: list[XdmDocument] = []
    for name, subset in metadata:
        xml, problem = reader.read(readable[name], cap=limits.max_metadata_bytes)
        if xml is None:
            findings.append(problem or _f("xdm.corrupt", _printable(name)))
            continue
        entries, metadata_findings = read_metadata(xml, subset=subset, location=_printable(name),
                                                   max_entries=limits.max_members)
        findings += metadata_findings
        for entry in entries:
            document, entry_findings = _load(entry, name, readable, reader)
            findings += entry_findings
            if document is not None:
                documents.append(document)
    return XdmReport(tuple(documents), tuple(findings))


def _screen(infos: Iterable[zipfile.ZipInfo], limits: XdmLimits) -> tuple[dict[str, zipfile.ZipInfo], list[Finding]]:
    """Members that may be read, by name, and findings for those that may not."""
    readable: dict[str, zipfile.ZipInfo] = {}
    folded: dict[str, int] = {}
    for info in infos:
        folded[info.filename.casefold()] = folded.get(info.filename.casefold(), 0) + 1
    findings: list[Finding] = []
    for info in infos:
        problem = _member_problem(info, limits, duplicate=folded[info.filename.casefold()] > 1)
        if problem is not None:
            findings.append(problem)
        elif not info.is_dir():
            readable[info.filename] = info
            if info.filename.casefold().endswith(".zip"):
                findings.append(_f("xdm.nested-zip", _printable(info.filename), severity=Severity.WARNING))
    return readable, findings


def _member_problem(info: zipfile.ZipInfo, limits: XdmLimits, *, duplicate: bool) -> Finding | None:
    """Why this member must not be read, from its name and header alone; None when it may be."""
    location = _printable(info.filename)
    if unsafe_path(info.filename):
        return _f("xdm.unsafe-path", location)
    if duplicate:
        return _f("xdm.duplicate-member", location)
    if info.flag_bits & 0x1:
        return _f("xdm.encrypted", location)
    if _ratio_exceeded(info.file_size, info.compress_size, limits):
        return _f("xdm.bomb", location)
    if info.file_size > limits.max_member_bytes:
        return _too_large(location, limits.max_member_bytes)
    return None


def unsafe_path(name: str) -> bool:
    """True for a member name or URI that could escape a folder if ever written to disk."""
    parts = name.split("/")
    return (not name or name.startswith("/") or "\\" in name or bool(_DRIVE.match(name))
            or any(ord(c) < 32 or c == "\x7f" for c in name) or any(p in ("..", ".") for p in parts))


def _declared_member_count(data: bytes) -> int | None:
    """Entry count of the end-of-central-directory record, read before zipfile parses anything."""
    pos = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if pos < 0 or pos + 22 > len(data):
        return None
    return int.from_bytes(data[pos + 10:pos + 12], "little")


def _ratio_exceeded(size: int, compressed: int, limits: XdmLimits) -> bool:
    return size > limits.ratio_floor_bytes and size > limits.max_ratio * max(compressed, 1)


# -- reading members --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Reader:
    """Reads members in bounded chunks against the caps; remembers what it read (private)."""

    archive: zipfile.ZipFile
    limits: XdmLimits
    spent: int = 0
    cache: dict[str, bytes] = field(default_factory=dict)

    def read(self, info: zipfile.ZipInfo, *, cap: int) -> tuple[bytes | None, Finding | None]:
        if info.filename in self.cache:
            return self.cache[info.filename], None
        location = _printable(info.filename)
        chunks: list[bytes] = []
        total = 0
        try:
            with self.archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    total += len(chunk)
                    self.spent += len(chunk)
                    problem = self._over(info, total, cap, location)
                    if problem is not None:
                        return None, problem
                    chunks.append(chunk)
        except NotImplementedError:
            return None, _f("xdm.unsupported", location)
        except _ZIP_ERRORS:
            return None, _f("xdm.corrupt", location)
        self.cache[info.filename] = data = b"".join(chunks)
        return data, None

    def _over(self, info: zipfile.ZipInfo, total: int, cap: int, location: str) -> Finding | None:
        if total > cap:
            return _too_large(location, cap)
        if self.spent > self.limits.max_total_bytes:
            return _too_large(location, self.limits.max_total_bytes)
        if _ratio_exceeded(total, info.compress_size, self.limits):
            return _f("xdm.bomb", location)
        return None


def _load(entry: XdmEntry, metadata_name: str, readable: Mapping[str, zipfile.ZipInfo],
          reader: _Reader) -> tuple[XdmDocument | None, tuple[Finding, ...]]:
    """The entry's document, read and checked against its hash and size slots."""
    location = _printable(f"{metadata_name}#{entry.entry_id}")
    subset_dir = metadata_name.rsplit("/", 1)[0]
    if not entry.uri:
        return None, (_f("xdm.metadata-invalid", location),)
    if unsafe_path(entry.uri):
        return None, (_f("xdm.unsafe-path", location),)
    info = _resolve(entry.uri, subset_dir, readable)
    if info is None:
        return None, (_f("xdm.missing-document", location),)
    data, problem = reader.read(info, cap=reader.limits.max_member_bytes)
    if data is None:
        return None, (problem or _f("xdm.corrupt", location),)
    findings = _integrity(entry, data, location)
    if data.startswith(b"PK\x03\x04") and not info.filename.casefold().endswith(".zip"):  # else warned by _screen
        findings += (_f("xdm.nested-zip", _printable(info.filename), severity=Severity.WARNING),)
    if any(f.severity is Severity.ERROR for f in findings):
        return None, findings
    return XdmDocument(replace(entry, member=info.filename), data), findings


def _resolve(uri: str, subset_dir: str, readable: Mapping[str, zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """The member a URI names: relative to the subset folder first, then from the root; case-insensitive."""
    folded = {name.casefold(): info for name, info in readable.items()}
    for candidate in (f"{subset_dir}/{uri}", uri):
        info = readable.get(candidate) or folded.get(candidate.casefold())
        if info is not None:
            return info
    return None


def _integrity(entry: XdmEntry, data: bytes, location: str) -> tuple[Finding, ...]:
    if not entry.hash:
        return (_f("xdm.no-hash", location, severity=Severity.WARNING),)
    if hashlib.sha1(data).hexdigest() != entry.hash or entry.size not in (None, len(data)):
        return (_f("xdm.hash-mismatch", location),)
    return ()


# -- ebRIM ------------------------------------------------------------------------------------------


def _entry(el: etree._Element, subset: str) -> XdmEntry:
    size = _first(_slot(el, "size"))
    return XdmEntry(
        entry_id=el.get("id") or "",
        subset=subset,
        uri=_uri(_slot(el, "URI")),
        member="",
        unique_id=_external_id(el, UNIQUE_ID_SCHEME),
        patient_id=_external_id(el, PATIENT_ID_SCHEME),
        mime_type=el.get("mimeType") or "",
        hash=_first(_slot(el, "hash")).lower(),
        size=int(size) if size.isdigit() else None,
        type_code=_first(_codes(el, "type_code")),
        class_code=_first(_codes(el, "class_code")),
        format_code=_first(_codes(el, "format_code")),
        confidentiality=_codes(el, "confidentiality"),
        title=_name(el),
        creation_time=_first(_slot(el, "creationTime")),
        action=_first(_action(el)).upper(),
    )


def _slot(el: etree._Element, name: str) -> tuple[str, ...]:
    for slot in el.iterchildren(f"{_RIM}Slot"):
        if slot.get("name") == name:
            return tuple((v.text or "").strip() for v in slot.iter(f"{_RIM}Value"))
    return ()


def _action(el: etree._Element) -> tuple[str, ...]:
    """The extra-metadata "action" slot: named "action" or "<urn>:action", any case."""
    for slot in el.iterchildren(f"{_RIM}Slot"):
        if (slot.get("name") or "").rsplit(":", 1)[-1].lower() == "action":
            return tuple((v.text or "").strip() for v in slot.iter(f"{_RIM}Value"))
    return ()


def _uri(values: tuple[str, ...]) -> str:
    """The URI slot; long URIs come split as "1|part", "2|part"... (ITI TF-3 4.2.3.2.24)."""
    split = [v.partition("|") for v in values]
    if len(values) > 1 and all(n.isdigit() and sep for n, sep, _ in split):
        return "".join(rest for _, _, rest in sorted(split, key=lambda p: int(p[0])))
    return _first(values)


def _codes(el: etree._Element, scheme_field: str) -> tuple[str, ...]:
    scheme = CLASSIFICATION_SCHEMES[scheme_field]
    return tuple(c.get("nodeRepresentation") or "" for c in el.iterchildren(f"{_RIM}Classification")
                 if c.get("classificationScheme") == scheme)


def _external_id(el: etree._Element, scheme: str) -> str:
    found = (x.get("value") or "" for x in el.iterchildren(f"{_RIM}ExternalIdentifier")
             if x.get("identificationScheme") == scheme)
    return next(found, "")


def _name(el: etree._Element) -> str:
    localized = el.find(f"{_RIM}Name/{_RIM}LocalizedString")
    return "" if localized is None else localized.get("value") or ""


def _first(values: tuple[str, ...]) -> str:
    return values[0] if values else ""


# -- findings ---------------------------------------------------------------------------------------

#: rule -> (French, English).  Locations name the member or the entry id, never document content.
_MESSAGES: Mapping[str, tuple[str, str]] = {
    "xdm.corrupt": ("Archive IHE_XDM.ZIP illisible ou corrompue ; renvoyez une archive zip valide.",
                    "The IHE_XDM.ZIP archive is unreadable or corrupt; send a valid zip archive."),
    "xdm.unsupported": ("Méthode de compression non prise en charge ; utilisez deflate.",
                        "Unsupported compression method; use deflate."),
    "xdm.no-metadata": ("Aucun fichier IHE_XDM/<sous-dossier>/METADATA.XML dans l'archive.",
                        "No IHE_XDM/<subset>/METADATA.XML file in the archive."),
    "xdm.unsafe-path": ("Chemin interdit dans l'archive (.., chemin absolu, \\, lecteur, caractère de "
                        "contrôle) ; ce fichier n'est pas lu.",
                        "Forbidden path in the archive (.., absolute path, \\, drive letter, control "
                        "character); this file is not read."),
    "xdm.duplicate-member": ("Nom de fichier présent plusieurs fois dans l'archive (casse ignorée) ; "
                             "il n'est pas lu.", "File name present more than once in the archive (ignoring "
                             "case); it is not read."),
    "xdm.encrypted": ("Fichier chiffré dans l'archive ; il n'est pas lu.",
                      "Encrypted file in the archive; it is not read."),
    "xdm.bomb": ("Taux de compression anormal (bombe zip) ; le fichier est refusé.",
                 "Abnormal compression ratio (zip bomb); the file is refused."),
    "xdm.nested-zip": ("Archive zip imbriquée : elle n'est pas décompressée.",
                       "Nested zip archive: it is not expanded."),
    "xdm.metadata-unsafe": ("METADATA.XML contient un DOCTYPE ou des entités, interdits ; retirez-les.",
                            "METADATA.XML carries a DOCTYPE or entities, which are forbidden; remove them."),
    "xdm.metadata-malformed": ("METADATA.XML n'est pas du XML bien formé.", "METADATA.XML is not well-formed XML."),
    "xdm.metadata-invalid": ("METADATA.XML n'est pas une SubmitObjectsRequest ebRIM 3.0 exploitable, ou une "
                             "fiche document n'a pas de slot URI.",
                             "METADATA.XML is not a usable ebRIM 3.0 SubmitObjectsRequest, or a document entry "
                             "has no URI slot."),
    "xdm.metadata-incomplete": ("Fiche document sans uniqueId ou sans patientId.",
                                "Document entry without uniqueId or patientId."),
    "xdm.no-documents": ("METADATA.XML ne décrit aucun document (ExtrinsicObject).",
                         "METADATA.XML describes no document (ExtrinsicObject)."),
    "xdm.missing-document": ("Le slot URI d'une fiche document ne désigne aucun fichier de l'archive.",
                             "A document entry's URI slot names no file in the archive."),
    "xdm.hash-mismatch": ("Le document ne correspond pas aux slots hash (SHA-1) ou size de METADATA.XML ; "
                          "il est refusé.", "The document does not match the hash (SHA-1) or size slot of "
                          "METADATA.XML; it is refused."),
    "xdm.no-hash": ("Fiche document sans slot hash : intégrité non vérifiée.",
                    "Document entry without a hash slot: integrity not checked."),
}


def _f(rule: str, location: str, *, severity: Severity = Severity.ERROR) -> Finding:
    fr, en = _MESSAGES[rule]
    return Finding(rule=rule, location=location, message_fr=fr, message_en=en, severity=severity)


def _too_large(location: str, limit: int) -> Finding:
    return Finding(rule="xdm.too-large", location=location,
                   message_fr=f"Contenu décompressé au-delà de {limit} octets ; il est refusé.",
                   message_en=f"Uncompressed content over {limit} bytes; it is refused.")


def _too_many_members(location: str, limit: int) -> Finding:
    return Finding(rule="xdm.too-many-members", location=location,
                   message_fr=f"Plus de {limit} fichiers ou documents dans l'archive ; elle est refusée.",
                   message_en=f"More than {limit} files or documents in the archive; it is refused.")


def _printable(name: str) -> str:
    """A member name fit for a finding location: control characters escaped, at most 200 characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in name)[:200]
