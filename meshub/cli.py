"""`meshub`: run the hub, and talk to a running hub over HTTP (scriptable: --json, exit codes).

Commands: run, submit, status, documents, get, messages, mailbox, notifications, letters, (in
meshub.cli_records) patients, audit, insurer, (in meshub.cli_keys) keys, (in meshub.cli_migrate) migrate.
Client commands find the hub's URL and development credentials in --data-dir (written by
`meshub run`) unless --url / --token (or MESHUB_URL / MESHUB_TOKEN) are given.
Exit codes: 0 success; 1 a submission was rejected or refused (403: its rule is printed), or something asked for is
missing; 2 usage, connection or server errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from config.settings import Settings, settings_from_file
from hub.errors import ConfigError
from meshub import cli_keys, cli_migrate, cli_records, datadir
from meshub.cli_client import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_client_options,
    check,
    client,
    print_rows,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshub", description="MES Hub: health document intake hub")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_document_parsers(sub)
    _add_mail_parsers(sub)
    cli_records.add_parsers(sub)
    cli_keys.add_parsers(sub)
    cli_migrate.add_parsers(sub)
    return parser


def _add_run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run the hub (embedded default: no external server needed)")
    run.add_argument("--data-dir", type=Path, default=datadir.DEFAULT_DATA_DIR)
    run.add_argument("--config", type=Path, help="TOML config file (external RabbitMQ / S3 / PostgreSQL)")
    run.add_argument("--http-host")
    run.add_argument("--http-port", "--port", type=int, help="HTTP API port (default 8080)")
    run.add_argument("--workers", type=int, help="pipeline worker threads in this process")
    run.add_argument("--smtp-port", type=int, help="MSSanté SMTP gateway port (default 2525; 0 turns it off)")
    run.add_argument("--notify-smtp", metavar="HOST:PORT",
                     help="smart host for patient e-mail notifications (default: .eml files in DATA_DIR/outbox/email)")
    run.add_argument("--role", choices=("all", "api", "worker"), default="all",
                     help="api: HTTP + file drop; worker: pipeline workers only; all: both (default)")
    run.add_argument("--log-level", default="INFO")


def _add_document_parsers(sub: Any) -> None:
    submit = sub.add_parser("submit", help="submit CDA files")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--wait", action="store_true", help="wait until each submission is final")
    add_client_options(submit)
    status = sub.add_parser("status", help="show a submission")
    status.add_argument("submission")
    status.add_argument("--wait", action="store_true")
    add_client_options(status)
    docs = sub.add_parser("documents", help="list a patient's documents")
    docs.add_argument("ins")
    for flag in ("category", "class", "type", "from", "to"):
        docs.add_argument(f"--{flag}", dest=f"filter_{flag}")
    docs.add_argument("--include-deprecated", action="store_true")
    add_client_options(docs)
    get = sub.add_parser("get", help="write a document's exact bytes to stdout or -o FILE")
    get.add_argument("document_id")
    get.add_argument("-o", "--output", type=Path)
    add_client_options(get)


def _add_mail_parsers(sub: Any) -> None:
    messages = sub.add_parser("messages", help="list a patient's MSSanté messages")
    messages.add_argument("ins")
    add_client_options(messages)
    notifications = sub.add_parser("notifications", help="what was sent to a patient, on every channel")
    notifications.add_argument("ins")
    add_client_options(notifications)
    letters = sub.add_parser("letters", help="postal batches and their PDF files")
    letters.add_argument("--print", action="store_true", dest="print_now",
                         help="print every due postal notice into a new batch first")
    letters.add_argument("-o", "--output-dir", type=Path, help="also download each batch's PDF into this folder")
    add_client_options(letters)
    mailbox = sub.add_parser("mailbox", help="what the hub delivered to a mailbox address (organisational or other)")
    mailbox.add_argument("address")
    add_client_options(mailbox)


# -- client side -----------------------------------------------------------------------------------------

def _submit_one(c: httpx.Client, path: Path, wait: bool) -> dict[str, Any]:
    try:
        body = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "submission": None, "status": "error", "document_id": None,
                "category": None, "findings": [{"rule": "file.unreadable", "message_en": str(exc)}]}
    response = c.post("/v1/documents", content=body, headers={"Content-Type": "application/xml"})
    if response.status_code == 403:  # refused before anything was stored: the rule, as a finding
        return {"file": str(path), "submission": None, "status": "refused", "document_id": None,
                "category": None, "findings": [_refusal(response)]}
    record = check(response)
    while wait and record["status"] == "pending":
        record = check(c.get(f"/v1/submissions/{record['submission']}", params={"wait": 30}))
    return {"file": str(path), **{k: record.get(k) for k in (
        "submission", "status", "document_id", "category", "findings")}}


def _refusal(response: httpx.Response) -> dict[str, Any]:
    """A 403's rule and messages, shaped like a finding."""
    try:
        err = response.json().get("error", {})
    except ValueError:
        err = {}
    return {"rule": err.get("code", "forbidden"), "location": "request",
            "message_en": err.get("message_en", response.text[:300]), "message_fr": err.get("message_fr", "")}


def _print_submission(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False), flush=True)
        return
    print(f"{row['file']}: {row['status']}" + (f" (submission {row['submission']})" if row.get("submission") else "")
          + (f" document {row['document_id']} category {row['category']}" if row.get("document_id") else ""))
    for finding in row.get("findings") or []:
        print(f"  - [{finding.get('rule')}] {finding.get('location', '')}: {finding.get('message_en')}")


def cmd_submit(args: argparse.Namespace) -> int:
    worst = EXIT_OK
    with client(args, "producer") as c:
        for path in args.files:
            row = _submit_one(c, path, args.wait)
            _print_submission(row, args.json)
            if row["status"] in ("rejected", "refused", "error"):
                worst = EXIT_FAILED
    return worst


def cmd_status(args: argparse.Namespace) -> int:
    with client(args, "producer") as c:
        params = {"wait": 30} if args.wait else {}
        record = check(c.get(f"/v1/submissions/{args.submission}", params=params))
    _print_submission({"file": "-", **record}, args.json)
    return EXIT_FAILED if record["status"] == "rejected" else EXIT_OK


def cmd_documents(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("category", args.filter_category), ("class", args.filter_class),
                                ("type", args.filter_type), ("from", args.filter_from),
                                ("to", args.filter_to)) if v}
    if args.include_deprecated:
        params["include_deprecated"] = "true"
    with client(args, "admin") as c:
        docs = check(c.get(f"/v1/patients/{args.ins}/documents", params=params))["documents"]
    for doc in docs:
        if args.json:
            print(json.dumps(doc, ensure_ascii=False))
        else:
            print(f"{doc['service_date']}  {doc['category']:<9} {doc['class_code']:>3} {doc['type_code']:<12} "
                  f"{doc['status']:<10} {doc['document_id']}  {doc['title']}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        response = c.get(f"/v1/documents/{args.document_id}/content")
        if response.status_code >= 400:
            check(response)
    if args.output:
        args.output.write_bytes(response.content)
    else:
        sys.stdout.buffer.write(response.content)
    return EXIT_OK


def cmd_messages(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        rows = check(c.get(f"/v1/patients/{args.ins}/messages"))["messages"]
    print_rows(rows, args.json, lambda row: (
        f"{row['received_at'][:19]}  {row['direction']:<6} {row['correspondent']:<40} "
        f"[{('read' if row['read_at'] else 'new') + (', closed' if row['closed'] else '')}] "
        f"{row['subject']}  ({row['message_id']})"))
    return EXIT_OK


def cmd_mailbox(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        rows = check(c.get(f"/v1/mailboxes/{args.address}/deliveries"))["deliveries"]
    print_rows(rows, args.json, lambda row: (
        f"{(row['updated_at'] or '')[:19]}  {row['state']:<9} {row['route']:<9} attempts {row['attempts']} "
        f"submission {row['submission_id']}  {row['last_reply']}"))
    return EXIT_OK


def cmd_notifications(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        rows = check(c.get(f"/v1/patients/{args.ins}/notifications"))["notifications"]
    print_rows(rows, args.json, _notice_line)
    return EXIT_OK


def _notice_line(r: dict[str, Any]) -> str:
    read = "  read" if r["read_at"] else ""
    error = f"  {r['last_error']}" if r["last_error"] else ""
    return (f"{r['created_at'][:19]}  {r['channel']:<6}  {r['kind']:<19}  {r['state']:<9}  "
            f"attempts={r['attempts']}{read}{error}")
    return EXIT_OK


def cmd_letters(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        if args.print_now:
            check(c.post("/v1/letters"))
        rows = check(c.get("/v1/letters"))["batches"]
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            for row in rows:
                response = c.get(f"/v1/letters/{row['batch_id']}.pdf")
                if response.status_code >= 400:
                    check(response)
                row["file"] = str(args.output_dir / f"{row['batch_id']}.pdf")
                Path(row["file"]).write_bytes(response.content)
    print_rows(rows, args.json, lambda r: f"{r['batch_id']}  {r['period']}  {r['created_at'][:19]}  "
                                          f"letters={r['letters']}  {r.get('file', r['pdf_key'])}")
    return EXIT_OK


# -- server side -----------------------------------------------------------------------------------------

def load_settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_file(args.config or None, data_dir=args.data_dir)
    overrides = {k: v for k, v in (("http_host", args.http_host), ("http_port", args.http_port),
                                   ("workers", args.workers)) if v is not None}
    if args.smtp_port is not None:
        overrides["mail"] = replace(settings.mail, smtp_port=args.smtp_port)
    if args.notify_smtp:
        host, _, port = args.notify_smtp.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--notify-smtp {args.notify_smtp!r}: expected HOST:PORT")
        overrides["notify"] = replace(settings.notify, smtp_host=host, smtp_port=int(port))
    return replace(settings, **overrides)


def check_listen_ports(settings: Settings, *, serving: bool) -> None:
    """A user-facing port already taken is a one-line ConfigError naming it and the option that changes it
    (exit 2), before anything starts.  Internal child servers (SeaweedFS) choose free ports themselves."""
    if not serving:
        return
    wanted = [("HTTP", settings.http_host, settings.http_port, "--http-port N (or [http] port)")]
    if settings.mail.smtp_port:
        wanted.append(("SMTP", settings.mail.smtp_host, settings.mail.smtp_port,
                       "--smtp-port N (or [smtp] port; 0 turns the gateway off)"))
    for what, host, port, option in wanted:
        if not port_free(host, port):
            raise ConfigError(f"the {what} port {host}:{port} is already in use by another program: "
                              f"choose another with {option}")


def port_free(host: str, port: int) -> bool:
    """`host:port` can be listened on now (SO_REUSEADDR as servers set it: TIME_WAIT is no obstacle)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return True  # a name that does not resolve: the server will say so itself
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _with_dev_credentials(settings: Settings) -> Settings:
    """No credentials configured: the development credentials in the data dir (made on first start)."""
    if settings.credentials:
        return settings
    creds, created = datadir.dev_credentials(settings.data_dir)
    if created:
        print(f"meshub: created development credentials (producer 'dev-producer' and 'admin') in "
              f"{settings.data_dir / 'credentials.json'}", flush=True)
    return replace(settings, credentials=creds)


def cmd_run(args: argparse.Namespace) -> int:
    from meshub.compose import build_hub, serve  # heavy imports only for the server

    # SIGTERM (docker stop, systemd) and SIGINT stop the hub cleanly, even when the shell that started us in
    # the background left SIGINT ignored.  While serving, uvicorn takes both and re-raises them when done.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_on_signal)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args)
    datadir.make_private(settings.data_dir)  # umask 0o077 from here on: every file the hub writes is 0600
    check_listen_ports(settings, serving=args.role != "worker")
    settings = _with_dev_credentials(settings)
    hub = build_hub(settings, workers_in_process=args.role == "all")
    try:
        if args.role in ("all", "worker"):
            hub.start_workers(settings.workers)
        if args.role == "worker":
            print("meshub: worker running; Ctrl-C to stop", flush=True)
            hub.stop.wait()
            return EXIT_OK
        hub.start_filedrop()
        hub.start_sweep()
        hub.start_records()
        hub.start_gateway(log_level=logging.getLogger().level)
        hub.start_imap()

        def ready(url: str) -> None:
            datadir.write_hub_url(settings.data_dir, url)
            print(f"meshub: hub ready at {url} (data dir {settings.data_dir}, file drop "
                  f"{settings.filedrop_dir}/incoming, API docs {url}/docs)", flush=True)

        serve(hub, on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        hub.close()
    return EXIT_OK


COMMANDS = {"run": cmd_run, "submit": cmd_submit, "status": cmd_status, "documents": cmd_documents,
            "get": cmd_get, "patients": cli_records.cmd_patients, "audit": cli_records.cmd_audit,
            "insurer": cli_records.cmd_insurer, "messages": cmd_messages, "mailbox": cmd_mailbox,
            "notifications": cmd_notifications, "letters": cmd_letters, "keys": cli_keys.cmd_keys,
            "migrate": cli_migrate.cmd_migrate}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ConfigError) as exc:
        print(f"meshub: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except httpx.HTTPError as exc:
        print(f"meshub: cannot reach the hub: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
