"""The DHT's record validator: a forged or invalid record is refused and audited."""

from __future__ import annotations

import time

import pytest

from peerllm.identity import Identity
from peerllm.p2p.dht import RecordValidator
from peerllm.security_events import AuditEvent
from peerllm.testing import make_identity
from peerllm.wire.records import NodeRecord, node_record_key, seal_record
from tests.helpers import RecordingAudit

ALICE = make_identity("alice", seed=1)
MALLORY = make_identity("mallory", seed=2)


def node_record(*, claims: str, signer: Identity) -> bytes:
    body = NodeRecord(peer_id=claims, node_id=signer.node_id, name=signer.name,
                      addrs=("/ip4/127.0.0.1/tcp/1",), models=())
    return seal_record("node", body, seq=1, expires_at=time.time() + 60,
                       public_key=signer.public_key, sign=signer.sign)


def test_a_valid_record_passes_without_a_line() -> None:
    audit = RecordingAudit()
    RecordValidator(audit).validate(node_record_key(ALICE.peer_id),
                                    node_record(claims=ALICE.peer_id, signer=ALICE))
    assert audit.lines == []


def test_a_forged_record_is_refused_and_audited_with_its_key() -> None:
    audit = RecordingAudit()
    key = node_record_key(ALICE.peer_id)
    forged = node_record(claims=ALICE.peer_id, signer=MALLORY)  # Mallory claims Alice
    with pytest.raises(ValueError, match="invalid peerllm record"):
        RecordValidator(audit).validate(key, forged)
    [line] = audit.of(AuditEvent.INVALID_RECORD)
    assert (line["kind"], line["peer"], line["key"]) == ("dht", None, key)
    assert "signed by" in str(line["reason"])
