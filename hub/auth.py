"""Who is calling: bearer tokens checked against configured credentials (pure).

Owns: token -> Credential, by SHA-256 and a constant-time compare.  Tokens are
never stored or logged in clear by the hub (the embedded default keeps its
development tokens in a 0600 file in the data dir so the CLI can find them).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable

from hub.credentials import Credential


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Authenticator:
    """Maps a presented bearer token to its credential, or None: the configured credentials first, then
    (`issued`) those the hub handed out itself, looked up by the token's digest."""

    def __init__(self, credentials: Iterable[Credential],
                 issued: Callable[[str], Credential | None] | None = None) -> None:
        self._credentials = tuple(credentials)
        self._issued = issued

    def identify(self, token: str | None) -> Credential | None:
        if not token:
            return None
        digest = token_sha256(token)
        found = None
        for cred in self._credentials:  # no early exit: same work whichever token matches
            if hmac.compare_digest(cred.token_sha256, digest):
                found = cred
        if found is None and self._issued is not None:
            found = self._issued(digest)
        return found

    def login(self, name: str, secret: str) -> Credential | None:
        """SMTP AUTH: the credential named `name` whose token is `secret`, or None (same work either way)."""
        found = self.identify(secret)
        return found if found is not None and hmac.compare_digest(found.name, name) else None
