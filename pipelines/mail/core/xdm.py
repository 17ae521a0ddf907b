"""IHE XDM (ITI-32) zip in memory -> METADATA.XML entries + the documents they name, with findings.

Owns: XdmLimits, XdmDocument, XdmReport and read_xdm() (DOMAIN §4.3: `IHE_XDM/<SUBSET>/METADATA.XML`,
any subset folder name, possibly several subsets; each ebRIM ExtrinsicObject names its document with
the `URI` slot, relative to its subset folder).  One METADATA.XML is read by
pipelines.mail.core.xdm_metadata (XdmEntry, read_metadata), the findings' texts are in xdm_findings.
Does not: validate the CDA documents (validation.py), decide who may receive them (mss.py), write
anything to disk, expand nested zips, log, or raise for a bad archive: problems are findings.

Rule 1: the zip is untrusted.  Member names are screened (no "..", no absolute path, no backslash,
        no drive letter, no control character, no duplicate) and an unsafe member is never read.
Rule 2: sizes are checked three times: the declared member count before the central directory is
        parsed, the declared sizes and ratios of every member, then the bytes actually produced,
        read in bounded chunks against the member cap, the archive budget and the ratio cap.
Rule 3: METADATA.XML goes through the hardened parser of pipelines.cda.validation (no DTD, no entity, no network;
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

from hub.findings import Finding, Severity
from pipelines.mail.core.xdm_findings import finding, printable, too_large, too_many_members
from pipelines.mail.core.xdm_metadata import XdmEntry, read_metadata

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
        return XdmReport((), (too_many_members("/", limits.max_members),))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS:
        return XdmReport((), (finding("xdm.corrupt", "/"),))
    with archive:
        return _read_archive(archive, limits)


# -- the archive ------------------------------------------------------------------------------------


def _read_archive(archive: zipfile.ZipFile, limits: XdmLimits) -> XdmReport:
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        return XdmReport((), (too_many_members("/", limits.max_members),))
    readable, findings = _screen(infos, limits)
    if sum(i.file_size for i in readable.values()) > limits.max_total_bytes:
        return XdmReport((), (*findings, too_large("/", limits.max_total_bytes)))
    if not any(_METADATA.fullmatch(info.filename) for info in infos):
        return XdmReport((), (*findings, finding("xdm.no-metadata", "/")))
    metadata = sorted((name, m.group(1)) for name in readable if (m := _METADATA.fullmatch(name)))
    reader = _Reader(archive, limits)
    documents: list[XdmDocument] = []
    for name, subset in metadata:
        xml, problem = reader.read(readable[name], cap=limits.max_metadata_bytes)
        if xml is None:
            findings.append(problem or finding("xdm.corrupt", printable(name)))
            continue
        entries, metadata_findings = read_metadata(xml, subset=subset, location=printable(name),
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
                findings.append(finding("xdm.nested-zip", printable(info.filename), severity=Severity.WARNING))
    return readable, findings


def _member_problem(info: zipfile.ZipInfo, limits: XdmLimits, *, duplicate: bool) -> Finding | None:
    """Why this member must not be read, from its name and header alone; None when it may be."""
    location = printable(info.filename)
    if unsafe_path(info.filename):
        return finding("xdm.unsafe-path", location)
    if duplicate:
        return finding("xdm.duplicate-member", location)
    if info.flag_bits & 0x1:
        return finding("xdm.encrypted", location)
    if _ratio_exceeded(info.file_size, info.compress_size, limits):
        return finding("xdm.bomb", location)
    if info.file_size > limits.max_member_bytes:
        return too_large(location, limits.max_member_bytes)
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
        location = printable(info.filename)
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
            return None, finding("xdm.unsupported", location)
        except _ZIP_ERRORS:
            return None, finding("xdm.corrupt", location)
        self.cache[info.filename] = data = b"".join(chunks)
        return data, None

    def _over(self, info: zipfile.ZipInfo, total: int, cap: int, location: str) -> Finding | None:
        if total > cap:
            return too_large(location, cap)
        if self.spent > self.limits.max_total_bytes:
            return too_large(location, self.limits.max_total_bytes)
        if _ratio_exceeded(total, info.compress_size, self.limits):
            return finding("xdm.bomb", location)
        return None


def _load(entry: XdmEntry, metadata_name: str, readable: Mapping[str, zipfile.ZipInfo],
          reader: _Reader) -> tuple[XdmDocument | None, tuple[Finding, ...]]:
    """The entry's document, read and checked against its hash and size slots."""
    location = printable(f"{metadata_name}#{entry.entry_id}")
    subset_dir = metadata_name.rsplit("/", 1)[0]
    if not entry.uri:
        return None, (finding("xdm.metadata-invalid", location),)
    if unsafe_path(entry.uri):
        return None, (finding("xdm.unsafe-path", location),)
    info = _resolve(entry.uri, subset_dir, readable)
    if info is None:
        return None, (finding("xdm.missing-document", location),)
    data, problem = reader.read(info, cap=reader.limits.max_member_bytes)
    if data is None:
        return None, (problem or finding("xdm.corrupt", location),)
    findings = _integrity(entry, data, location)
    if data.startswith(b"PK\x03\x04") and not info.filename.casefold().endswith(".zip"):  # else warned by _screen
        findings += (finding("xdm.nested-zip", printable(info.filename), severity=Severity.WARNING),)
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
        return (finding("xdm.no-hash", location, severity=Severity.WARNING),)
    if hashlib.sha1(data).hexdigest() != entry.hash or entry.size not in (None, len(data)):
        return (finding("xdm.hash-mismatch", location),)
    return ()


