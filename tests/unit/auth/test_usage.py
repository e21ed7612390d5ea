"""The usage ledger: totals by subject, peer and model that survive restarts and rotation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from peerllm.auth.journal import Journal
from peerllm.auth.usage import UsageLedger, UsageRecord

LOCAL = UsageRecord(kind="local", at=1.0, subject="alice", token_id="t1", model="m",
                    peer="12D3KooWself", request_id=None, tokens_in=5, tokens_out=3, gen_s=0.5)
FORWARDED = dataclasses.replace(LOCAL, kind="forwarded", peer="12D3KooWa", request_id=7,
                                receipt="h.p.s", verified=True)
SERVED = dataclasses.replace(LOCAL, kind="served", subject="bob", model="n",
                             peer="12D3KooWb", request_id=9, receipt="h.p.s2")


def test_totals_by_each_dimension() -> None:
    ledger = UsageLedger(None)
    for rec in (LOCAL, FORWARDED, FORWARDED, SERVED):
        ledger.record(rec)
    assert ledger.rows("subject") == [
        {"subject": "alice", "requests": 3, "tokens_in": 15, "tokens_out": 9, "gen_s": 1.5},
        {"subject": "bob", "requests": 1, "tokens_in": 5, "tokens_out": 3, "gen_s": 0.5}]
    assert ledger.rows("peer") == [
        {"peer": "12D3KooWa", "relation": "served_by", "requests": 2, "tokens_in": 10,
         "tokens_out": 6, "gen_s": 1.0},
        {"peer": "12D3KooWb", "relation": "forwarded_by", "requests": 1, "tokens_in": 5,
         "tokens_out": 3, "gen_s": 0.5},
        {"peer": "12D3KooWself", "relation": "served_by", "requests": 1, "tokens_in": 5,
         "tokens_out": 3, "gen_s": 0.5}]
    assert [(r["model"], r["requests"]) for r in ledger.rows("model")] == [("m", 3), ("n", 1)]
    with pytest.raises(ValueError, match="subject, peer, model"):
        ledger.rows("colour")
    assert ledger.recent()[-1] == SERVED


def test_totals_and_receipts_survive_a_restart(tmp_path: Path) -> None:
    first = UsageLedger(tmp_path)
    for rec in (LOCAL, FORWARDED, SERVED):
        first.record(rec)
    again = UsageLedger(tmp_path)
    for by in ("subject", "peer", "model"):
        assert again.rows(by) == first.rows(by)
    receipts = [json.loads(line) for f in again.files() if "receipts" in f.name
                for line in f.read_text().splitlines()]
    assert [UsageRecord.from_json(r) for r in receipts] == [FORWARDED, SERVED]
    assert again.recent() == []  # only this run's


def test_rotation_folds_old_files_into_exact_totals(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path, max_file_bytes=600, keep_files=2)
    for i in range(40):
        ledger.record(dataclasses.replace(FORWARDED, request_id=i))
    files = [f for f in ledger.files() if "receipts" in f.name]
    assert len(files) == 2 and all(f.stat().st_size <= 600 for f in files)
    assert (tmp_path / "receipts-base.json").exists()
    expected = {"subject": "alice", "requests": 40, "tokens_in": 200, "tokens_out": 120,
                "gen_s": 20.0}
    assert ledger.rows("subject") == [expected]
    assert UsageLedger(tmp_path, max_file_bytes=600, keep_files=2).rows("subject") == [expected]


def test_a_crash_mid_fold_neither_loses_nor_double_counts(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path, max_file_bytes=600, keep_files=2)
    for i in range(20):
        ledger.record(dataclasses.replace(FORWARDED, request_id=i))
    base = json.loads((tmp_path / "receipts-base.json").read_text())
    # The base was written but the folded file not yet removed: put one back.
    folded = tmp_path / f"receipts-{base['through']:06d}.jsonl"
    folded.write_text(json.dumps(dataclasses.asdict(FORWARDED)) + "\n")
    assert UsageLedger(tmp_path, max_file_bytes=600, keep_files=2).rows("subject")[0][
        "requests"] == 20
    assert not folded.exists()


def test_a_torn_last_line_is_skipped_and_not_glued_to(tmp_path: Path) -> None:
    UsageLedger(tmp_path).record(LOCAL)
    path = tmp_path / "local-000001.jsonl"
    with path.open("ab") as fh:
        fh.write(b'{"kind": "loc')  # the crash
    ledger = UsageLedger(tmp_path)
    assert ledger.rows("subject")[0]["requests"] == 1
    ledger.record(LOCAL)
    assert UsageLedger(tmp_path).rows("subject")[0]["requests"] == 2
    assert (tmp_path / "local-000002.jsonl").exists()


def test_an_unwritable_folder_still_counts(tmp_path: Path) -> None:
    blocker = tmp_path / "usage"
    blocker.write_text("a file where the folder should be")
    ledger = UsageLedger(blocker)
    ledger.record(LOCAL)
    assert ledger.rows("subject")[0]["requests"] == 1


def test_journal_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Journal(Path("."), "x", fold=lambda base, lines: base, keep=0)
