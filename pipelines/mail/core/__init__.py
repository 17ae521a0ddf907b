"""The pure core of MSSanté mail: MIME, XDM, relay rules and schedule, trust, reports."""
