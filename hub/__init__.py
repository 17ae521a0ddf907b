"""The shared kernel: what travels between steps, the ports, and how failures are named."""
