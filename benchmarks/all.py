"""Every benchmark from one command, one after the other (never two at once: they would measure each other),
and one Markdown report: a table of what ran, how long it took and its lead figure, then each one's output.

Owns: BENCHMARKS (the command of each, at default and at --quick sizes) and the report.
Does not: measure anything itself; skips `smtp_gateway` with a line saying why when Postfix's smtp-source is
not installed.

    .venv/bin/python -m benchmarks.all [--quick] [--only chain,e2e] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: name -> (arguments at default sizes, arguments with --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "chain": (["--worker-procs", "1,2,3"], ["--docs", "100", "--rate-docs", "40", "--worker-procs", "2"]),
    "e2e": ([], ["--docs", "100"]),
    "notifications": ([], ["--events", "100"]),
    "notifications_production": (["--stack", "production"], ["--stack", "production", "--events", "100"]),
    "records": ([], ["--entries", "100", "--patients", "10", "--calls", "50"]),
    "records_sqlite": (["--sqlite"], ["--sqlite", "--entries", "100", "--patients", "10", "--calls", "50"]),
    "s3_raw": ([], ["--count", "200"]),
    "smtp_gateway": ([], ["--messages", "200"]),
}
MODULES = {"notifications_production": "notifications", "records_sqlite": "records"}


def lead_figure(name: str, out: str) -> str:
    """The one number to read first, when the output is JSON we know."""
    try:
        data: dict[str, Any] = json.loads(out)
    except ValueError:
        return ""
    if name == "e2e":
        return ", ".join(f"{s} {data[s]['indexed_per_s']:.0f} docs/s" for s in ("production", "embedded") if s in data)
    if name.startswith("notifications"):
        return f"{data['notifications_per_s']}/s (raw smtplib {data['raw_smtplib_msg_per_s']}/s)"
    return ""


def run_one(name: str, args: list[str], tmp: Path) -> tuple[str, float, str, str]:
    """(status, seconds, output, lead figure) of one benchmark."""
    if name == "smtp_gateway" and shutil.which("smtp-source") is None:
        return "skipped: Postfix's smtp-source not installed (Debian package postfix)", 0.0, "", ""
    extra = ["--markdown", str(tmp / "chain.md")] if name == "chain" else []
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{MODULES.get(name, name)}", *args, *extra],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - started
    if done.returncode:
        return f"failed (exit {done.returncode})", seconds, done.stdout + done.stderr[-3000:], ""
    if name == "chain":
        return "ok", seconds, (tmp / "chain.md").read_text(), "see the table below"
    return "ok", seconds, done.stdout, lead_figure(name, done.stdout)


def report(rows: list[tuple[str, list[str], str, float, str, str]]) -> str:
    lines = ["# Benchmark results", "", "| benchmark | command | status | seconds | lead figure |",
             "|---|---|---|---|---|"]
    for name, args, status, seconds, _, lead in rows:
        command = " ".join(["python -m", f"benchmarks.{MODULES.get(name, name)}", *args])
        lines.append(f"| {name} | `{command}` | {status} | {seconds:.0f} | {lead} |")
    for name, _, status, _, out, _ in rows:
        if out:
            body = out if name == "chain" and status == "ok" else f"```\n{out.rstrip()}\n```"
            lines += ["", f"## {name}", "", body]
    return "\n".join(lines) + "\n"


def main(progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts: checks that everything runs")
    parser.add_argument("--only", help="comma-separated names among: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", help="write the Markdown here (default: stdout)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="allbench-") as tmp:
        for name in names:
            argv = BENCHMARKS[name][1 if args.quick else 0]
            progress(f"{name}: {' '.join(argv)}")
            status, seconds, out, lead = run_one(name, argv, Path(tmp))
            progress(f"{name}: {status} in {seconds:.0f} s")
            rows.append((name, argv, status, seconds, out, lead))
    text = report(rows)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
