"""replication.json: targets and declined digests survive a restart; a bad file stops the
node with its name and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerllm.errors import ConfigError
from peerllm.mesh.replica_settings import ReplicaSettings

DIGEST = "sha256:" + "0f" * 32


def test_targets_and_declined_digests_persist(tmp_path: Path) -> None:
    path = tmp_path / "replication.json"
    s = ReplicaSettings(path)
    assert s.replicas("m") is None and s.declined() == frozenset()
    s.set_replicas("m", 3)
    s.decline(DIGEST)
    again = ReplicaSettings(path)
    assert again.replicas("m") == 3 and again.targets() == {"m": 3}
    assert again.declined() == {DIGEST}
    again.accept(frozenset({DIGEST}))
    assert ReplicaSettings(path).declined() == frozenset()


def test_a_bad_target_names_the_field(tmp_path: Path) -> None:
    s = ReplicaSettings(tmp_path / "replication.json")
    for bad in (-1, 65, True, 2.0):
        with pytest.raises(ValueError, match="replicas: must be a whole number 0-64"):
            s.set_replicas("m", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("doc", "field"), [
    ("not json", "Expecting value"),
    ("[]", "expected a JSON object"),
    ('{"version": 2}', "version"),
    ('{"version": 1, "replicas": {"m": "two"}}', "replicas.m"),
    ('{"version": 1, "declined": ["../x"]}', "declined"),
])
def test_a_corrupt_file_is_refused_with_its_name(tmp_path: Path, doc: str, field: str) -> None:
    path = tmp_path / "replication.json"
    path.write_text(doc)
    with pytest.raises(ConfigError, match=field) as info:
        ReplicaSettings(path)
    assert info.value.key == str(path)


def test_the_file_is_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "replication.json"
    ReplicaSettings(path).set_replicas("m", 2)
    assert json.loads(path.read_text()) == {"version": 1, "replicas": {"m": 2}, "declined": []}
