"""The concurrency benchmark's summary: medians per path and level, the issue's targets,
the printed tables and the PNG plot (matplotlib, optional)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import fmt, median, percentile, rnd, table

PATH_NAMES = {"a": "(a) node, local", "b": "(b) node B -> A", "c": "(c) llama_cpp.server",
              "d": "(d) llama-server"}
SCALING_TARGETS = {4: 2.0, 8: 2.5}  # aggregate at C streams >= this x the rate at 1 stream
A_VS_D_TARGET = 0.9
B_VS_A_TARGET = 0.95
MESH_TTFT_TARGET_MS = 5.0


def _by(samples: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    out: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for s in samples:
        out[(s["path"], s["level"])].append(s)
    return out


def _paired(samples: Sequence[Mapping[str, Any]], x: tuple[str, int], y: tuple[str, int]
            ) -> float | None:
    """Median over runs of agg(x) / agg(y), both from the same run."""
    runs: dict[int, dict[tuple[str, int], float]] = defaultdict(dict)
    for s in samples:
        if s["aggregate_tokens_per_s"]:
            runs[s["run"]][(s["path"], s["level"])] = s["aggregate_tokens_per_s"]
    return median([r[x] / r[y] for r in runs.values() if x in r and y in r and r[y]])


def _cell(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    streams = [st for s in group for st in s["streams"]]
    ttfts = [st["ttft_ms"] for st in streams if st["ttft_ms"] is not None]
    per_stream = [st["stream_tokens_per_s"] for st in streams
                  if st["stream_tokens_per_s"] is not None]
    involved = group[0]["involved"]
    cpu = {n: median([s["cpu_ms_per_token"].get(n) for s in group])
           for n in [*involved, "bench"]}
    return {"n": len(group), "aggregate_tokens_per_s": median(
                [s["aggregate_tokens_per_s"] for s in group]),
            "per_stream_tokens_per_s": median(per_stream),
            "ttft_ms_p50": percentile(ttfts, 50), "ttft_ms_p95": percentile(ttfts, 95),
            "failed": sum(s["failed"] for s in group),
            "tokens": [s["tokens"] for s in group],
            "cpu_ms_per_token": cpu,
            "server_cpu_ms_per_token": sum(v for n, v in cpu.items()
                                           if n != "bench" and v is not None)}


def _target(name: str, value: float | None, op: str, limit: float) -> dict[str, Any]:
    verdict = "n/a" if value is None else "PASS" if (
        value >= limit if op == ">=" else value <= limit) else "MISS"
    return {"target": name, "value": rnd(value, 3), "op": op, "limit": limit,
            "verdict": verdict}


def summarize(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    samples = doc["samples"]
    levels = doc["args"]["levels"]
    paths = doc["paths"]
    cells = {f"{k}@{c}": _cell(g) for (k, c), g in sorted(_by(samples).items())}
    summary: dict[str, Any] = {"cells": cells, "scaling": {}, "ratios": {}}
    targets: list[dict[str, Any]] = []
    for key in paths:
        summary["scaling"][key] = {c: rnd(_paired(samples, (key, c), (key, 1)), 3)
                                   for c in levels}
    for c, limit in SCALING_TARGETS.items():
        if c in levels:
            targets.append(_target(f"(a) aggregate at {c} streams / at 1",
                                   _paired(samples, ("a", c), ("a", 1)), ">=", limit))
    for x, y, limit in (("a", "d", A_VS_D_TARGET), ("b", "a", B_VS_A_TARGET)):
        if x in paths and y in paths:
            ratios = {c: _paired(samples, (x, c), (y, c)) for c in levels}
            summary["ratios"][f"{x}/{y}"] = {c: rnd(v, 3) for c, v in ratios.items()}
            for c, v in ratios.items():
                targets.append(_target(f"({x}) / ({y}) aggregate at {c}", v, ">=", limit))
    if "b" in paths and 1 in levels:
        added = _mesh_ttft(samples)
        summary["mesh_added_ttft_ms_at_1"] = rnd(added, 3)
        targets.append(_target("mesh-added TTFT (b)-(a) at 1 stream, ms", added, "<=",
                               MESH_TTFT_TARGET_MS))
    summary["failed_requests"] = sum(s["failed"] for s in samples)
    return summary, targets


def _mesh_ttft(samples: Sequence[Mapping[str, Any]]) -> float | None:
    """Median TTFT of (b) minus median TTFT of (a), at one stream."""
    def ttft(key: str) -> float | None:
        return median([st["ttft_ms"] for s in samples if s["path"] == key and s["level"] == 1
                       for st in s["streams"]])

    a, b = ttft("a"), ttft("b")
    return None if a is None or b is None else b - a


def omp_text(doc: Mapping[str, Any]) -> str:
    """How the run set OMP_WAIT_POLICY for its servers (doc["environment"])."""
    policy = (doc.get("environment") or {}).get("OMP_WAIT_POLICY")
    return f"OMP_WAIT_POLICY={policy}" if policy else "OMP_WAIT_POLICY unset"


def print_report(doc: Mapping[str, Any]) -> None:
    summary, args = doc["summary"], doc["args"]
    m = doc["machine"]
    print(f"\nconcurrency: {doc['model']['file']}, {args['tokens']} tokens per stream, "
          f"{args['threads']} threads, {doc['slots']} slots on (a)/(b)/(d), greedy, "
          f"medians over {args['runs']} interleaved run(s); {omp_text(doc)} on "
          f"every process; load average {m['load_average_at_start']} at start, "
          f"{[round(x, 2) for x in doc['load_average_at_end']]} at end "
          f"({m['nproc']} cores)")
    for key, reason in doc["skipped"].items():
        print(f"SKIPPED {PATH_NAMES[key]}: {reason}")
    rows = []
    for key in doc["paths"]:
        for c in args["levels"]:
            cell = summary["cells"].get(f"{key}@{c}")
            if cell is None:
                continue
            cpu = cell["cpu_ms_per_token"]
            rows.append([f"{PATH_NAMES[key]} C={c}", fmt(cell["aggregate_tokens_per_s"], digits=1),
                         fmt(summary["scaling"][key].get(c), "x"),
                         fmt(cell["per_stream_tokens_per_s"], digits=1),
                         fmt(cell["ttft_ms_p50"], digits=1), fmt(cell["ttft_ms_p95"], digits=1),
                         " ".join(f"{n}={fmt(v, digits=2)}" for n, v in cpu.items()),
                         str(cell["failed"])])
    print(table(rows, ["path, streams", "agg tok/s", "x C=1", "stream tok/s", "TTFT p50 ms",
                       "TTFT p95 ms", "CPU ms/token per process", "failed"]))
    print()
    for t in doc["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"{t['verdict']:4}  {t['target']}: {value} (target {t['op']} {t['limit']})")
    print(f"      failed requests: {summary['failed_requests']}")


def plot(doc: Mapping[str, Any], out: Path) -> Path | None:
    """Aggregate tokens/s and TTFT p95 against concurrency, one line per path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = doc["args"]["levels"]
    cells = doc["summary"]["cells"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in doc["paths"]:
        xs = [c for c in levels if f"{key}@{c}" in cells]
        left.plot(xs, [cells[f"{key}@{c}"]["aggregate_tokens_per_s"] for c in xs], "o-",
                  label=PATH_NAMES[key])
        right.plot(xs, [cells[f"{key}@{c}"]["ttft_ms_p95"] for c in xs], "o-",
                   label=PATH_NAMES[key])
    for ax, ylabel in ((left, "aggregate tokens/s"), (right, "TTFT p95 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    right.set_yscale("log")  # queueing beyond the slots makes p95 grow by orders
    left.legend(fontsize=8)
    fig.suptitle(f"{doc['model']['file']}: {doc['slots']} slots, "
                 f"{doc['args']['threads']} threads, {doc['args']['tokens']} tokens/stream")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
