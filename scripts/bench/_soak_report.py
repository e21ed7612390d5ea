"""The soak benchmark's summary: failures, RSS growth, fds and served streams before/after,
p95 TTFT per minute, the targets, and the printed report."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from _common import fmt, median, percentile, rnd, table
from _concurrency_report import omp_text

RSS_GROWTH_TARGET_PCT = 5.0
FD_SLACK = 4  # idle fds after vs before: a DHT or mesh connection may come and go
KEPT_STREAMS_MAX = 8  # p2p.infer_idle_streams_per_peer (4) x the two other nodes
TTFT_STABLE_FACTOR = 1.5  # no minute's p95 TTFT above this x the median minute's
WARMUP_MAX_S = 60.0
WARMUP_SHARE = 0.2  # of a run shorter than 5 minutes


def warmup_s(minutes: float) -> float:
    return min(WARMUP_MAX_S, WARMUP_SHARE * minutes * 60)


def _node_series(samples: Sequence[Mapping[str, Any]], node: str, field: str,
                 phase: str) -> list[tuple[float, Any]]:
    return [(s["t_s"], s["nodes"][node][field]) for s in samples
            if s["phase"] == phase and s["nodes"][node].get(field) is not None]


def _first(series: Sequence[tuple[float, Any]]) -> Any:
    return series[0][1] if series else None


def _node_summary(samples: Sequence[Mapping[str, Any]], node: str, warm: float
                  ) -> dict[str, Any]:
    load_rss = _node_series(samples, node, "rss_mb", "load")
    after_warm = [v for t, v in load_rss if t >= warm]
    base = after_warm[0] if after_warm else None
    last = after_warm[-1] if after_warm else None
    growth = None if not base or last is None else (last - base) / base * 100
    peak = None if not base else (max(after_warm) - base) / base * 100
    out: dict[str, Any] = {"rss_mb_after_warmup": rnd(base, 1), "rss_mb_last": rnd(last, 1),
                           "rss_growth_pct": rnd(growth, 2), "rss_peak_growth_pct": rnd(peak, 2),
                           "rss_mb_idle_before": rnd(_first(_node_series(
                               samples, node, "rss_mb", "idle-before")), 1),
                           "rss_mb_idle_after": rnd(_first(_node_series(
                               samples, node, "rss_mb", "idle-after")), 1)}
    for field in ("fds", "served_streams", "opened_active", "opened_idle"):
        load = [v for _, v in _node_series(samples, node, field, "load")]
        out[field] = {"idle_before": _first(_node_series(samples, node, field, "idle-before")),
                      "load_max": max(load) if load else None,
                      "idle_after": _first(_node_series(samples, node, field, "idle-after"))}
    return out


def _timeline(samples: Sequence[Mapping[str, Any]], load_start: float
              ) -> list[dict[str, Any]]:
    """Per minute of load, each node's last reading in it: RSS MB, fds, served streams."""
    last: dict[int, Mapping[str, Any]] = {}
    for s in samples:
        if s["phase"] == "load":
            last[int((s["t_s"] - load_start) // 60)] = s
    return [{"minute": m, "nodes": {n: {"rss_mb": rnd(v["rss_mb"], 1), "fds": v["fds"],
                                        "served_streams": v["served_streams"]}
                                    for n, v in s["nodes"].items()}}
            for m, s in sorted(last.items())]


def _minutes(requests: Sequence[Mapping[str, Any]], load_start: float
             ) -> list[dict[str, Any]]:
    by_min: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in requests:
        by_min[int((r["start_s"] - load_start) // 60)].append(r)
    rows = []
    for minute in sorted(by_min):
        rs = by_min[minute]
        ttfts = [r["ttft_ms"] for r in rs if r["ttft_ms"] is not None]
        rows.append({"minute": minute, "requests": len(rs),
                     "failed": sum(not r["ok"] for r in rs),
                     "disconnected": sum(r["disconnected"] for r in rs),
                     "tokens": sum(r["tokens"] for r in rs),
                     "ttft_ms_p50": rnd(percentile(ttfts, 50), 1),
                     "ttft_ms_p95": rnd(percentile(ttfts, 95), 1)})
    return rows


def _placement(requests: Sequence[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, dict[str, int]]:
    """Per entry node, how many of its requests each node served (the router's choices)."""
    names = {v["peer_id"]: n for n, v in nodes.items()}
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for r in requests:
        out[r["entry"]][names.get(r["served_by"], str(r["served_by"]))] += 1
    return {entry: dict(c) for entry, c in sorted(out.items())}


def _target(name: str, ok: bool | None, value: Any) -> dict[str, Any]:
    return {"target": name, "value": value,
            "verdict": "n/a" if ok is None else "PASS" if ok else "MISS"}


def summarize(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reqs, samples = doc["requests"], doc["samples"]
    load_start = min((s["t_s"] for s in samples if s["phase"] == "load"), default=0.0)
    load_start = min([load_start, *(r["start_s"] for r in reqs)])
    warm = warmup_s(doc["args"]["minutes"])
    nodes = {n: _node_summary(samples, n, load_start + warm) for n in doc["nodes"]}
    minutes = _minutes(reqs, load_start)
    failed = [r for r in reqs if not r["ok"]]
    summary: dict[str, Any] = {
        "requests": len(reqs), "failed": len(failed),
        "disconnected": sum(r["disconnected"] for r in reqs),
        "completion_tokens": sum(r["tokens"] for r in reqs),
        "failure_reasons": Counter(str(r["error"]) for r in failed).most_common(10),
        "warmup_s": warm, "nodes": nodes, "minutes": minutes,
        "timeline": _timeline(samples, load_start),
        "placement": _placement(reqs, doc["nodes"])}
    steady = [m["ttft_ms_p95"] for m in minutes[1:] if m["ttft_ms_p95"] is not None] \
        if len(minutes) > 1 else [m["ttft_ms_p95"] for m in minutes if m["ttft_ms_p95"]]
    mid = median(steady)
    worst = max(steady) if steady else None
    targets = [_target("failed requests == 0", len(failed) == 0, len(failed))]
    for n, s in nodes.items():
        g = s["rss_growth_pct"]
        targets.append(_target(f"{n}: RSS growth after warm-up < {RSS_GROWTH_TARGET_PCT} %",
                               None if g is None else g < RSS_GROWTH_TARGET_PCT, g))
        fb, fa = s["fds"]["idle_before"], s["fds"]["idle_after"]
        targets.append(_target(f"{n}: idle fds after - before <= {FD_SLACK}",
                               None if fb is None or fa is None else fa - fb <= FD_SLACK,
                               None if fb is None or fa is None else fa - fb))
        sa = s["served_streams"]["idle_after"]
        targets.append(_target(f"{n}: served libp2p streams when idle == 0",
                               None if sa is None else sa == 0, sa))
        oa, oi = s["opened_active"]["idle_after"], s["opened_idle"]["idle_after"]
        targets.append(_target(f"{n}: opened libp2p streams answering when idle == 0",
                               None if oa is None else oa == 0, oa))
        targets.append(_target(f"{n}: opened streams kept for reuse <= {KEPT_STREAMS_MAX}",
                               None if oi is None else oi <= KEPT_STREAMS_MAX, oi))
    targets.append(_target(f"p95 TTFT per minute <= {TTFT_STABLE_FACTOR}x the median minute",
                           None if mid is None or worst is None
                           else worst <= TTFT_STABLE_FACTOR * mid,
                           {"median_ms": mid, "worst_ms": worst}))
    return summary, targets


def print_report(doc: Mapping[str, Any]) -> None:
    s, args, m = doc["summary"], doc["args"], doc["machine"]
    print(f"\nsoak: 3 nodes, {args['clients']} clients, {args['minutes']:g} min, "
          f"{args['threads']} thread(s) per node, slots "
          f"{[n['slots'] for n in doc['nodes'].values()]}; {omp_text(doc)}; load "
          f"average {m['load_average_at_start']} at start, "
          f"{[round(x, 2) for x in doc['load_average_at_end']]} at end ({m['nproc']} cores)")
    print(f"requests {s['requests']} (hung up by us {s['disconnected']}), failed "
          f"{s['failed']}, completion tokens {s['completion_tokens']}")
    for reason, count in s["failure_reasons"]:
        print(f"  {count} x {reason}")
    for entry, served in s["placement"].items():
        print(f"  entered at {entry}: served by " + ", ".join(
            f"{n} {c}" for n, c in sorted(served.items())))
    rows = [[n, fmt(v["rss_mb_idle_before"], digits=1), fmt(v["rss_mb_after_warmup"], digits=1),
             fmt(v["rss_mb_last"], digits=1), fmt(v["rss_growth_pct"], " %"),
             fmt(v["rss_mb_idle_after"], digits=1),
             "/".join(str(v["fds"][k]) for k in ("idle_before", "load_max", "idle_after")),
             "/".join(str(v["served_streams"][k])
                      for k in ("idle_before", "load_max", "idle_after"))]
            for n, v in s["nodes"].items()]
    print(table(rows, ["node", "RSS idle MB", "after warm-up", "last", "growth",
                       "idle after", "fds idle/max/idle", "streams idle/max/idle"]))
    names = list(s["nodes"])
    readings = {t["minute"]: t["nodes"] for t in s["timeline"]}
    rows = [[str(r["minute"]), str(r["requests"]), str(r["failed"]), str(r["disconnected"]),
             str(r["tokens"]), fmt(r["ttft_ms_p50"], digits=0), fmt(r["ttft_ms_p95"], digits=0),
             *("/".join(str(readings.get(r["minute"], {}).get(n, {}).get(k, "–"))
                        for k in ("rss_mb", "fds", "served_streams")) for n in names)]
            for r in s["minutes"]]
    print(table(rows, ["minute", "requests", "failed", "hung up", "tokens", "TTFT p50 ms",
                       "TTFT p95 ms", *(f"{n} MB/fds/streams" for n in names)]))
    print()
    for t in doc["targets"]:
        print(f"{t['verdict']:4}  {t['target']}: {t['value']}")
