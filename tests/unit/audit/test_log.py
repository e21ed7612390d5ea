"""The audit log file: JSON lines, 0600, rotation, flood control, one file per node."""

from __future__ import annotations

import json
import logging
import stat
import sys
from pathlib import Path

import pytest

from peerllm.audit import AUDIT_LOGGER, Auditor, events, open_audit_log
from peerllm.audit.log import PrivateRotatingFileHandler
from peerllm.errors import ConfigError
from peerllm.security_events import AuditEvent, Direction, PeerLimit
from tests.helpers import audit_lines

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_events_are_json_lines_with_ts_event_node_first(tmp_path: Path) -> None:
    with open_audit_log(tmp_path / "audit.log", node="12D3KooWA", max_bytes=1 << 20,
                        backups=2, rate_per_s=50) as audit:
        events.peer_limit(audit, peer="12D3KooWB", limit=PeerLimit.STREAMS)
        events.network_key_mismatch(audit, peer="127.0.0.1:5", direction=Direction.INBOUND,
                                    reason="network key differs")
    first, second = audit_lines(tmp_path)
    assert list(first)[:3] == ["ts", "event", "node"]
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-02T03:04:05.678Z")
    assert {k: v for k, v in first.items() if k != "ts"} == {
        "event": "peer_limit", "node": "12D3KooWA", "peer": "12D3KooWB", "limit": "streams"}
    assert (second["event"], second["direction"], second["reason"]) == (
        "network_key_mismatch", "inbound", "network key differs")


@POSIX
def test_the_file_is_private_even_if_it_existed_wider(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("")
    path.chmod(0o644)
    with open_audit_log(path, node="n", max_bytes=4096, backups=1, rate_per_s=1000) as audit:
        for i in range(100):  # enough to rotate: the new file is private too
            audit.record(AuditEvent.INFERENCE, i=i, pad="x" * 100)
    for p in (path, path.with_name("audit.log.1")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_rotation_keeps_max_bytes_per_file_and_backups_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with open_audit_log(path, node="n", max_bytes=4096, backups=2, rate_per_s=1e6) as audit:
        for i in range(500):
            audit.record(AuditEvent.INFERENCE, i=i, pad="x" * 100)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all((tmp_path / n).stat().st_size <= 4096 for n in names)
    assert read(path)[-1]["i"] == 499  # the newest lines are in audit.log
    numbers = [line["i"] for n in reversed(names) for line in read(tmp_path / n)]
    assert numbers == sorted(numbers)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_cut_to_the_rate_and_summarised(tmp_path: Path) -> None:
    clock = FakeClock()
    handler = PrivateRotatingFileHandler(tmp_path / "audit.log", maxBytes=1 << 20,
                                         backupCount=1, encoding="utf-8")
    audit = Auditor(handler, node="n", rate_per_s=2.0, clock=clock)  # burst 4
    for _ in range(10):
        events.peer_limit(audit, peer="p", limit=PeerLimit.STREAMS)
    events.invalid_record(audit, kind="dht", peer=None, key="k", reason="r")  # type: ignore[arg-type]
    clock.now += 1.5
    events.peer_limit(audit, peer="p", limit=PeerLimit.STREAMS)  # 3 tokens back by now
    clock.now += 0.1
    for _ in range(7):
        events.peer_limit(audit, peer="p", limit=PeerLimit.STREAMS)
    audit.close()
    kinds = [line["event"] for line in audit_lines(tmp_path)]
    assert kinds == ["peer_limit"] * 4 + ["invalid_record", "suppressed"] + \
        ["peer_limit"] * 3 + ["suppressed"]
    suppressed = audit_lines(tmp_path, "suppressed")
    assert [(s["suppressed_event"], s["count"]) for s in suppressed] == [
        ("peer_limit", 6), ("peer_limit", 5)]


def test_two_nodes_in_one_process_write_their_own_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with open_audit_log(tmp_path / "a" / "audit.log", node="A", max_bytes=1 << 20,
                        backups=1, rate_per_s=50) as a, \
            open_audit_log(tmp_path / "b" / "audit.log", node="B", max_bytes=1 << 20,
                           backups=1, rate_per_s=50) as b:
        events.peer_limit(a, peer="x", limit=PeerLimit.STREAMS)
        events.peer_limit(b, peer="y", limit=PeerLimit.STREAMS)
        events.peer_limit(a, peer="z", limit=PeerLimit.STREAMS)
    assert [(x["node"], x["peer"]) for x in audit_lines(tmp_path / "a")] == [("A", "x"),
                                                                             ("A", "z")]
    assert [(x["node"], x["peer"]) for x in audit_lines(tmp_path / "b")] == [("B", "y")]


def test_lines_reach_peerllm_audit_handlers_but_not_the_root_logger(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    keep = Keep()
    logging.getLogger(AUDIT_LOGGER).addHandler(keep)
    caplog.set_level(logging.DEBUG)
    try:
        with open_audit_log(tmp_path / "audit.log", node="n", max_bytes=1 << 20, backups=1,
                            rate_per_s=50) as audit:
            events.peer_limit(audit, peer="p", limit=PeerLimit.STREAMS)
    finally:
        logging.getLogger(AUDIT_LOGGER).removeHandler(keep)
    assert [json.loads(r.getMessage())["peer"] for r in got] == ["p"]
    assert got[0].__dict__["audit"]["limit"] == "streams"
    assert not [r for r in caplog.records if r.name == AUDIT_LOGGER]


def test_record_never_raises(tmp_path: Path) -> None:
    class Failing(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            raise OSError("disk full")

    audit = Auditor(Failing(), node="n", rate_per_s=50)
    audit.record(AuditEvent.INFERENCE, model="m")  # logged at debug, not raised


def test_an_unopenable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err, open_audit_log(
            tmp_path / "missing-dir" / "audit.log", node="n", max_bytes=4096, backups=1,
            rate_per_s=1):
        pass
    assert err.value.key == "audit.enabled"
