"""The patient lifecycle service: roster registration, activation, opposition, new codes, closure, and the
scheduled sweep (automatic opening, minors coming of age, purge at the end of the archive).

One module per part, around the pure rules (pipelines.record.core.lifecycle) and the ports:
service (Lifecycle: record.ports.LifecycleService and the sweep, handing each request to its part),
steps (LifecyclePorts and the steps the parts share: factors, codes, hooks), roster (registration after a
roster import), requests (activation, code requests, new codes, closure, restitution), opposition (with
its PDF receipt stored first) and sweep.  Every change calls the `audit(ins, action, actor)` hook (actor
"kind:id", e.g. "patient:<INS>", "system:meshub").  Logs carry counts, never an INS.
Does not: decide rules (pipelines.record.core.lifecycle), send letters (the announce port), build PDFs or
ZIPs, purge content (the purge hook), or authenticate anyone (the API does).
"""

from pipelines.record.lifecycle.service import Lifecycle
from pipelines.record.lifecycle.steps import LifecyclePorts

__all__ = ["Lifecycle", "LifecyclePorts"]
