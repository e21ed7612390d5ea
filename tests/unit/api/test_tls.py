"""The API's TLS pair is loaded before binding: a bad pair is a ConfigError naming the files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from peerllm.api.server import check_tls_pair
from peerllm.errors import ConfigError
from tests.helpers import self_signed_cert


def test_a_matching_pair_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = self_signed_cert(tmp_path)
    with caplog.at_level(logging.WARNING):
        check_tls_pair(files.cert, files.key)
    assert caplog.records == []


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    one, other = self_signed_cert(tmp_path / "one"), self_signed_cert(tmp_path / "other")
    with pytest.raises(ConfigError) as info:
        check_tls_pair(one.cert, other.key)
    assert info.value.key == "api.tls_cert"
    assert str(one.cert) in info.value.message and str(other.key) in info.value.message


def test_files_that_are_not_pem_are_refused(tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for cert, key in ((junk, files.key), (files.cert, junk)):
        with pytest.raises(ConfigError, match="both must be PEM"):
            check_tls_pair(cert, key)


def test_an_encrypted_key_is_refused_instead_of_prompting(tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path, passphrase=b"secret words")
    with pytest.raises(ConfigError) as info:
        check_tls_pair(files.cert, files.key)
    assert info.value.key == "api.tls_key"
    assert "is encrypted" in info.value.message


def test_a_key_others_can_read_is_warned_about(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    files = self_signed_cert(tmp_path)
    files.key.chmod(0o640)
    with caplog.at_level(logging.WARNING):
        check_tls_pair(files.cert, files.key)
    assert f"TLS key {files.key} has mode 0640" in caplog.text
