"""benchmarks.chain's JSON as Markdown tables: rates and latencies per stack and phase, CPU per document of every
process, resident memory, the big documents.

Owns: markdown().  Does not: measure.
"""

from __future__ import annotations

from typing import Any

META = {"docs", "rate_docs", "smtp_share", "concurrency", "cpus", "raw_s3_put", "raw_smtplib_msg_per_s", "wall_s"}


def markdown(results: dict[str, Any]) -> str:
    stacks = {k: v for k, v in results.items() if k not in META and isinstance(v, dict)}
    raw = results.get("raw_s3_put", {})
    lines = [f"Whole chain ({results['docs']} documents flat out, {results['smtp_share']:.0%} by SMTP/XDM; "
             f"{results['cpus']} CPUs). Raw S3 PUT of the same objects: {raw.get('objects_per_s', 0):.0f}/s; "
             f"raw smtplib to the same sink: {results.get('raw_smtplib_msg_per_s', 0):.0f}/s.", "",
             "| stack | phase | done/s | accepted/s | vs raw PUT | indexed p50 / p99 ms | notified p50 / p99 ms "
             "| done / docs |", "|---|---|---|---|---|---|---|---|"]
    for name, r in stacks.items():
        for phase in [p for p in r if p == "flat" or p.startswith("rate_")]:
            s = r[phase]
            vs = f"{s['vs_raw_put']:.0%}" if "vs_raw_put" in s else ""
            lines.append(f"| {name} | {phase} | {s['done_per_s']} | {s['accept_per_s']} | {vs} "
                         f"| {s['indexed_ms']['p50']} / {s['indexed_ms']['p99']} "
                         f"| {s['notified_ms']['p50']} / {s['notified_ms']['p99']} | {s['done']} / {s['docs']} |")
    lines += ["", "CPU ms per document, flat out:", ""]
    cols = sorted({k for r in stacks.values() for k in r.get("cpu_ms_per_doc", {})}, key=_cpu_order)
    lines += ["| stack | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in stacks.items():
        cpu = r.get("cpu_ms_per_doc", {})
        lines.append(f"| {name} | " + " | ".join(str(cpu.get(c, "")) for c in cols) + " |")
    lines += ["", "Resident memory of each hub process (MiB): at rest -> peak (VmHWM) under the flat-out run:", ""]
    for name, r in stacks.items():
        rest, peak = r.get("memory_at_rest_kb", {}), r.get("memory_peak_kb", {})
        cells = [f"{p} {rest[p].get('VmRSS', 0) / 1024:.0f} -> {peak.get(p, {}).get('VmHWM', 0) / 1024:.0f}"
                 for p in rest]
        lines.append(f"- {name}: " + ", ".join(cells))
    for name, r in stacks.items():
        for label, big in r.get("big", {}).items():
            growth = ", ".join(f"{p} {x}x" for p, x in big["rss_growth_x_size"].items())
            lines.append(f"- {name} {label} ({big['bytes'] / 2**20:.1f} MiB, {big['seconds']} s, "
                         f"done: {'+'.join(big['done']) or 'no'}): RSS growth / size: {growth}")
    return "\n".join(lines) + "\n"


def _cpu_order(name: str) -> tuple[int, str]:
    order = ("hub", "api", "gateway", "worker", "hub_total", "seaweedfs", "rabbitmq", "postgres", "load", "sink")
    return next((i for i, p in enumerate(order) if name.startswith(p)), len(order)), name
