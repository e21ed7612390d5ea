"""node-info messages: strict NodeInfo maps, message maps, signing and verification."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerllm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from peerllm.wire import nodeinfo as ni
from peerllm.wire.framing import NEED_DATA, FrameDecoder, encode_frame, pack, unpack_map
from peerllm.wire.prefixes import MAX_PREFIXES, PREFIX_DIGEST_BYTES
from tests.helpers import ALICE, MALLORY, peer_id_of, verify


def sample_info(peer_id: str = ALICE.peer_id, **changes: Any) -> ni.NodeInfo:
    info = ni.NodeInfo(
        protocol_version=ni.PROTOCOL_VERSION,
        software_version="0.1.0",
        peer_id=peer_id,
        node_id="0b3f6e4c-6a55-4b64-9d36-0d1c2b1f7a10",
        name="gpu-box",
        location="lab",
        tags=("fast",),
        boot_nonce=bytes(range(16)),
        started_at=1_700_000_000.5,
        issued_at=1_700_000_100.25,
        seq=3,
        addrs=("/ip4/127.0.0.1/tcp/4001",),
        capabilities=ni.Capabilities(
            protocols=(ni.PROTOCOL_ID,), features=("stream",), private_network=False
        ),
        resources=ni.Resources(
            cpu_cores=8,
            ram_total_bytes=32 << 30,
            ram_free_bytes=16 << 30,
            gpus=(
                ni.Gpu(index=0, name="A", vram_total_bytes=8 << 30, vram_free_bytes=4 << 30),
                ni.Gpu(index=1, name="B", vram_total_bytes=8 << 30, vram_free_bytes=1 << 30),
            ),
        ),
        models=(
            ni.ModelInfo(
                id="gemma3-270m-q4_k_m",
                loaded=True,
                context_size=4096,
                size_bytes=250_000_000,
                tags=("chat",),
                file_bytes=200_000_000,
                digest="sha256:" + "ab" * 32,
                replicas=3,
                prefixes=(b"\x01" * 8, b"\x02" * 8),
            ),
            ni.ModelInfo(id="other", loaded=False, context_size=None, size_bytes=None, tags=()),
        ),
        load=ni.Load(active=1, queued=0, capacity=4),
        performance=ni.Performance(tokens_per_second=42.5, ttft_ms=None),
    )
    return dataclasses.replace(info, **changes)


# ---------------------------------------------------------------- hypothesis strategies

_ids = st.text(min_size=1, max_size=40)
_tags = st.lists(st.text(min_size=1, max_size=12), max_size=4).map(tuple)
_u = st.integers(min_value=0, max_value=2**63 - 1)
_f = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
_gpus = st.builds(
    ni.Gpu, index=_u, name=st.text(max_size=20), vram_total_bytes=_u, vram_free_bytes=_u
)
_models = st.builds(
    ni.ModelInfo,
    id=_ids,
    loaded=st.booleans(),
    context_size=st.none() | _u,
    size_bytes=st.none() | _u,
    tags=_tags,
    digest=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
        lambda h: "sha256:" + h),
    replicas=st.integers(min_value=0, max_value=ni.MAX_REPLICAS),
    prefixes=st.lists(st.binary(min_size=PREFIX_DIGEST_BYTES, max_size=PREFIX_DIGEST_BYTES),
                      max_size=MAX_PREFIXES, unique=True).map(tuple),
)
node_infos = st.builds(
    ni.NodeInfo,
    protocol_version=_u,
    software_version=_ids,
    peer_id=_ids,
    node_id=_ids,
    name=_ids,
    location=st.none() | st.text(max_size=30),
    tags=_tags,
    boot_nonce=st.binary(min_size=16, max_size=16),
    started_at=_f,
    issued_at=_f,
    seq=_u,
    addrs=st.lists(st.text(min_size=1, max_size=60), max_size=4).map(tuple),
    capabilities=st.builds(
        ni.Capabilities, protocols=_tags, features=_tags, private_network=st.booleans()
    ),
    resources=st.builds(
        ni.Resources,
        cpu_cores=_u,
        ram_total_bytes=_u,
        ram_free_bytes=_u,
        gpus=st.lists(_gpus, max_size=3).map(tuple),
    ),
    models=st.lists(_models, max_size=3).map(tuple),
    load=st.builds(ni.Load, active=_u, queued=_u, capacity=_u),
    performance=st.builds(ni.Performance, tokens_per_second=st.none() | _f, ttft_ms=st.none() | _f),
)


@settings(deadline=None, max_examples=100)
@given(info=node_infos)
def test_info_map_round_trip_through_msgpack(info: ni.NodeInfo) -> None:
    assert ni.info_from_map(unpack_map(pack(ni.info_to_map(info)))) == info


@settings(deadline=None, max_examples=30)
@given(info=node_infos, request_id=_u)
def test_signed_response_round_trip_over_frames(info: ni.NodeInfo, request_id: int) -> None:
    info = dataclasses.replace(info, peer_id=ALICE.peer_id)
    resp = ni.make_response(request_id, info, public_key=ALICE.public_key, sign=ALICE.sign)
    dec = FrameDecoder(ni.MAX_INFO_FRAME_BYTES)
    dec.feed(encode_frame(ni.message_to_map(resp), max_frame_bytes=ni.MAX_INFO_FRAME_BYTES))
    frame = dec.next_frame()
    assert isinstance(frame, dict)
    got = ni.message_from_map(frame)
    assert got == resp
    assert isinstance(got, ni.InfoResponse)
    opened = ni.open_response(
        got, expected_peer_id=ALICE.peer_id, peer_id_of=peer_id_of, verify=verify
    )
    assert opened == info
    assert dec.next_frame() is NEED_DATA


@pytest.mark.parametrize(
    "msg",
    [
        ni.InfoRequest(request_id=0),
        ni.InfoRequest(request_id=2**63 - 1),
        ni.ErrorResponse(request_id=5, code=int(ErrorCode.BUSY), message="busy"),
    ],
)
def test_message_round_trip(msg: ni.InfoRequest | ni.ErrorResponse) -> None:
    assert ni.message_from_map(unpack_map(pack(ni.message_to_map(msg)))) == msg


def test_request_map_layout() -> None:
    assert ni.message_to_map(ni.InfoRequest(request_id=9)) == {"t": "info_req", "v": 1, "id": 9}


# ---------------------------------------------------------------- strict NodeInfo decoding


def info_map(**top: Any) -> dict[str, Any]:
    m = ni.info_to_map(sample_info())
    m.update(top)
    return m


def expect_field_error(m: Any, text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ni.info_from_map(m)
    assert info.value.code is ErrorCode.BAD_FRAME
    assert text in str(info.value)


def test_bool_is_not_an_int() -> None:
    m = info_map()
    m["resources"]["cpu_cores"] = True
    expect_field_error(m, "resources.cpu_cores: expected int, got bool")


def test_int_is_not_a_bool() -> None:
    m = info_map()
    m["models"][0]["loaded"] = 1
    expect_field_error(m, "models[0].loaded: expected bool, got int")


def test_error_names_nested_list_path() -> None:
    m = info_map()
    m["resources"]["gpus"][1]["vram_free_bytes"] = "lots"
    expect_field_error(m, "resources.gpus[1].vram_free_bytes: expected int")


def test_missing_field_is_named() -> None:
    m = info_map()
    del m["load"]["queued"]
    expect_field_error(m, "load.queued: missing")


def test_optional_field_must_still_be_present() -> None:
    m = info_map()
    del m["location"]
    expect_field_error(m, "location: missing")


def test_file_bytes_may_be_absent_as_from_an_older_node() -> None:
    m = info_map()
    assert m["models"][0]["file_bytes"] == 200_000_000
    for model in m["models"]:
        del model["file_bytes"]
    info = ni.info_from_map(m)
    assert [model.file_bytes for model in info.models] == [None, None]


def test_file_bytes_is_checked_when_present() -> None:
    m = info_map()
    m["models"][0]["file_bytes"] = "big"
    expect_field_error(m, "models[0].file_bytes: expected int")


def test_digest_and_replicas_may_be_absent_as_from_an_older_node() -> None:
    m = info_map()
    assert (m["models"][0]["digest"], m["models"][0]["replicas"]) == ("sha256:" + "ab" * 32, 3)
    assert (m["models"][1]["digest"], m["models"][1]["replicas"]) == (None, 0)
    for model in m["models"]:
        del model["digest"], model["replicas"]
    info = ni.info_from_map(m)
    assert [(model.digest, model.replicas) for model in info.models] == [(None, 0)] * 2


@pytest.mark.parametrize(
    ("digest", "text"),
    [
        ("sha256:" + "zz" * 32, "models[0].digest: 'sha256:zz"),
        ("sha256:" + "ab" * 31, "is not a digest"),
        ("sha256:" + "AB" * 32, "models[0].digest: expected sha256:<64 lowercase hex"),
        ("ab" * 32, "models[0].digest: expected sha256:"),
        ("sha256:" + "ab" * 32 + "\n", "models[0].digest: str length 72"),
        ("x" * 100_000, "models[0].digest: str length 100000"),
        (b"sha256:", "models[0].digest: expected str, got bytes"),
        (7, "models[0].digest: expected str, got int"),
    ],
)
def test_a_hostile_digest_is_refused_naming_the_field(digest: object, text: str) -> None:
    m = info_map()
    m["models"][0]["digest"] = digest
    expect_field_error(m, text)


@pytest.mark.parametrize(("replicas", "text"), [
    (-1, "models[0].replicas: int -1 outside 0..64"), (65, "int 65 outside"),
    (True, "models[0].replicas: expected int, got bool"), (None, "expected int, got nil")])
def test_replicas_are_checked_when_present(replicas: object, text: str) -> None:
    m = info_map()
    m["models"][0]["replicas"] = replicas
    expect_field_error(m, text)


def test_prefixes_may_be_absent_as_from_an_older_node() -> None:
    m = info_map()
    assert m["models"][0]["prefixes"] == [b"\x01" * 8, b"\x02" * 8]
    assert m["models"][1]["prefixes"] == []
    for model in m["models"]:
        del model["prefixes"]
    assert [model.prefixes for model in ni.info_from_map(m).models] == [(), ()]


@pytest.mark.parametrize(("prefixes", "text"), [
    ("abc", "models[0].prefixes: expected array, got str"),
    (None, "models[0].prefixes: expected array, got nil"),
    ([b"\x01" * 7], "models[0].prefixes[0]: expected exactly 8 bytes, got 7"),
    ([b"\x01" * 8, b"\x02" * 9], "models[0].prefixes[1]: expected exactly 8 bytes, got 9"),
    (["0102030405060708"], "models[0].prefixes[0]: expected bytes, got str"),
    ([1], "models[0].prefixes[0]: expected bytes, got int"),
    ([bytes([i]) * 8 for i in range(MAX_PREFIXES + 1)],
     f"models[0].prefixes: {MAX_PREFIXES + 1} items exceeds {MAX_PREFIXES}"),
    ([b"\x01" * 8, b"\x01" * 8], "models[0].prefixes: a digest is listed twice"),
])
def test_a_hostile_prefix_list_is_refused_naming_the_field(prefixes: object, text: str
                                                           ) -> None:
    m = info_map()
    m["models"][0]["prefixes"] = prefixes
    expect_field_error(m, text)


def test_a_node_refuses_to_send_prefixes_a_receiver_would_refuse() -> None:
    bad = dataclasses.replace(sample_info().models[0], prefixes=(b"short",))
    with pytest.raises(LocalProtocolError, match="prefixes"):
        ni.make_response(1, sample_info(models=(bad,)), public_key=ALICE.public_key,
                         sign=ALICE.sign)


def test_floats_may_be_ints() -> None:
    info = ni.info_from_map(info_map(started_at=5, issued_at=6))
    assert info.started_at == 5.0
    assert type(info.started_at) is float


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({"seq": -1}, "seq: int -1 outside"),
        ({"seq": 2**64 - 1}, "seq: int"),
        ({"seq": 1.0}, "seq: expected int, got float"),
        ({"started_at": float("nan")}, "started_at: number"),
        ({"issued_at": float("inf")}, "issued_at: number"),
        ({"started_at": True}, "started_at: expected float, got bool"),
        ({"boot_nonce": b"x" * 15}, "boot_nonce: expected exactly 16 bytes"),
        ({"boot_nonce": "x" * 16}, "boot_nonce: expected bytes, got str"),
        ({"name": ""}, "name: str length 0"),
        ({"name": "n" * 257}, "name: str length 257"),
        ({"peer_id": None}, "peer_id: expected str, got nil"),
        ({"addrs": ["/ip4/1.2.3.4/tcp/1"] * 65}, "addrs: 65 items"),
        ({"addrs": ["a" * 513]}, "addrs[0]: str length 513"),
        ({"tags": "fast"}, "tags: expected array, got str"),
        ({"tags": ["t"] * 33}, "tags: 33 items"),
        ({"capabilities": []}, "capabilities: expected map, got list"),
    ],
)
def test_field_limits(changes: dict[str, Any], text: str) -> None:
    expect_field_error(info_map(**changes), text)


def test_too_many_gpus_and_models() -> None:
    m = info_map()
    m["resources"]["gpus"] = m["resources"]["gpus"] * 9
    expect_field_error(m, "resources.gpus: 18 items exceeds 16")
    m = info_map(models=info_map()["models"] * 129)
    expect_field_error(m, "models: 258 items exceeds 256")


def test_root_must_be_a_map() -> None:
    expect_field_error([1, 2], "<root>: expected map")


def test_unknown_keys_are_ignored() -> None:
    m = info_map(future_field={"x": 1})
    m["load"]["future"] = True
    assert ni.info_from_map(m) == sample_info()


# ---------------------------------------------------------------- message decoding


def response_map() -> dict[str, Any]:
    resp = ni.make_response(1, sample_info(), public_key=ALICE.public_key, sign=ALICE.sign)
    return ni.message_to_map(resp)


@pytest.mark.parametrize(
    ("m", "code"),
    [
        ({"t": "ping", "v": 1, "id": 1}, ErrorCode.UNKNOWN_MESSAGE),
        ({"t": "info_req", "v": 2, "id": 1}, ErrorCode.UNSUPPORTED_VERSION),
        ({"t": "info_v2_only", "v": 2}, ErrorCode.UNSUPPORTED_VERSION),
        ({"t": "info_req", "v": True, "id": 1}, ErrorCode.BAD_FRAME),
        ({"t": "info_req", "id": 1}, ErrorCode.BAD_FRAME),
        ({"t": 1, "v": 1, "id": 1}, ErrorCode.BAD_FRAME),
        ({"t": "info_req", "v": 1, "id": -1}, ErrorCode.BAD_FRAME),
        ({"t": "info_req", "v": 1, "id": "1"}, ErrorCode.BAD_FRAME),
        ({"t": "error", "v": 1, "id": 1, "code": 1}, ErrorCode.BAD_FRAME),
        ({**response_map(), "pk": b"\x00" * 31}, ErrorCode.BAD_FRAME),
        ({**response_map(), "sig": b"\x00" * 65}, ErrorCode.BAD_FRAME),
        ({**response_map(), "body": "text"}, ErrorCode.BAD_FRAME),
        (
            {**response_map(), "body": b"x" * (ni.MAX_INFO_BODY_BYTES + 1)},
            ErrorCode.FRAME_TOO_LARGE,
        ),
        ("not a map", ErrorCode.BAD_FRAME),
    ],
)
def test_bad_messages(m: Any, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        ni.message_from_map(m)
    assert info.value.code is code


def test_message_to_map_refuses_invalid_messages() -> None:
    resp = ni.InfoResponse(request_id=1, body=b"\x80", public_key=b"k" * 31, signature=b"s" * 64)
    with pytest.raises(LocalProtocolError):
        ni.message_to_map(resp)
    with pytest.raises(LocalProtocolError):
        ni.message_to_map(ni.InfoRequest(request_id=-5))


def test_full_frame_fits_in_cap_with_largest_body() -> None:
    resp = ni.InfoResponse(
        request_id=2**63 - 1,
        body=b"x" * ni.MAX_INFO_BODY_BYTES,
        public_key=b"k" * 32,
        signature=b"s" * 64,
    )
    frame = encode_frame(ni.message_to_map(resp), max_frame_bytes=ni.MAX_INFO_FRAME_BYTES)
    assert len(frame) - 4 <= ni.MAX_INFO_FRAME_BYTES


# ---------------------------------------------------------------- signing


def signed() -> ni.InfoResponse:
    return ni.make_response(7, sample_info(), public_key=ALICE.public_key, sign=ALICE.sign)


def open_as(resp: ni.InfoResponse, peer: str = ALICE.peer_id) -> ni.NodeInfo:
    return ni.open_response(resp, expected_peer_id=peer, peer_id_of=peer_id_of, verify=verify)


def test_signing_payload_is_domain_separated() -> None:
    assert ni.signing_payload(b"abc") == b"peerllm/node-info/v1\x00abc"
    resp = signed()
    assert verify(resp.public_key, ni.SIGNATURE_DOMAIN + resp.body, resp.signature)
    assert not verify(resp.public_key, resp.body, resp.signature)


def test_valid_response_opens() -> None:
    assert open_as(signed()) == sample_info()


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@settings(deadline=None, max_examples=60)
@given(field=st.sampled_from(["body", "signature", "public_key"]), where=st.integers(0, 10**6))
def test_any_bit_flip_is_rejected(field: str, where: int) -> None:
    resp = signed()
    original: bytes = getattr(resp, field)
    changes: dict[str, Any] = {field: flip(original, where % (len(original) * 8))}
    tampered = dataclasses.replace(resp, **changes)
    # Expect the tampered key's own peer id, so the signature check itself must catch it.
    peer = peer_id_of(tampered.public_key)
    with pytest.raises(RemoteProtocolError) as info:
        open_as(tampered, peer)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_key_of_another_peer_is_rejected() -> None:
    with pytest.raises(RemoteProtocolError, match="expected") as info:
        open_as(signed(), MALLORY.peer_id)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_signed_info_claiming_another_peer_is_rejected() -> None:
    # Mallory signs honestly with her own key, but the NodeInfo claims to be Alice.
    resp = ni.make_response(
        1, sample_info(peer_id=ALICE.peer_id), public_key=MALLORY.public_key, sign=MALLORY.sign
    )
    with pytest.raises(RemoteProtocolError, match="names peer") as info:
        open_as(resp, MALLORY.peer_id)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_response_with_substituted_key_is_rejected() -> None:
    resp = dataclasses.replace(signed(), public_key=MALLORY.public_key)
    with pytest.raises(RemoteProtocolError, match="does not verify"):
        open_as(resp, MALLORY.peer_id)


def test_validly_signed_garbage_body_is_a_bad_frame() -> None:
    for body in (b"\xc1", pack([1, 2]), pack({"peer_id": ALICE.peer_id})):
        sig = ALICE.sign(ni.signing_payload(body))
        resp = ni.InfoResponse(request_id=1, body=body, public_key=ALICE.public_key, signature=sig)
        with pytest.raises(RemoteProtocolError) as info:
            open_as(resp)
        assert info.value.code is ErrorCode.BAD_FRAME


def test_make_response_refuses_invalid_info() -> None:
    bad = sample_info(load=ni.Load(active=-1, queued=0, capacity=1))
    with pytest.raises(LocalProtocolError, match=r"load\.active"):
        ni.make_response(1, bad, public_key=ALICE.public_key, sign=ALICE.sign)


def test_make_response_refuses_oversize_body() -> None:
    model = ni.ModelInfo(id="m" * 256, loaded=False, context_size=None, size_bytes=None, tags=())
    big = sample_info(models=(model,) * 256)
    with pytest.raises(LocalProtocolError) as info:
        ni.make_response(1, big, public_key=ALICE.public_key, sign=ALICE.sign)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_make_response_checks_key_and_signature_lengths() -> None:
    with pytest.raises(LocalProtocolError):
        ni.make_response(1, sample_info(), public_key=b"short", sign=ALICE.sign)
    with pytest.raises(LocalProtocolError):
        ni.make_response(1, sample_info(), public_key=ALICE.public_key, sign=lambda _: b"x")
