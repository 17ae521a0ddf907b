"""The meshub command: composition root (compose) and command-line interface (cli)."""
