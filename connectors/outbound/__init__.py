"""Outbound connectors: hand messages to the next hop and report, per recipient, what it answered."""
