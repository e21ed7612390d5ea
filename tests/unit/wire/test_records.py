"""Signed DHT records: keys, sealing, the validator's refusals and newest-wins selection."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RecordError
from peerllm.wire import records as rec
from peerllm.wire.framing import pack, unpack_map
from tests.helpers import ALICE, MALLORY, Signer, peer_id_of, verify

NOW = 1_700_000_000.0
TTL = 3600.0




def node_body(signer: Signer = ALICE) -> rec.NodeRecord:
    return rec.NodeRecord(
        peer_id=signer.peer_id,
        node_id="0b3f6e4c-6a55-4b64-9d36-0d1c2b1f7a10",
        name="gpu-box",
        addrs=("/ip4/10.0.0.2/tcp/4001",),
        models=("gemma3-270m-q4_k_m",),
    )


def claim_body(signer: Signer = ALICE, name: str = "gpu-box") -> rec.NameClaim:
    return rec.NameClaim(name=name, peer_id=signer.peer_id, node_id="node-1")


def seal(
    kind: rec.Kind,
    body: rec.NodeRecord | rec.NameClaim,
    signer: Signer = ALICE,
    *,
    seq: int = 1,
    expires_at: float = NOW + TTL,
) -> bytes:
    return rec.seal_record(
        kind, body, seq=seq, expires_at=expires_at, public_key=signer.public_key, sign=signer.sign
    )


def open_(key: str, value: bytes, now: float = NOW) -> rec.SignedRecord:
    return rec.open_record(key, value, now=now, verify=verify, peer_id_of=peer_id_of)


def forge(fields: dict[str, Any], body_map: Any, signer: Signer = ALICE) -> bytes:
    """Build a correctly signed value by hand, bypassing seal_record's own checks."""
    body = pack(body_map)
    m: dict[str, Any] = {
        "k": "name",
        "v": 1,
        "seq": 1,
        "exp": NOW + TTL,
        "pk": signer.public_key,
        "body": body,
    }
    m.update(fields)
    try:
        payload = rec.record_signing_payload(m["k"], m["seq"], m["exp"], m["pk"], body)
    except (TypeError, ValueError):  # a deliberately mistyped field: sign anything
        payload = b""
    m["sig"] = signer.sign(payload)
    return pack(m)


# ---------------------------------------------------------------- keys


@settings(deadline=None)
@given(text=st.text(max_size=2000))
def test_keys_fit_in_50_bytes(text: str) -> None:
    for key in (rec.node_record_key(text), rec.name_record_key(text)):
        assert len(key.encode()) <= rec.MAX_KEY_BYTES
        assert key.startswith(f"/{rec.NAMESPACE}/")


def test_key_formats() -> None:
    peer = "12D3KooW" + "x" * 200
    assert (
        rec.node_record_key(peer) == "/peerllm/n/" + hashlib.sha256(peer.encode()).hexdigest()[:32]
    )
    assert len(rec.node_record_key(peer)) == 43
    assert rec.name_record_key("gpu-box") == (
        "/peerllm/name/" + hashlib.sha256(b"gpu-box").hexdigest()[:32]
    )
    assert len(rec.name_record_key("x" * 63)) == 46


def test_digest_provider_keys_are_their_own_namespace() -> None:
    digest = "sha256:" + "ab" * 32
    key = rec.digest_provider_key(digest)
    assert key.startswith("1220") and len(key) == 68 and int(key, 16)
    assert key == rec.digest_provider_key("sha256-" + "AB" * 32)  # one key per file
    assert key != rec.model_provider_key(digest)
    assert rec.provider_key(digest) == key == rec.provider_key("sha256-" + "ab" * 32)
    assert rec.provider_key("gemma") == rec.model_provider_key("gemma")
    # "sha256:" that is no digest is a model id (ids may contain ':')
    assert rec.provider_key("sha256:x") == rec.model_provider_key("sha256:x")
    with pytest.raises(ValueError, match="not a digest"):
        rec.digest_provider_key("gemma")


def test_model_provider_key_is_sha256_multihash_hex() -> None:
    key = rec.model_provider_key("gemma3-270m-q4_k_m")
    raw = bytes.fromhex(key)
    assert raw[:2] == b"\x12\x20"
    assert raw[2:] == hashlib.sha256(b"/peerllm/model/gemma3-270m-q4_k_m").digest()
    assert rec.model_provider_key("a") != rec.model_provider_key("b")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("gpu-box", True),
        ("0", True),
        ("a" * 63, True),
        ("a-b-9", True),
        ("", False),
        ("a" * 64, False),
        ("-a", False),
        ("a-", False),
        ("GPU", False),
        ("gpu_box", False),
        ("gpu.box", False),
        ("gpu box", False),
        ("gpü", False),
        ("gpu\n", False),
    ],
)
def test_is_valid_name(name: str, ok: bool) -> None:
    assert rec.is_valid_name(name) is ok


# ---------------------------------------------------------------- accepted records


def test_valid_node_record_opens() -> None:
    value = seal("node", node_body(), seq=5)
    got = open_(rec.node_record_key(ALICE.peer_id), value)
    assert got.kind == "node"
    assert got.body == node_body()
    assert got.seq == 5
    assert got.expires_at == NOW + TTL
    assert got.public_key == ALICE.public_key
    assert len(got.signature) == 64


def test_valid_name_claim_opens() -> None:
    got = open_(rec.name_record_key("gpu-box"), seal("name", claim_body()))
    assert got.kind == "name"
    assert got.body == claim_body()


def test_signature_covers_the_canonical_payload() -> None:
    value = seal("name", claim_body(), seq=9)
    m = unpack_map(value)
    assert set(m) == {"k", "v", "seq", "exp", "pk", "body", "sig"}
    assert m["v"] == 1
    payload = rec.RECORD_DOMAIN + pack(["name", 9, NOW + TTL, ALICE.public_key, m["body"]])
    assert payload == rec.record_signing_payload("name", 9, NOW + TTL, ALICE.public_key, m["body"])
    assert verify(ALICE.public_key, payload, m["sig"])


def test_integer_expiry_is_signed_as_float() -> None:
    value = seal("name", claim_body(), expires_at=int(NOW) + 60)
    assert open_(rec.name_record_key("gpu-box"), value).expires_at == NOW + 60


def test_unknown_outer_keys_are_ignored() -> None:
    m = unpack_map(seal("name", claim_body()))
    m["future"] = 1
    assert open_(rec.name_record_key("gpu-box"), pack(m)).body == claim_body()


# ---------------------------------------------------------------- refused records


def expect_refused(key: str, value: bytes, text: str, now: float = NOW) -> None:
    with pytest.raises(RecordError) as info:
        open_(key, value, now)
    assert text in str(info.value)


NAME_KEY = rec.name_record_key("gpu-box")


def test_unsigned_record_refused() -> None:
    m = unpack_map(seal("name", claim_body()))
    del m["sig"]
    expect_refused(NAME_KEY, pack(m), "sig: missing")
    m["sig"] = bytes(64)
    expect_refused(NAME_KEY, pack(m), "signature does not verify")
    m["sig"] = b""
    expect_refused(NAME_KEY, pack(m), "sig: expected exactly 64 bytes")


def test_forged_record_for_another_peer_refused() -> None:
    # Mallory signs a claim on Alice's behalf with her own key.
    value = seal("name", claim_body(ALICE), MALLORY)
    expect_refused(NAME_KEY, value, "is signed by")


def test_record_with_swapped_public_key_refused() -> None:
    m = unpack_map(seal("name", claim_body(MALLORY), MALLORY))
    m["pk"] = ALICE.public_key
    expect_refused(NAME_KEY, pack(m), "signature does not verify")


# Same claim, keys in another order: equal content, but not the signed bytes.
_REORDERED_BODY = pack({"node_id": "node-1", "peer_id": ALICE.peer_id, "name": "gpu-box"})


@pytest.mark.parametrize(
    ("field", "new"),
    [("seq", 4), ("exp", NOW + TTL + 1), ("body", _REORDERED_BODY), ("k", "node")],
)
def test_changing_a_signed_field_breaks_the_signature(field: str, new: Any) -> None:
    m = unpack_map(seal("name", claim_body(), seq=3))
    assert m[field] != new
    m[field] = new
    expect_refused(NAME_KEY, pack(m), "signature does not verify")


@settings(deadline=None, max_examples=150)
@given(bit=st.integers(min_value=0))
def test_any_bit_flip_is_refused(bit: int) -> None:
    value = bytearray(seal("node", node_body(), seq=12345))
    bit %= len(value) * 8
    value[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RecordError):
        open_(rec.node_record_key(ALICE.peer_id), bytes(value))


def test_expired_record_refused() -> None:
    value = seal("name", claim_body(), expires_at=NOW + 10)
    assert open_(NAME_KEY, value, now=NOW + 9.999).expires_at == NOW + 10
    expect_refused(NAME_KEY, value, "expired", now=NOW + 10)
    expect_refused(NAME_KEY, value, "expired", now=NOW + 11)


def test_record_expiring_too_far_ahead_refused() -> None:
    value = seal("name", claim_body(), expires_at=NOW + rec.MAX_RECORD_TTL_S + 1)
    expect_refused(NAME_KEY, value, "ahead")


def test_record_under_wrong_key_refused() -> None:
    node = seal("node", node_body())
    expect_refused(rec.node_record_key(MALLORY.peer_id), node, "stored under")
    expect_refused(rec.name_record_key("gpu-box"), node, "stored under")
    claim = seal("name", claim_body())
    expect_refused(rec.name_record_key("other"), claim, "stored under")
    expect_refused(rec.node_record_key(ALICE.peer_id), claim, "stored under")


def test_oversize_record_refused() -> None:
    m = unpack_map(seal("name", claim_body()))
    m["padding"] = b"x" * rec.MAX_RECORD_BYTES
    expect_refused(NAME_KEY, pack(m), "exceeds")


def test_seal_refuses_oversize_record() -> None:
    body = dataclasses.replace(node_body(), models=tuple("m" * 200 + str(i) for i in range(60)))
    with pytest.raises(LocalProtocolError) as info:
        seal("node", body)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a" * 64, ""])
def test_bad_name_refused(name: str) -> None:
    value = forge({}, {"name": name, "peer_id": ALICE.peer_id, "node_id": "n"})
    expect_refused(rec.name_record_key(name), value, "body.name")
    with pytest.raises(LocalProtocolError):
        seal("name", claim_body(name=name))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b"\xc1", "malformed record"),
        (pack([1, 2, 3]), "not a map"),
        (pack({"k": "name"}), "v: missing"),
        (forge({"v": 2}, {}), "unsupported record version 2"),
        (forge({"k": "peer"}, {}), "unknown record kind 'peer'"),
        (forge({"seq": True}, {}), "seq: expected int, got bool"),
        (forge({"seq": -1}, {}), "seq: int -1"),
        (forge({"exp": "soon"}, {}), "exp: expected float"),
        (forge({"pk": b"short"}, {}), "pk: expected exactly 32 bytes"),
        (forge({}, [1]), "record body is a msgpack list, not a map"),
        (forge({}, {"name": "gpu-box", "peer_id": ALICE.peer_id}), "body.node_id: missing"),
    ],
)
def test_malformed_records_refused(value: bytes, text: str) -> None:
    expect_refused(NAME_KEY, value, text)


def test_seal_refuses_mismatched_kind_and_bad_key_lengths() -> None:
    with pytest.raises(LocalProtocolError):
        seal("name", node_body())
    with pytest.raises(LocalProtocolError):
        rec.seal_record(
            "node", node_body(), seq=1, expires_at=NOW, public_key=b"x", sign=ALICE.sign
        )
    with pytest.raises(LocalProtocolError):
        rec.seal_record(
            "node",
            node_body(),
            seq=1,
            expires_at=NOW,
            public_key=ALICE.public_key,
            sign=lambda _: b"sig",
        )
    with pytest.raises(LocalProtocolError):
        seal("node", node_body(), seq=-1)


# ---------------------------------------------------------------- newest wins


def signed(seq: int, expires_at: float = NOW + TTL) -> rec.SignedRecord:
    return open_(NAME_KEY, seal("name", claim_body(), seq=seq, expires_at=expires_at))


def test_select_newest_prefers_higher_seq() -> None:
    assert rec.select_newest([signed(1), signed(3), signed(2)]) == 1
    assert rec.select_newest([signed(5, NOW + 10), signed(4, NOW + 3000)]) == 0


def test_select_newest_ties() -> None:
    assert rec.select_newest([signed(2, NOW + 10), signed(2, NOW + 20)]) == 1
    assert rec.select_newest([signed(2), signed(2), signed(1)]) == 0


def test_select_newest_needs_records() -> None:
    with pytest.raises(ValueError, match="at least one"):
        rec.select_newest([])


@settings(deadline=None, max_examples=100)
@given(keys=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5)), min_size=1, max_size=8))
def test_select_newest_property(keys: list[tuple[int, int]]) -> None:
    template = signed(0)
    records = [dataclasses.replace(template, seq=s, expires_at=NOW + e) for s, e in keys]
    best = rec.select_newest(records)
    top = max(keys)
    assert keys[best] == top
    assert best == keys.index(top)
