"""The issued-token store (hub.ports.IssuedTokens) on every back end (memory, SQLite, PostgreSQL): same
expectations.  Only a token's digest, name, role and INS are kept; a digest is issued once; revocation
is per patient and final for those tokens; a patient activated again gets a new token that works."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.auth import Authenticator, new_token, token_sha256
from hub.credentials import Credential, Role
from hub.errors import PermanentError
from hub.ports import IssuedTokens
from storage.memory.index import MemoryIndex
from storage.memory.tokens import MemoryTokens
from storage.sql.index import SqlIndex
from storage.sql.tokens import SqlTokens
from tests.builders import TEST_INS, with_key
from tests.contract.conftest import beside

OTHER_INS = with_key("1850175123456")


@pytest.fixture
def tokens(index: MemoryIndex | SqlIndex) -> Iterator[IssuedTokens]:
    yield beside(index, MemoryTokens, SqlTokens)


def issued(tokens: IssuedTokens, ins: str = TEST_INS, *, name: str = "patient-1") -> tuple[str, Credential]:
    """A new token for `ins`, issued: (the token, the credential as it is kept)."""
    token = new_token()
    credential = Credential(name=name, role=Role.PATIENT, token_sha256=token_sha256(token), ins=ins)
    tokens.issue(credential)
    return token, credential


def test_an_issued_token_is_found_by_its_digest_and_unknown_digests_are_not(tokens: IssuedTokens) -> None:
    _token, credential = issued(tokens)
    assert tokens.lookup(credential.token_sha256) == credential
    assert tokens.lookup(token_sha256("not issued")) is None
    assert tokens.lookup("") is None


def test_only_the_digest_name_role_and_ins_are_kept(tokens: IssuedTokens) -> None:
    digest = token_sha256(new_token())
    tokens.issue(Credential(name="pro-1", role=Role.PROFESSIONAL, token_sha256=digest, ins=TEST_INS,
                            idnps="810002345678", profession="G15_10", regulator=True,
                            mail_addresses=("dr.a@chu.mssante.fr",)))
    found = tokens.lookup(digest)
    assert found == Credential(name="pro-1", role=Role.PROFESSIONAL, token_sha256=digest, ins=TEST_INS)
    assert found is not None and found.role is Role.PROFESSIONAL


def test_the_hub_authenticates_an_issued_token_after_the_configured_ones(tokens: IssuedTokens) -> None:
    token, credential = issued(tokens)
    auth = Authenticator([], issued=tokens.lookup)
    assert auth.identify(token) == credential
    assert auth.identify(new_token()) is None
    tokens.revoke(TEST_INS)
    assert auth.identify(token) is None


def test_revoke_ends_every_live_token_of_one_patient_and_counts_them(tokens: IssuedTokens) -> None:
    _a, first = issued(tokens)
    _b, second = issued(tokens)
    _c, other = issued(tokens, OTHER_INS, name="patient-2")
    assert tokens.revoke(TEST_INS) == 2
    assert tokens.lookup(first.token_sha256) is None and tokens.lookup(second.token_sha256) is None
    assert tokens.lookup(other.token_sha256) == other  # another patient's token still works
    assert tokens.revoke(TEST_INS) == 0  # already revoked: nothing more to end
    assert tokens.revoke(with_key("2991299123456")) == 0  # no token issued for this INS


def test_a_patient_activated_again_gets_a_new_token_and_the_revoked_one_stays_dead(tokens: IssuedTokens) -> None:
    _old, revoked = issued(tokens)
    assert tokens.revoke(TEST_INS) == 1
    _new, fresh = issued(tokens)
    assert tokens.lookup(fresh.token_sha256) == fresh
    assert tokens.lookup(revoked.token_sha256) is None
    assert tokens.revoke(TEST_INS) == 1  # the new one only


def test_a_digest_is_issued_once_live_or_revoked(tokens: IssuedTokens) -> None:
    _token, credential = issued(tokens)
    impostor = Credential(name="patient-2", role=Role.PATIENT, token_sha256=credential.token_sha256, ins=OTHER_INS)
    with pytest.raises(PermanentError):
        tokens.issue(impostor)
    assert tokens.lookup(credential.token_sha256) == credential  # the first one is unchanged
    tokens.revoke(TEST_INS)
    with pytest.raises(PermanentError):
        tokens.issue(credential)  # revoked is not forgotten: the same digest cannot come back to life
    assert tokens.lookup(credential.token_sha256) is None


def test_concurrent_revocations_end_each_token_once(tokens: IssuedTokens) -> None:
    digests = [issued(tokens, name=f"patient-{n}")[1].token_sha256 for n in range(3)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(lambda _n: tokens.revoke(TEST_INS), range(4)))
    assert sum(counts) == 3
    assert [tokens.lookup(d) for d in digests] == [None, None, None]
