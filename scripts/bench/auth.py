"""Cost of access control: token verification per request, and rate limiting vs tokens/s.

Two measurements, one run:

  (1) verification: ``Authority.authenticate + authorize + admit`` per request, the work
      the API's guard does, for a token seen before (the usual case: a client reuses its
      token) and for a token never seen (a full Ed25519 + JWT check). Batches of 2,000
      calls, median per call over ``--runs`` batches. Target: ≤ 0.2 ms per request.
  (2) tokens/s through the HTTP API of one node serving the bundled model with
      ``auth.required``: streamed completions with an unlimited token and with a token
      carrying requests/min and tokens/min limits (high enough never to refuse), the two
      interleaved run by run. Target: the ratio is 1 within noise.

    python scripts/bench/auth.py --runs 5 --tokens 64

JSON with every sample goes to scripts/bench/results/auth-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    fmt,
    machine_info,
    median,
    rnd,
    table,
    timestamp_slug,
    verdict,
    write_results,
)

VERIFY_TARGET_MS = 0.2


def bench_verification(runs: int, batch: int) -> dict[str, Any]:
    from peerllm.auth import Authority, Role
    from peerllm.config import AuthConfig

    authority = Authority(data_dir=Path(tempfile.mkdtemp(prefix="peerllm-bench-auth-")),
                          config=AuthConfig(required=True))
    now = int(time.time())
    reused = authority.create_token(subject="bench", roles=[Role.USER], ttl_s=3600, now=now,
                                    requests_per_min=10**9)[0]
    fresh = [authority.create_token(subject=f"b{i}", roles=[Role.USER], ttl_s=3600,
                                    now=now)[0] for i in range(runs * batch)]

    def per_call_ms(tokens: list[str]) -> float:
        t0 = time.perf_counter()
        for token in tokens:
            p = authority.authenticate(f"Bearer {token}", now=now)
            authority.authorize(p, Role.USER, model="m")
            authority.admit(p, now=now)
        return (time.perf_counter() - t0) / len(tokens) * 1000

    cached = [per_call_ms([reused] * batch) for _ in range(runs)]
    uncached = [per_call_ms(fresh[i * batch:(i + 1) * batch]) for i in range(runs)]
    return {"batch": batch, "cached_ms": cached, "uncached_ms": uncached,
            "cached_median_ms": median(cached), "uncached_median_ms": median(uncached)}


async def _stream_tps(http: Any, token: str, model: str, tokens: int) -> dict[str, float]:
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    completion = 0
    async with http.stream("POST", "/v1/completions", json=body,
                           headers={"authorization": f"Bearer {token}"}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                completion = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0].get("text"):
                last = time.perf_counter()
                first = first or last
    assert first is not None and last is not None and completion > 1
    return {"ttft_ms": (first - t0) * 1000, "tokens": completion,
            "tokens_per_s": (completion - 1) / max(last - first, 1e-9)}


async def bench_tokens(runs: int, tokens: int) -> dict[str, Any]:
    import httpx

    import peerllm
    from peerllm.api import open_api
    from peerllm.auth import Role
    from peerllm.config import AuthConfig, config_from_mapping
    from peerllm.inference.catalog import DEFAULT_MODEL_ID

    root = Path(tempfile.mkdtemp(prefix="peerllm-bench-auth-"))
    cfg = config_from_mapping({
        "data_dir": str(root / "node"), "node": {"name": "bench"},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"]},
        "discovery": {"mdns": False, "dht": False}, "api": {"host": "127.0.0.1", "port": 0}})
    cfg = dataclasses.replace(cfg, auth=AuthConfig(required=True))
    samples: dict[str, list[dict[str, float]]] = {"unlimited": [], "rate_limited": []}
    async with peerllm.open_node(cfg) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, timeout=120, trust_env=False) as http:
        now = int(time.time())
        unlimited = node.authority.create_token(subject="free", roles=[Role.USER],
                                                ttl_s=3600, now=now)[0]
        limited = node.authority.create_token(subject="metered", roles=[Role.USER],
                                              ttl_s=3600, now=now, requests_per_min=10_000,
                                              tokens_per_min=10_000_000)[0]
        await _stream_tps(http, unlimited, DEFAULT_MODEL_ID, tokens)  # warm up
        for _ in range(runs):
            samples["unlimited"].append(await _stream_tps(http, unlimited, DEFAULT_MODEL_ID,
                                                          tokens))
            samples["rate_limited"].append(await _stream_tps(http, limited, DEFAULT_MODEL_ID,
                                                             tokens))
    tps = {k: median([s["tokens_per_s"] for s in v]) for k, v in samples.items()}
    ratio = (tps["rate_limited"] / tps["unlimited"]
             if tps["rate_limited"] and tps["unlimited"] else None)
    return {"samples": samples, "median_tokens_per_s": tps, "ratio": ratio,
            "per_run_ratios": [a["tokens_per_s"] / b["tokens_per_s"] for a, b in
                               zip(samples["rate_limited"], samples["unlimited"], strict=True)]}


def main() -> None:
    import trio

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--skip-model", action="store_true", help="only measure verification")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = ap.parse_args()
    doc: dict[str, Any] = {"machine": machine_info(), "args": vars(args) | {"out": str(args.out)}}
    doc["verification"] = v = bench_verification(args.runs, args.batch)
    if not args.skip_model:
        doc["tokens"] = trio.run(bench_tokens, args.runs, args.tokens)
    path = write_results(args.out, "auth", doc, timestamp_slug())
    rows = [["verify, token seen before", fmt(v["cached_median_ms"], " ms", 4),
             f"≤ {VERIFY_TARGET_MS} ms", verdict(v["cached_median_ms"], VERIFY_TARGET_MS)],
            ["verify, new token (Ed25519)", fmt(v["uncached_median_ms"], " ms", 4),
             f"≤ {VERIFY_TARGET_MS} ms", verdict(v["uncached_median_ms"], VERIFY_TARGET_MS)]]
    if "tokens" in doc:
        t = doc["tokens"]
        rows.append(["tokens/s, unlimited token", fmt(t["median_tokens_per_s"]["unlimited"]),
                     "", ""])
        rows.append(["tokens/s, rate-limited token",
                     fmt(t["median_tokens_per_s"]["rate_limited"]), "", ""])
        spread = (statistics.pstdev(t["per_run_ratios"]) if len(t["per_run_ratios"]) > 1
                  else None)
        rows.append(["ratio limited/unlimited", fmt(t["ratio"], "×", 3),
                     "1 within noise", f"per-run sd {fmt(spread, '', 3)}"])
    print(table(rows, ["measure", "median", "target", ""]))
    print(f"\nresults: {path}  (rounded: cached {rnd(v['cached_median_ms'], 4)} ms)")


if __name__ == "__main__":
    main()
