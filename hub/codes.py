"""One-time codes the hub hands to a person (pure): the provisional activation code, a contact's confirmation code.

Owns: the alphabet (Crockford-like: no I, L, O, U), the length (12 symbols, 60 bits) and the printed shape
`XXXX-XXXX-XXXX`, generated from an injected random source (secrets.token_bytes in production).
Does not: keep a code (the record feature keeps its keyed digest) or compare one (core.factors does).
"""

from __future__ import annotations

from collections.abc import Callable

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12          # 60 bits, printed as XXXX-XXXX-XXXX
CODE_GROUP = 4


def new_code(random_bytes: Callable[[int], bytes], length: int = CODE_LENGTH) -> str:
    """A provisional code, `XXXX-XXXX-XXXX`, from `random_bytes` (secrets.token_bytes in production)."""
    raw = random_bytes(length)
    if len(raw) < length:
        raise ValueError("the random source returned too few bytes")
    symbols = "".join(CODE_ALPHABET[b & 31] for b in raw[:length])
    return "-".join(symbols[i:i + CODE_GROUP] for i in range(0, length, CODE_GROUP))
