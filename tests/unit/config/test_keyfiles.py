"""The network key given as a file (hex or libp2p swarm.key), and that it stays secret."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from peerllm.config import NodeConfig, P2PConfig, config_from_mapping, load_config
from peerllm.config.keyfiles import parse_network_key
from peerllm.errors import ConfigError
from peerllm.p2p.pnet import NetworkKey

KEY = "0123456789abcdef" * 4
SECRET = "5ec7e7" * 10 + "abcd"  # 64 hex characters that must never be shown anywhere
POSIX = os.name == "posix"


def key_file(tmp_path: Path, text: str | bytes, *, mode: int = 0o600) -> Path:
    path = tmp_path / "network.key"
    if isinstance(text, str):
        path.write_text(text, newline="")
    else:
        path.write_bytes(text)
    path.chmod(mode)
    return path


def from_file(path: Path) -> P2PConfig:
    return config_from_mapping({"p2p": {"network_key_file": str(path)}}).p2p


@pytest.mark.parametrize("text", [
    KEY, f"{KEY}\n", f"  {KEY.upper()}\r\n\n",
    f"/key/swarm/psk/1.0.0/\n/base16/\n{KEY}\n",
    f"/key/swarm/psk/1.0.0/\r\n/base16/\r\n{KEY.upper()}\r\n",
    f"/key/swarm/psk/1.0.0/\n/base64/\n{base64.b64encode(bytes.fromhex(KEY)).decode()}\n",
])
def test_both_file_forms_give_the_key(tmp_path: Path, text: str) -> None:
    p2p = from_file(key_file(tmp_path, text))
    assert p2p.network_key is None  # not kept in the config: read where it is used
    assert p2p.resolve_network_key() == KEY


def test_the_file_and_the_inline_key_are_one_network() -> None:
    inline = config_from_mapping({"p2p": {"network_key": KEY.upper()}}).p2p
    assert inline.resolve_network_key() == KEY
    assert NodeConfig().p2p.resolve_network_key() is None


@pytest.mark.parametrize(("text", "why"), [
    ("", "the file is empty"),
    ("   \n\n", "the file is empty"),
    (SECRET[:-1], "found one line of 63 characters"),
    (SECRET + "0", "found one line of 65 characters"),
    ("g" * 64, "found one line of 64 characters"),
    (f"{SECRET}\n{SECRET}\n", "is not /key/swarm/psk/1.0.0/"),
    (f"/key/swarm/psk/1.0.0/\n{SECRET}\n", "a swarm.key has 3 lines"),
    (f"/key/swarm/psk/1.0.0/\n/base16/\n{SECRET}\nextra\n", "a swarm.key has 3 lines"),
    (f"/key/swarm/psk/1.0.0/\n/base16/\n{SECRET[:60]}\n", "line 3 must be 64 hex"),
    (f"/key/swarm/psk/1.0.0/\n/base58/\n{SECRET}\n", "line 2 must be /base16/"),
    (f"/key/swarm/psk/1.0.0/\n/bin/\n{SECRET}\n", "write the key as /base16/"),
    (f"/key/swarm/psk/1.0.0/\n/base64/\n{SECRET}\n", "line 3 must decode to 32 bytes"),
    ("/key/swarm/psk/1.0.0/\n/base64/\n" + SECRET[:10] + "!!\n", "not valid base64"),
])
def test_a_bad_key_file_names_the_file_and_the_problem_never_the_key(
        tmp_path: Path, text: str, why: str) -> None:
    path = key_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        from_file(path)
    assert info.value.key == "p2p.network_key_file"
    assert str(path) in info.value.message
    assert why in info.value.message
    assert SECRET[:16] not in str(info.value)


def test_a_binary_file_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not text"):
        from_file(key_file(tmp_path, bytes(range(200, 232))))


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        from_file(key_file(tmp_path, "0" * 70_000))


def test_a_missing_file_or_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        from_file(tmp_path / "nope.key")
    with pytest.raises(ConfigError, match=r"not a regular file|cannot open"):
        from_file(tmp_path)


@pytest.mark.skipif(not POSIX, reason="FIFOs are POSIX")
def test_a_fifo_at_the_path_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "network.key"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        from_file(fifo)


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY, mode=0o000)
    with pytest.raises(ConfigError, match="permission denied"):
        from_file(path)


def test_the_key_and_the_file_together_are_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, KEY)
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"p2p": {"network_key": KEY, "network_key_file": str(path)}})
    assert "not both" in info.value.message
    # Whatever the layers: a flag giving the key does not silently beat a file's path.
    yaml_file = tmp_path / "node.yaml"
    yaml_file.write_text(f"p2p:\n  network_key_file: {path}\n")
    with pytest.raises(ConfigError, match=r"not both.*command-line flags"):
        load_config(yaml_file, flags={"p2p": {"network_key": KEY}})


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_a_key_file_others_can_read_is_used_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p2p = from_file(key_file(tmp_path, SECRET, mode=0o644))
    with caplog.at_level(logging.WARNING, logger="peerllm.config.keyfiles"):
        assert p2p.resolve_network_key() == SECRET
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "mode 0644" in caplog.text and "chmod 600" in caplog.text
    assert SECRET not in caplog.text
    caplog.clear()
    (tmp_path / "network.key").chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="peerllm.config.keyfiles"):
        p2p.resolve_network_key()
    assert caplog.records == []


def test_no_repr_shows_the_key(tmp_path: Path) -> None:
    inline = NodeConfig(p2p=P2PConfig(network_key=SECRET))
    assert SECRET not in repr(inline)
    assert SECRET not in repr(NetworkKey.from_hex(SECRET))
    assert "network_key_file=" in repr(from_file(key_file(tmp_path, SECRET)))


def test_parse_never_echoes_what_it_refuses() -> None:
    for text in (SECRET[:40], f"/key/swarm/psk/1.0.0/\n{SECRET}\n/base16/"):
        with pytest.raises(ValueError, match=r"characters|line 2") as info:
            parse_network_key(text)
        assert SECRET[:16] not in str(info.value)


# --------------------------------------------------------------------------- TLS files


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    for given, missing in (("tls_cert", "api.tls_key"), ("tls_key", "api.tls_cert")):
        with pytest.raises(ConfigError) as info:
            config_from_mapping({"api": {given: str(cert)}})
        assert info.value.key == missing
        assert "give both" in info.value.message


def test_tls_files_must_be_readable_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"api": {"tls_cert": str(cert), "tls_key": str(tmp_path / "k")}})
    assert (info.value.key, f"TLS key {tmp_path / 'k'} does not exist" in info.value.message
            ) == ("api.tls_key", True)
    with pytest.raises(ConfigError, match=r"TLS certificate .* not a regular file"):
        config_from_mapping({"api": {"tls_cert": str(tmp_path), "tls_key": str(cert)}})
    api = config_from_mapping({"api": {"tls_cert": str(cert), "tls_key": str(cert)}}).api
    assert (api.tls_cert, api.tls_key) == (cert, cert)
