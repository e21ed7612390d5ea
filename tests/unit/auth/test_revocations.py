"""Revocation records: signed by the issuer, kept on disk, honoured after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peerllm.auth import Authority, Reason, Role, issuer_id_of
from peerllm.auth.revocations import RevocationBook, make_revocation
from peerllm.config import AuthConfig
from peerllm.errors import AuthError, IdentityError

NOW = 1_800_000_000


def test_a_revocation_is_honoured_after_a_restart(tmp_path: Path) -> None:
    a = Authority(data_dir=tmp_path, config=AuthConfig(required=True))
    token, claims = a.create_token(subject="bob", roles=[Role.USER], ttl_s=600, now=NOW)
    assert a.authenticate(f"Bearer {token}", now=NOW).subject == "bob"
    rev = a.revoke(claims.id, now=NOW)
    assert rev.expires_at == claims.expires_at  # lives exactly as long as the token
    again = Authority(data_dir=tmp_path, config=AuthConfig(required=True))
    assert again.issuer_id == a.issuer_id  # the issuer key is kept, not regenerated
    again.revocations.rescan(now=NOW)
    with pytest.raises(AuthError) as info:
        again.authenticate(f"Bearer {token}", now=NOW)
    assert info.value.reason == Reason.REVOKED and info.value.status == 401
    assert token not in str(info.value)


def test_a_record_dropped_in_the_folder_is_picked_up(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    book = RevocationBook(tmp_path, trusted={issuer_id_of(key)})
    (tmp_path / "x.jwt").write_text(make_revocation(key, "abc", now=NOW, until=NOW + 60))
    (tmp_path / "junk.jwt").write_text("garbage")
    added = book.rescan(now=NOW)
    assert [r.token_id for r in added] == ["abc"]
    assert book.is_revoked(issuer_id_of(key), "abc")
    assert book.rescan(now=NOW) == []  # seen files are not read again


def test_records_of_untrusted_or_forging_issuers_are_refused(tmp_path: Path) -> None:
    mine, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = RevocationBook(tmp_path, trusted={issuer_id_of(mine)})
    with pytest.raises(AuthError) as info:
        book.add(make_revocation(stranger, "abc", now=NOW, until=NOW + 60), now=NOW)
    assert info.value.reason == Reason.UNTRUSTED_ISSUER
    record = make_revocation(mine, "abc", now=NOW, until=NOW + 60)
    head, body, _ = record.split(".")
    theirs = make_revocation(stranger, "abc", now=NOW, until=NOW + 60)
    forged = f"{head}.{body}.{theirs.split('.')[2]}"
    with pytest.raises(AuthError) as info:
        book.add(forged, now=NOW)
    assert info.value.reason == Reason.FORGED
    assert book.add(record, now=NOW) is not None
    assert book.add(record, now=NOW) is None  # known already
    book.prune(NOW + 61)
    assert len(book) == 0 and not list(tmp_path.iterdir())


def test_a_corrupt_issuer_key_stops_the_node_rather_than_being_replaced(tmp_path: Path
                                                                       ) -> None:
    (tmp_path / "issuer.key").write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
    with pytest.raises(IdentityError, match="every token it issued stops working"):
        Authority(data_dir=tmp_path, config=AuthConfig())
    assert "truncated" in (tmp_path / "issuer.key").read_text()


def test_the_issuer_key_is_private(tmp_path: Path) -> None:
    Authority(data_dir=tmp_path, config=AuthConfig())
    assert (tmp_path / "issuer.key").stat().st_mode & 0o777 == 0o600


def test_anonymous_only_where_auth_is_not_required(tmp_path: Path) -> None:
    open_ = Authority(data_dir=tmp_path, config=AuthConfig())
    assert open_.authenticate("Bearer sk-dummy", now=NOW).claims is None  # openai clients
    assert open_.authenticate(None, now=NOW).subject == "anonymous"
    closed = Authority(data_dir=tmp_path, config=AuthConfig(required=True))
    for header, why in ((None, Reason.MISSING), ("Bearer sk-dummy", Reason.MALFORMED),
                        ("Basic dXNlcg==", Reason.MALFORMED)):
        with pytest.raises(AuthError) as info:
            closed.authenticate(header, now=NOW)
        assert info.value.reason == why
