"""`meshub patients ...`, `meshub audit ...` and `meshub insurer ...`: profiles, the audit trail and
reimbursement history, over the running hub's HTTP API.

Commands: patients import|activate|request-code|oppose|close|code|profile|export, audit INS [--json],
audit verify (exit 0 only when the whole chain verifies, else 1 and the first broken entry),
insurer send FILE... (a batch of reimbursed acts, or a CNAM-HR CDA document).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshub.cli_client import EXIT_FAILED, EXIT_OK, add_client_options, check, client, print_rows


def add_parsers(sub: Any) -> None:
    """Register the patients, audit and insurer sub-commands on the top-level parser."""
    patients = sub.add_parser("patients", help="patient profiles: roster, activation, opposition, closure, export")
    psub = patients.add_subparsers(dest="patients_command", required=True)
    imp = psub.add_parser("import", help="import a roster CSV (all lines or none)")
    imp.add_argument("roster", type=Path)
    activate = psub.add_parser("activate", help="activate a profile with the letter's code and the Vitale serial")
    activate.add_argument("--code", required=True)
    activate.add_argument("--vitale", required=True, help="serial number of the Vitale card")
    activate.add_argument("--email", default="", help="where the patient wants to be told (optional)")
    activate.add_argument("--phone", default="", help="a phone for codes by SMS (optional)")
    request = psub.add_parser("request-code", help="the holder asks for a code (created or opened profile): "
                                                   "the answer is the same whatever happens")
    request.add_argument("--vitale", required=True, help="serial number of the Vitale card")
    request.add_argument("--channel", choices=("sms", "email", "post"), default="post")
    oppose = psub.add_parser("oppose", help="record an opposition (operator); writes the PDF receipt")
    oppose.add_argument("-o", "--output", type=Path, help="receipt file (default: opposition-<INS>.pdf)")
    psub.add_parser("close", help="close a profile: content unreachable, archived 10 years, then purged")
    psub.add_parser("code", help="send a new provisional code (lost letter, reversing an opposition)")
    psub.add_parser("profile", help="show a profile's state and dates")
    export = psub.add_parser("export", help="restitution: the whole record as a ZIP file")
    export.add_argument("-o", "--output", type=Path, required=True)
    for name, p in psub.choices.items():
        if name != "import":
            p.add_argument("ins")
        add_client_options(p)
    audit = sub.add_parser("audit", help="a patient's audit trail, or `audit verify` for the whole hash chain")
    audit.add_argument("target", metavar="INS|verify")
    add_client_options(audit)
    insurer = sub.add_parser("insurer", help="send reimbursement history (acts batch or CNAM-HR CDA)")
    isub = insurer.add_subparsers(dest="insurer_command", required=True)
    send = isub.add_parser("send", help="send batch files (.txt acts batch, .xml CNAM-HR document)")
    send.add_argument("files", nargs="+", type=Path)
    add_client_options(send)


def cmd_patients(args: argparse.Namespace) -> int:
    return PATIENT_COMMANDS[args.patients_command](args)


def _import(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        result = check(c.post("/v1/patients/import", content=args.roster.read_bytes(),
                              headers={"Content-Type": "text/csv"}))
    print(json.dumps(result) if args.json else f"imported {result['imported']} patient(s): {result['by_status']}")
    return EXIT_OK


def _activate(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        profile = check(c.post("/v1/activation", json={"ins": args.ins, "code": args.code,
                                                       "vitale_serial": args.vitale, "email": args.email,
                                                       "phone": args.phone}))
    return _print_profile(profile, args.json)


def _request_code(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        answer = check(c.post("/v1/activation/code-request", json={"ins": args.ins, "vitale_serial": args.vitale,
                                                                   "channel": args.channel}))
    print(json.dumps(answer, ensure_ascii=False) if args.json else answer["message_en"])
    return EXIT_OK


def _oppose(args: argparse.Namespace) -> int:
    with client(args, "admin") as c:
        response = c.post(f"/v1/patients/{args.ins}/oppose")
        if response.status_code >= 400:
            check(response)
    target = args.output or Path(f"opposition-{args.ins}.pdf")
    target.write_bytes(response.content)
    print(json.dumps({"status": "opposed", "receipt": str(target)}) if args.json
          else f"opposed; receipt written to {target}")
    return EXIT_OK


def _simple(method: str, path: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with client(args, "admin") as c:
            profile = check(c.request(method, path.format(ins=args.ins)))
        return _print_profile(profile, args.json)
    return run


def _export(args: argparse.Namespace) -> int:
    with client(args, "admin") as c, c.stream("GET", f"/v1/patients/{args.ins}/export") as response:
        if response.status_code >= 400:
            response.read()
            check(response)
        size = 0
        with args.output.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
                size += len(chunk)
    print(json.dumps({"file": str(args.output), "bytes": size}) if args.json
          else f"wrote {size} bytes to {args.output}")
    return EXIT_OK


def _print_profile(profile: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(profile, ensure_ascii=False))
    else:
        dates = "  ".join(f"{k}={v[:19]}" for k, v in profile.items() if k.endswith("_at") and v)
        print(f"{profile['status']}  {dates}")
    return EXIT_OK


PATIENT_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "import": _import, "activate": _activate, "request-code": _request_code, "oppose": _oppose,
    "close": _simple("POST", "/v1/patients/{ins}/close"), "code": _simple("POST", "/v1/patients/{ins}/code"),
    "profile": _simple("GET", "/v1/patients/{ins}/profile"), "export": _export}


def cmd_audit(args: argparse.Namespace) -> int:
    """`audit INS`: the patient's trail; `audit verify`: the whole chain (exit 1 when broken)."""
    with client(args, "admin") as c:
        if args.target == "verify":
            result = check(c.get("/v1/audit/verify"))
            print(json.dumps(result) if args.json else result["message"])
            return EXIT_OK if result["ok"] else EXIT_FAILED
        rows, after = [], 0
        while True:
            page = check(c.get(f"/v1/patients/{args.target}/audit", params={"after": after, "limit": 1000}))
            rows += page["entries"]
            if len(page["entries"]) < 1000:
                break
            after = page["entries"][-1]["seq"]
    print_rows(rows, args.json, _audit_line)
    return EXIT_OK


def _audit_line(e: dict[str, Any]) -> str:
    """One entry; a redacted one (a document hidden from the viewer) shows only its place in time."""
    if e.get("redacted") and "actor_kind" not in e:
        return f"#{e['seq']:<6} {e['at'][:19]}  {'(redacted)':<14} {'':<15} {e['action']:<14}".rstrip()
    detail = " ".join(f"{k}={v}" for k, v in sorted((e.get("detail") or {}).items()))
    return (f"#{e['seq']:<6} {e['at'][:19]}  {e['actor_kind']:<14} {e['actor_id']:<15} {e['action']:<14} "
            f"{e['outcome']:<8} {e['target']}  {detail}").rstrip()


def cmd_insurer(args: argparse.Namespace) -> int:
    failed = False
    with client(args, "insurer") as c:
        for path in args.files:
            media = "application/xml" if path.suffix.lower() == ".xml" else "text/plain"
            response = c.post("/v1/insurer/batches", content=path.read_bytes(), headers={"Content-Type": media})
            row = {"file": str(path), "http": response.status_code, **(response.json() if response.content else {})}
            failed |= response.status_code >= 400
            print(json.dumps(row, ensure_ascii=False) if args.json else f"{path}: {response.status_code} "
                  f"{json.dumps({k: v for k, v in row.items() if k not in ('file', 'http')}, ensure_ascii=False)}")
    return EXIT_FAILED if failed else EXIT_OK
