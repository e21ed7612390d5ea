"""The concurrency and soak benchmarks' arithmetic: SSE accounting, ratios, targets.

The benchmarks run for many minutes on real servers; what they conclude from their
samples is checked here on made-up samples, so a wrong ratio or a leak that is not
reported fails fast instead of in a report nobody rereads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[3] / "scripts" / "bench"
sys.path.insert(0, str(BENCH))

import _concurrency_report as conc  # noqa: E402
import _soak_report as soak  # noqa: E402
from _load import Stream, _take_line, metric_value  # noqa: E402


def test_usage_replaces_the_chunk_count_and_done_ends_the_stream() -> None:
    s = Stream(t0=0.0)
    assert not _take_line(s, 'data: {"choices": [{"text": "Hello world"}]}')
    assert not _take_line(s, ": keep-alive")
    assert s.tokens == 1 and s.tokens_source == "chunks"
    assert not _take_line(s, 'data: {"choices": [{"text": "", "finish_reason": "length"}],'
                             ' "usage": {"completion_tokens": 7}}')
    assert (s.tokens, s.tokens_source, s.finish_reason) == (7, "usage", "length")
    assert _take_line(s, "data: [DONE]")


def test_an_error_frame_ends_the_stream_with_the_servers_message() -> None:
    s = Stream(t0=0.0)
    assert _take_line(s, 'data: {"error": {"message": "model busy"}}')
    assert s.error is not None and "model busy" in s.error


def test_metric_value_reads_an_unlabelled_gauge_only() -> None:
    page = ("# HELP peerllm_served_streams x\npeerllm_served_streams_total 9\n"
            "peerllm_served_streams 3.0\n")
    assert metric_value(page, "peerllm_served_streams") == 3.0
    assert metric_value(page, "peerllm_missing") is None
    assert metric_value(None, "peerllm_served_streams") is None


def _conc_sample(path: str, level: int, run: int, agg: float, ttft: float) -> dict[str, Any]:
    return {"path": path, "level": level, "run": run, "aggregate_tokens_per_s": agg,
            "failed": 0, "tokens": 10 * level, "involved": ["node-a"],
            "cpu_ms_per_token": {"node-a": 2.0, "bench": 0.5},
            "streams": [{"ttft_ms": ttft, "stream_tokens_per_s": agg / level}] * level}


def test_scaling_and_path_ratios_are_paired_within_a_run() -> None:
    samples = []
    for run, noise in ((0, 1.0), (1, 0.5)):  # run 1 is a slow run for every path alike
        samples += [_conc_sample("a", 1, run, 10 * noise, 100),
                    _conc_sample("a", 4, run, 25 * noise, 300),
                    _conc_sample("b", 1, run, 9 * noise, 104),
                    _conc_sample("b", 4, run, 25 * noise, 310)]
    doc = {"samples": samples, "args": {"levels": [1, 4]}, "paths": ["a", "b"]}
    summary, targets = conc.summarize(doc)
    by_name = {t["target"]: t for t in targets}
    assert summary["scaling"]["a"][4] == 2.5
    assert by_name["(a) aggregate at 4 streams / at 1"]["verdict"] == "PASS"
    assert by_name["(b) / (a) aggregate at 1"]["verdict"] == "MISS"  # 0.9 < 0.95
    assert by_name["mesh-added TTFT (b)-(a) at 1 stream, ms"]["value"] == 4.0
    assert summary["cells"]["a@4"]["server_cpu_ms_per_token"] == 2.0  # the client apart


def _soak_doc(rss: list[float], fds_after: int, served_after: int,
              opened_after: int = 0) -> dict[str, Any]:
    def reading(t: float, phase: str, rss_mb: float, fds: int, served: int,
                opened: int = 0) -> dict[str, Any]:
        return {"t_s": t, "phase": phase,
                "nodes": {"n0": {"rss_mb": rss_mb, "fds": fds, "served_streams": served,
                                 "opened_active": opened, "opened_idle": 2}}}

    samples = [reading(0.0, "idle-before", rss[0], 20, 0)]
    samples += [reading(10.0 * (i + 1), "load", v, 30, 2, 3) for i, v in enumerate(rss)]
    samples.append(reading(10.0 * (len(rss) + 2), "idle-after", rss[-1], fds_after,
                           served_after, opened_after))
    requests = [{"start_s": 1.0 + 10 * i, "ok": i != 3, "error": None if i != 3 else "HTTP 503",
                 "disconnected": False, "tokens": 5, "ttft_ms": 100.0, "entry": "n0",
                 "served_by": "peer0"} for i in range(12)]
    return {"requests": requests, "samples": samples, "args": {"minutes": 2.0},
            "nodes": {"n0": {"peer_id": "peer0"}}}


def test_soak_flags_failures_rss_growth_and_leaked_fds_and_streams() -> None:
    # Warm-up is 24 s of a 2-minute run: the baseline is the reading at 30 s (100 MB).
    doc = _soak_doc([90.0, 95.0, 100.0, 101.0, 103.0, 108.0], fds_after=30, served_after=1,
                    opened_after=1)
    summary, targets = soak.summarize(doc)
    verdicts = {t["target"]: t["verdict"] for t in targets}
    assert summary["failed"] == 1 and summary["failure_reasons"] == [("HTTP 503", 1)]
    assert summary["nodes"]["n0"]["rss_growth_pct"] == 8.0
    assert verdicts["failed requests == 0"] == "MISS"
    assert verdicts["n0: RSS growth after warm-up < 5.0 %"] == "MISS"
    assert verdicts["n0: idle fds after - before <= 4"] == "MISS"
    assert verdicts["n0: served libp2p streams when idle == 0"] == "MISS"
    assert verdicts["n0: opened libp2p streams answering when idle == 0"] == "MISS"
    assert verdicts["n0: opened streams kept for reuse <= 8"] == "PASS"
    assert summary["placement"] == {"n0": {"n0": 12}}


def test_a_clean_soak_passes() -> None:
    doc = _soak_doc([90.0, 100.0, 100.5, 101.0, 101.0, 101.5], fds_after=21, served_after=0)
    for r in doc["requests"]:
        r["ok"], r["error"] = True, None
    _, targets = soak.summarize(doc)
    assert {t["verdict"] for t in targets} == {"PASS"}
