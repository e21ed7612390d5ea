"""Identity: key file safety, peer IDs that match libp2p, signatures, names and node.json."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import stat
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from libp2p.peer.id import ID

from peerllm.errors import ConfigError, IdentityError
from peerllm.identity import (
    Identity,
    atomic_write,
    default_data_dir,
    generate_name,
    generate_private_key,
    load_identity,
    load_or_create_key,
    peer_id_of,
    public_key_bytes,
    sign,
    to_libp2p_keypair,
    validate_name,
    verify,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def valid_pem() -> bytes:
    return generate_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------- key file


def test_key_is_created_once_then_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key1, created1 = load_or_create_key(path)
    key2, created2 = load_or_create_key(path)
    assert (created1, created2) == (True, False)
    assert public_key_bytes(key1) == public_key_bytes(key2)
    assert peer_id_of(public_key_bytes(key1)) == peer_id_of(public_key_bytes(key2))
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


@posix_only
def test_key_file_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "node.key"
    load_or_create_key(path)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700


def test_creation_leaves_no_temporary_files(tmp_path: Path) -> None:
    load_identity(tmp_path)
    load_identity(tmp_path, name="renamed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.json", "node.key"]


def test_exclusive_atomic_write_never_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        atomic_write(path, b"ours", exclusive=True)
    assert path.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_atomic_write_replaces_when_not_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (valid_pem()[:60], "corrupt or truncated"),
        (valid_pem()[:-30], "corrupt or truncated"),
        (os.urandom(32), "corrupt or truncated"),
        (b"\x00" * 119, "corrupt or truncated"),
        (_ec_pem(), "not an Ed25519 key"),
    ],
    ids=["empty", "whitespace", "truncated-head", "truncated-tail", "raw-bytes", "zeros", "ec-key"],
)
def test_unusable_key_file_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        load_or_create_key(path)
    assert info.value.path == path
    assert reason in info.value.message
    assert "refusing to start" in info.value.message
    assert "NEW identity" in info.value.message
    assert str(path) in str(info.value)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_unusable_key_stops_load_identity_too(tmp_path: Path) -> None:
    (tmp_path / "node.key").write_bytes(b"garbage")
    with pytest.raises(IdentityError):
        load_identity(tmp_path)
    assert not (tmp_path / "node.json").exists()


@posix_only
@pytest.mark.skipif(os.name == "posix" and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(valid_pem())
    path.chmod(0)
    try:
        with pytest.raises(IdentityError, match="permission denied") as info:
            load_or_create_key(path)
        assert info.value.path == path
    finally:
        path.chmod(0o600)
    assert path.read_bytes().startswith(b"-----BEGIN")


def test_directory_at_key_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.mkdir()
    with pytest.raises(IdentityError, match="refusing to start"):
        load_or_create_key(path)
    assert path.is_dir()


@posix_only
def test_dangling_symlink_at_key_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(IdentityError, match="symlink"):
        load_or_create_key(path)
    assert path.is_symlink()
    assert not (tmp_path / "elsewhere.key").exists()


@posix_only
def test_loose_key_file_mode_warns_but_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "node.key"
    key, _ = load_or_create_key(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="peerllm.identity.keystore"):
        again, created = load_or_create_key(path)
    assert not created
    assert public_key_bytes(again) == public_key_bytes(key)
    assert "0644" in caplog.text
    assert mode_of(path) == 0o644  # warned about, not changed behind the operator's back


# --------------------------------------------------------------------------- keys


def test_peer_id_matches_libp2p() -> None:
    key = generate_private_key()
    keypair = to_libp2p_keypair(key)
    expected = ID.from_pubkey(keypair.public_key).to_base58()
    assert peer_id_of(public_key_bytes(key)) == expected
    assert expected.startswith("12D3KooW")
    assert keypair.public_key.to_bytes() == public_key_bytes(key)


def test_libp2p_keypair_signatures_verify_with_our_key() -> None:
    key = generate_private_key()
    signature = to_libp2p_keypair(key).private_key.sign(b"hello")
    assert verify(public_key_bytes(key), b"hello", signature)
    assert signature == sign(key, b"hello")  # Ed25519 is deterministic


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_peer_id_of_rejects_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        peer_id_of(b"\x01" * size)


def test_sign_verify_round_trip_and_tampering() -> None:
    key = generate_private_key()
    public = public_key_bytes(key)
    signature = sign(key, b"message")
    assert len(public) == 32
    assert len(signature) == 64
    assert verify(public, b"message", signature)
    assert not verify(public, b"messagf", signature)
    assert not verify(public, b"message", bytes([signature[0] ^ 1]) + signature[1:])
    assert not verify(public_key_bytes(generate_private_key()), b"message", signature)


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [
        (b"", b"m", b"\x00" * 64),
        (b"\x00" * 31, b"m", b"\x00" * 64),
        (b"\xff" * 32, b"m", b"\x00" * 64),
        (b"\x00" * 32, b"m", b""),
        (b"\x00" * 32, b"m", b"\x00" * 65),
        (None, b"m", b"\x00" * 64),
        (b"\x00" * 32, "m", b"\x00" * 64),
        (b"\x00" * 32, b"m", None),
    ],
)
def test_verify_never_raises_on_malformed_input(
    public: object, message: object, signature: object
) -> None:
    assert verify(public, message, signature) is False  # type: ignore[arg-type]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("a", "a"), ("gpu-box", "gpu-box"), ("GPU-Box-2", "gpu-box-2"), ("x" * 63, "x" * 63),
     ("0", "0"), ("a--b", "a--b")],
)
def test_valid_names(name: str, canonical: str) -> None:
    assert validate_name(name) == canonical


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("", "empty"),
        ("x" * 64, "maximum is 63"),
        ("-box", "hyphen"),
        ("box-", "hyphen"),
        ("gpu box", "' '"),
        ("gpu_box", "'_'"),
        ("gpu.box", "'.'"),
        ("café", "'é'"),
        ("\u212a", "'\u212a'"),  # KELVIN SIGN lowercases to ASCII "k"
    ],
)
def test_invalid_names_say_what_is_wrong(name: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        validate_name(name)


def test_non_string_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="string"):
        validate_name(42)  # type: ignore[arg-type]


@given(st.randoms(use_true_random=False))
def test_generated_names_always_validate(rng: random.Random) -> None:
    name = generate_name(rng)
    assert validate_name(name) == name
    adjective, animal, suffix = name.split("-")
    assert adjective in name
    assert animal in name
    assert re.fullmatch(r"[0-9a-f]{4}", suffix)


@given(st.text(max_size=70))
def test_validate_name_accepts_only_dns_labels(text: str) -> None:
    try:
        name = validate_name(text)
    except ValueError:
        assert not NAME_RE.fullmatch(text.lower()) or not text.isascii()
    else:
        assert NAME_RE.fullmatch(name)
        assert name == text.lower()


def test_generate_name_is_reproducible_with_a_seeded_rng() -> None:
    assert generate_name(random.Random(7)) == generate_name(random.Random(7))


# --------------------------------------------------------------------------- node.json


def test_first_start_creates_and_later_starts_reuse(tmp_path: Path) -> None:
    first = load_identity(tmp_path)
    second = load_identity(tmp_path)
    assert first == second
    assert first.peer_id == peer_id_of(first.public_key)
    assert uuid.UUID(first.node_id).version == 4
    assert validate_name(first.name) == first.name
    stored = json.loads((tmp_path / "node.json").read_text())
    assert stored == {"node_id": first.node_id, "name": first.name}
    if os.name == "posix":
        assert mode_of(tmp_path / "node.json") == 0o600


def test_given_name_and_id_are_used_then_kept(tmp_path: Path) -> None:
    node_id = "6F9619FF-8B86-D011-B42D-00C04FC964FF"  # a v1 UUID, upper case
    first = load_identity(tmp_path, name="Gpu-Box", node_id=node_id)
    assert first.name == "gpu-box"
    assert first.node_id == node_id.lower()
    assert load_identity(tmp_path).name == "gpu-box"


def test_explicit_name_overrides_and_the_latest_is_kept(tmp_path: Path) -> None:
    original = load_identity(tmp_path, name="alpha")
    renamed = load_identity(tmp_path, name="beta")
    later = load_identity(tmp_path)
    assert (original.name, renamed.name, later.name) == ("alpha", "beta", "beta")
    assert original.node_id == renamed.node_id == later.node_id
    assert original.peer_id == later.peer_id


def test_location_and_tags_are_per_start_only(tmp_path: Path) -> None:
    ident = load_identity(tmp_path, location="rack-2", tags=["gpu", "fast"])
    assert (ident.location, ident.tags) == ("rack-2", ("gpu", "fast"))
    again = load_identity(tmp_path)
    assert (again.location, again.tags) == (None, ())
    assert set(json.loads((tmp_path / "node.json").read_text())) == {"node_id", "name"}


def test_unknown_fields_in_node_json_are_preserved(tmp_path: Path) -> None:
    load_identity(tmp_path, name="alpha")
    path = tmp_path / "node.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "future": [1, 2]}))
    load_identity(tmp_path, name="beta")
    assert json.loads(path.read_text())["future"] == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"name": "bad name"}, "node.name"), ({"name": "-x"}, "node.name"),
     ({"node_id": "not-a-uuid"}, "node.id"), ({"node_id": ""}, "node.id")],
)
def test_invalid_arguments_are_config_errors_and_create_nothing(
    tmp_path: Path, kwargs: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_identity(tmp_path / "data", **kwargs)
    assert info.value.key == key
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"name": "x"}', b'{"node_id": "nope", "name": "x"}',
     b'{"node_id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "name": "bad name"}', b"\xff\xfe"],
)
def test_corrupt_node_json_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.json"
    path.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        load_identity(tmp_path, name="override")
    assert info.value.path == path
    assert "refusing to start" in info.value.message
    assert path.read_bytes() == content


def test_identity_signs_with_its_key_and_hides_it_from_repr(tmp_path: Path) -> None:
    ident = load_identity(tmp_path)
    assert isinstance(ident, Identity)
    assert verify(ident.public_key, b"payload", ident.sign(b"payload"))
    assert "private_key" not in repr(ident)


# --------------------------------------------------------------------------- data dir


def test_default_data_dir_linux() -> None:
    home = Path.home()
    assert default_data_dir({}, platform="linux") == home / ".local" / "share" / "peerllm"
    assert default_data_dir({"XDG_DATA_HOME": "/srv/data"}, platform="linux") == Path(
        "/srv/data/peerllm"
    )
    # The XDG spec says relative values are to be ignored.
    assert default_data_dir({"XDG_DATA_HOME": "rel"}, platform="linux") == (
        home / ".local" / "share" / "peerllm"
    )


def test_default_data_dir_macos_and_windows() -> None:
    home = Path.home()
    assert default_data_dir(platform="darwin") == (
        home / "Library" / "Application Support" / "peerllm"
    )
    assert default_data_dir({"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, platform="win32") == (
        Path("C:/Users/u/AppData/Local") / "peerllm"
    )
    assert default_data_dir({}, platform="win32") == home / "AppData" / "Local" / "peerllm"


def test_default_data_dir_does_not_read_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/from/process/env")
    assert default_data_dir(platform="linux") == Path.home() / ".local" / "share" / "peerllm"
