"""Typed settings of a hub process, built once from a mapping (parsed TOML) and CLI overrides.

Owns: every knob a process reads, with its default, and the embedded-default
layout of a data directory.  Does not: read os.environ or files at import
time; the composition root (meshub.compose) reads the config file and passes
the mapping in.  A missing or wrong key fails at start with the key's name.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hub.credentials import Credential, Role
from hub.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """S3 object store; `endpoint=None` means: start SeaweedFS as a child process (embedded)."""

    endpoint: str | None = None
    access_key: str = ""
    secret_key: str = ""
    bucket: str = "meshub"
    secure: bool = False
    fsync: bool = True
    embedded_port: int = 0  # the embedded SeaweedFS S3 port; 0: chosen free at first start, kept in s3/ports.json
    kek_file: str = ""  # key file of the KEKs (storage.keyring); MESHUB_KEK / MESHUB_KEK_FILE take precedence


@dataclass(frozen=True, slots=True)
class ImapSource:
    """A mailbox the hub polls (IMAP intake): each new message is taken in as mail for `recipient`."""

    host: str
    user: str
    password: str = field(repr=False, default="")
    port: int = 993
    tls: bool = True
    mailbox: str = "INBOX"
    poll_s: float = 30.0
    recipient: str = ""  # default: the user name (an address)
    producer: str = "imap"


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """[mime] and [xdm]: caps on one mail and on one IHE_XDM.ZIP, as keyword arguments of
    pipelines.mail.core.mime.MailLimits and pipelines.mail.core.xdm.XdmLimits; an unset key keeps their default
    (25 MiB, 64 parts, depth 8; 100 members, 64 MiB a member, 128 MiB expanded, ratio 100)."""

    mime: Mapping[str, int] = field(default_factory=dict)
    xdm: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MailSettings:
    """The MSSanté side: SMTP gateway, local org mailboxes (LMTP to Dovecot), outbound next hops.

    `smtp_port = 0` turns the gateway off.  TLS files default to a development certificate made in
    the data dir on first start.  `rules` and `next_hops` are the raw [mss] table and [[relay.hops]]
    array, read by pipelines.mail.core.mss and pipelines.mail.core.relay_schedule (each names a bad key)."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    hostname: str = "mes-hub.localhost"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    max_message_bytes: int = 25 * MIB
    spool_max_backlog_bytes: int = 1024 * MIB  # undrained SMTP spool past which new mail gets 452 4.3.1
    smtp_processes: int = 2  # gateway processes sharing the port (SO_REUSEPORT), each with its own spool
    lmtp_host: str = ""
    lmtp_port: int = 24
    rules: Mapping[str, Any] = field(default_factory=dict)
    next_hops: tuple[Mapping[str, Any], ...] = ()
    retry: Mapping[str, float] = field(default_factory=dict)  # RelaySchedule fields: initial_s, lifetime_s...
    relay_cafile: str | None = None  # CA bundle for next hops' certificates (IGC-Santé); None: the system store
    relay_timeout_s: float = 60.0
    imap: tuple[ImapSource, ...] = ()
    limits: ParseLimits = field(default_factory=ParseLimits)  # [mime], [xdm]


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """[notify]: where patient notifications go.  No smart host (`smtp_host` empty): each e-mail is a
    .eml file in `<data dir>/outbox/email`; no SMS provider: a .json file in `<data dir>/outbox/sms`."""

    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    sender: str = "ne-pas-repondre@monespacesante.localhost"
    sms_url: str = ""
    sms_api_key: str = ""
    link: str = "https://www.monespacesante.fr"
    digest_window_s: int = 3600
    letters_every_s: float = 3600.0  # how often due postal notices are printed into a batch
    workers: int = 2
    retry_base_s: float = 30.0  # a channel down: first retry after 15-30 s, doubling...
    retry_max_delay_s: float = 3600.0  # ...up to an hour between tries...
    retry_attempts: int = 60  # ...then the notice fails (and falls back): about two days
    push_allow_http: bool = False  # TESTS ONLY: push endpoints may be http:// (production: https only)
    push_allow_private: bool = False  # TESTS ONLY: push endpoints may resolve to loopback/private addresses


def _flat(table: Mapping[str, Any], cls: Any, where: str) -> Any:
    """A section of plain values into dataclass `cls`: each key typed like its default; unknown keys fail."""
    known = tuple(cls.__dataclass_fields__)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"config key {where}.{unknown[0]} is unknown (known: {', '.join(known)})")
    defaults = cls()
    values: dict[str, Any] = {}
    for key in table:
        default = getattr(defaults, key)
        kind: type | tuple[type, ...] = (int, float) if isinstance(default, float) else type(default)
        values[key] = _typed(table, key, kind, default, where)
    return cls(**values)


def _notify(table: Mapping[str, Any]) -> NotifySettings:
    notify: NotifySettings = _flat(table, NotifySettings, "notify")
    if (notify.digest_window_s < 0 or notify.letters_every_s <= 0 or notify.workers < 1 or notify.retry_base_s <= 0
            or notify.retry_max_delay_s < notify.retry_base_s or notify.retry_attempts < 1):
        raise ConfigError("config [notify]: digest_window_s >= 0, letters_every_s > 0, workers >= 1, "
                          "0 < retry_base_s <= retry_max_delay_s, retry_attempts >= 1")
    return notify


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """[records]: the habilitation matrix, and the scheduler of the lifecycle and reimbursement timers."""

    habilitations: str = ""  # the official matrix (a saved JSON:API export); "": config/habilitations.toml
    sweep_every_s: float = 60.0  # automatic opening, majority, purge, reimbursement release
    insurer_drop_dir: str = ""  # a folder the insurer drops batch files into ("": HTTP only)
    insurer: str = "assurance-maladie"  # the producer named on reimbursement-history submissions


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one hub process needs, for any role (api, worker, filedrop, or all)."""

    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_body_bytes: int = 20 * MIB
    bus_url: str = ""
    bus_prefix: str = "meshub"
    index_url: str = ""
    store: StoreSettings = field(default_factory=StoreSettings)
    workers: int = 4
    background_nice: int = 10  # nice value of pipeline, outbound and spool-drain threads (0: as the rest)
    filedrop_dir: Path | None = None
    filedrop_producer: str = "filedrop"
    credentials: tuple[Credential, ...] = ()
    key_secret: bytes = b""
    mail: MailSettings = field(default_factory=MailSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    records: RecordSettings = field(default_factory=RecordSettings)

    @property
    def embedded_store(self) -> bool:
        return self.store.endpoint is None


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section [{name}] must be a table")
    return value


def _typed(section: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = section.get(key, default)
    if value is not None and not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise ConfigError(f"config key {where}.{key} must be {expected}, got {type(value).__name__}")
    return value


def _credentials(rows: Any) -> tuple[Credential, ...]:
    if not isinstance(rows, list):
        raise ConfigError("config key [[credentials]] must be an array of tables")
    out = []
    for i, row in enumerate(rows):
        try:
            cred = Credential(name=str(row["name"]), role=_role(row["role"], f"config credentials[{i}]"),
                              token_sha256=str(row["token_sha256"]),
                              ins=str(row.get("ins", "")), idnps=str(row.get("idnps", "")),
                              profession=str(row.get("profession", "")), specialty=str(row.get("specialty", "")),
                              regulator=bool(row.get("regulator", False)),
                              mail_addresses=mail_addresses(row.get("mail_addresses", ()), f"config credentials[{i}]"))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"config credentials[{i}] needs name, role and token_sha256") from exc
        _check_credential(cred, f"config credentials[{i}]")
        out.append(cred)
    return tuple(out)


_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_MAIL_ADDRESS = re.compile(rf"(?:[^@\s]+@)?(?:\*\.)?{_LABEL}(?:\.{_LABEL})+")


def mail_addresses(value: Any, where: str) -> tuple[str, ...]:
    """A credential's `mail_addresses`: a list of "name@domain", "domain" or "*.domain", lower-cased."""
    if isinstance(value, str) or not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.mail_addresses must be a list of addresses or domains")
    found = tuple(v.strip().lower() for v in value)
    bad = next((v for v in found if not _MAIL_ADDRESS.fullmatch(v)), None)
    if bad is not None:
        raise ConfigError(f"{where}.mail_addresses: {bad!r} is neither an address nor a domain")
    return found


def _role(value: Any, where: str) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise ConfigError(f"{where}.role must be one of {', '.join(Role)}") from None


def _check_credential(cred: Credential, where: str) -> None:
    if cred.role is Role.PATIENT and not cred.ins:
        raise ConfigError(f"{where} has role 'patient': it needs the patient's 'ins'")
    if cred.role is Role.PROFESSIONAL and not (re.fullmatch(r"8\d{11}", cred.idnps) and cred.profession):
        raise ConfigError(f"{where} has role 'professional': it needs 'idnps' (8 + the 11 RPPS digits) and "
                          "'profession' (JDV_J01 code such as G15_10)")


def _imap_sources(rows: Any) -> tuple[ImapSource, ...]:
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise ConfigError("config key [[imap]] must be an array of tables")
    out = []
    for i, row in enumerate(rows):
        where = f"imap[{i}]"
        unknown = sorted(set(row) - set(ImapSource.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"config key {where}.{unknown[0]} is unknown")
        if not row.get("host") or not row.get("user"):
            raise ConfigError(f"config {where} needs host and user")
        tls = _typed(row, "tls", bool, True, where)
        out.append(ImapSource(
            host=_typed(row, "host", str, "", where), user=_typed(row, "user", str, "", where),
            password=_typed(row, "password", str, "", where), port=_typed(row, "port", int, 993 if tls else 143, where),
            tls=tls, mailbox=_typed(row, "mailbox", str, "INBOX", where),
            poll_s=float(_typed(row, "poll_s", (int, float), 30.0, where)),
            recipient=_typed(row, "recipient", str, "", where) or row["user"],
            producer=_typed(row, "producer", str, "imap", where)))
    return tuple(out)


def _mail(smtp: Mapping[str, Any], lmtp: Mapping[str, Any], mss: Mapping[str, Any],
          relay: Mapping[str, Any], imap: Any) -> MailSettings:
    cert, key = _typed(smtp, "tls_cert", str, None, "smtp"), _typed(smtp, "tls_key", str, None, "smtp")
    if bool(cert) != bool(key):
        raise ConfigError("config keys smtp.tls_cert and smtp.tls_key go together")
    hops = relay.get("hops", [])
    if not isinstance(hops, list) or not all(isinstance(h, Mapping) for h in hops):
        raise ConfigError("config key [[relay.hops]] must be an array of tables")
    return MailSettings(
        smtp_host=_typed(smtp, "host", str, "127.0.0.1", "smtp"), smtp_port=_typed(smtp, "port", int, 2525, "smtp"),
        hostname=_typed(smtp, "hostname", str, "mes-hub.localhost", "smtp"),
        tls_cert=Path(cert) if cert else None, tls_key=Path(key) if key else None,
        require_tls=_typed(smtp, "require_tls", bool, False, "smtp"),
        max_message_bytes=_typed(smtp, "max_message_bytes", int, 25 * MIB, "smtp"),
        spool_max_backlog_bytes=_typed(smtp, "spool_max_backlog_bytes", int, 1024 * MIB, "smtp"),
        smtp_processes=_positive(smtp, "processes", 2, "smtp"),
        lmtp_host=_typed(lmtp, "host", str, "", "lmtp"), lmtp_port=_typed(lmtp, "port", int, 24, "lmtp"),
        rules=dict(mss), next_hops=tuple(dict(h) for h in hops), retry=_retry(relay),
        relay_cafile=_typed(relay, "cafile", str, None, "relay"),
        relay_timeout_s=float(_typed(relay, "timeout_s", (int, float), 60.0, "relay")),
        imap=_imap_sources(imap))


def _positive(section: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = _typed(section, key, int, default, where)
    if isinstance(value, bool) or value < 1:
        raise ConfigError(f"config key {where}.{key} must be a whole number of at least 1, got {value!r}")
    return int(value)


def _nice(workers: Mapping[str, Any]) -> int:
    """[workers] nice: 0 to 19.  Filing runs behind answering: SMTP sessions and HTTP requests first."""
    value = _typed(workers, "nice", int, 10, "workers")
    if isinstance(value, bool) or not 0 <= value <= 19:
        raise ConfigError(f"config key workers.nice must be between 0 and 19, got {value!r}")
    return int(value)


_RETRY_KEYS = ("initial_s", "factor", "max_delay_s", "lifetime_s", "delay_warning_s")


def _retry(relay: Mapping[str, Any]) -> dict[str, float]:
    """[relay.retry] initial_s, factor, max_delay_s, lifetime_s, delay_warning_s (numbers, all optional)."""
    table = relay.get("retry", {})
    if not isinstance(table, Mapping):
        raise ConfigError("config section [relay.retry] must be a table")
    unknown = sorted(set(table) - set(_RETRY_KEYS))
    if unknown:
        raise ConfigError(f"config key relay.retry.{unknown[0]} is unknown (known: {', '.join(_RETRY_KEYS)})")
    return {key: float(_typed(table, key, (int, float), 0, "relay.retry")) for key in table}


def _records(table: Mapping[str, Any]) -> RecordSettings:
    records: RecordSettings = _flat(table, RecordSettings, "records")
    if records.sweep_every_s <= 0:
        raise ConfigError("config key records.sweep_every_s must be > 0")
    return records


_MIME_KEYS = ("max_bytes", "max_parts", "max_depth", "max_findings")
_XDM_KEYS = ("max_members", "max_member_bytes", "max_total_bytes", "max_metadata_bytes", "max_ratio",
             "ratio_floor_bytes")


def _parse_limits(data: Mapping[str, Any]) -> ParseLimits:
    """[mime] and [xdm]: positive integers, all optional; an unknown key is an error that lists the known ones."""
    return ParseLimits(mime=_limits(_section(data, "mime"), _MIME_KEYS, "mime"),
                       xdm=_limits(_section(data, "xdm"), _XDM_KEYS, "xdm"))


def _limits(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> dict[str, int]:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"config key {where}.{unknown[0]} is unknown (known: {', '.join(known)})")
    out: dict[str, int] = {}
    for key in table:
        value = _typed(table, key, int, 0, where)
        if isinstance(value, bool) or value <= 0:
            raise ConfigError(f"config key {where}.{key} must be a positive int, got {value!r}")
        out[key] = value
    return out


def settings_from_mapping(data: Mapping[str, Any], *, data_dir: Path) -> Settings:
    """Build Settings from a parsed config file; every unset value takes the embedded default."""
    http, bus, index = _section(data, "http"), _section(data, "bus"), _section(data, "index")
    s3, workers, drop = _section(data, "s3"), _section(data, "workers"), _section(data, "filedrop")
    store = StoreSettings(
        endpoint=_typed(s3, "endpoint", str, None, "s3"),
        access_key=_typed(s3, "access_key", str, "", "s3"), secret_key=_typed(s3, "secret_key", str, "", "s3"),
        bucket=_typed(s3, "bucket", str, "meshub", "s3"), secure=_typed(s3, "secure", bool, False, "s3"),
        fsync=_typed(s3, "fsync", bool, True, "s3"), embedded_port=_typed(s3, "embedded_port", int, 0, "s3"))
    store = replace(store, kek_file=_typed(s3, "kek_file", str, "", "s3"))
    drop_dir = _typed(drop, "dir", str, None, "filedrop")
    return Settings(
        data_dir=data_dir,
        http_host=_typed(http, "host", str, "127.0.0.1", "http"), http_port=_typed(http, "port", int, 8080, "http"),
        max_body_bytes=_typed(http, "max_body_bytes", int, 20 * MIB, "http"),
        bus_url=_typed(bus, "url", str, "", "bus") or f"sqlite:///{data_dir.resolve() / 'bus.sqlite3'}",
        bus_prefix=_typed(bus, "prefix", str, "meshub", "bus"),
        index_url=_typed(index, "url", str, "", "index") or f"sqlite:///{data_dir.resolve() / 'index.sqlite3'}",
        store=store, workers=_typed(workers, "count", int, 4, "workers"),
        background_nice=_nice(workers),
        filedrop_dir=Path(drop_dir) if drop_dir else data_dir / "drop",
        filedrop_producer=_typed(drop, "producer", str, "filedrop", "filedrop"),
        credentials=_credentials(data.get("credentials", [])),
        key_secret=str(_typed(s3, "key_secret", str, "", "s3")).encode(),
        mail=replace(_mail(_section(data, "smtp"), _section(data, "lmtp"), _section(data, "mss"),
                           _section(data, "relay"), data.get("imap", [])), limits=_parse_limits(data)),
        notify=_notify(_section(data, "notify")), records=_records(_section(data, "records")))


def settings_from_file(path: Path | None, *, data_dir: Path) -> Settings:
    """Settings from the TOML file at `path` (None: the embedded default) for `data_dir`; a file that cannot
    be read or parsed is a ConfigError naming it."""
    mapping: dict[str, Any] = {}
    if path is not None:
        try:
            mapping = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return settings_from_mapping(mapping, data_dir=data_dir.resolve())
