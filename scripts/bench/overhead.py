"""Inference overhead: llama.cpp direct vs llama-cpp-python's server vs our node vs the mesh.

Side by side in one run, same GGUF, prompt, greedy sampling, thread count and token count:
  (a) llama-cpp-python in this process          (b) python -m llama_cpp.server
  (c) our node's API, model served locally      (d) our API on node B, model on node A
Paths are interleaved across runs so machine noise hits all of them alike. Reports the
median tokens/s and time-to-first-token per path, with ratios to (a).

    python scripts/bench/overhead.py --runs 5 --tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    clean_env,
    free_ports,
    machine_info,
    managed_processes,
    table,
    timestamp_slug,
    wait_until,
    write_results,
)

MODEL_ID = "gemma3-270m-q4_k_m"
PROMPT = "Here is a long story about a dragon who lived in the mountains. Once upon a time,"


def model_path() -> Path:
    from peerllm.inference.catalog import assemble_bundled

    return assemble_bundled()


def run_direct(llm: Any, tokens: int, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = last = None
    text, n = [], 0
    for chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, seed=seed,
                                       stream=True):
        piece = chunk["choices"][0]["text"]
        now = time.perf_counter()
        if piece:
            first = first or now
            last = now
            text.append(piece)
        n += 1
    return _sample(t0, first, last, n, "".join(text))


def run_http(base: str, tokens: int, seed: int) -> dict[str, Any]:
    body = {"model": MODEL_ID, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0.0,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    text: list[str] = []
    usage = None
    with httpx.Client(trust_env=False, timeout=300) as http, \
            http.stream("POST", f"{base}/v1/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = choice.get("text") or ""
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(piece)
            usage = chunk.get("usage") or usage
    n = usage["completion_tokens"] if usage else len(text)
    return _sample(t0, first, last, n, "".join(text))


def _sample(t0: float, first: float | None, last: float | None, n: int, text: str
            ) -> dict[str, Any]:
    end = last or time.perf_counter()
    gen_s = (last - first) if first and last and last > first else None
    return {"ttft_ms": None if first is None else (first - t0) * 1000,
            "total_s": end - t0,
            # n-1 intervals between n tokens: the steady decode rate, excluding TTFT.
            "tokens_per_s": None if not gen_s or n < 2 else (n - 1) / gen_s,
            "e2e_tokens_per_s": n / (end - t0) if n else None,
            "tokens": n, "text": text}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--skip-server", action="store_true",
                    help="skip (b) (needs fastapi, uvicorn, sse-starlette, starlette-context, "
                         "pydantic-settings)")
    args = ap.parse_args()
    path = model_path()
    ctx = 2048
    slug = timestamp_slug()
    logs = args.out / f"overhead-{slug}-logs"
    samples: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": [], "d": []}
    env = clean_env(MODEL_THREADS=str(args.threads), MODEL_CONTEXT_SIZE=str(ctx),
                    MODEL_WARMUP_TOKENS="0")

    from peerllm.inference.llama import _peer_llama_class

    llm = _peer_llama_class()(str(path), use_extra_bufts=False, progress=None, n_ctx=ctx,
                              n_threads=args.threads, n_threads_batch=args.threads,
                              verbose=False)
    with managed_processes() as group:
        urls: dict[str, str] = {}
        if not args.skip_server:
            try:
                import llama_cpp.server  # noqa: F401
            except ImportError as exc:
                print(f"(b) skipped: llama_cpp.server extras missing ({exc}); "
                      "pip install fastapi uvicorn sse-starlette starlette-context "
                      "pydantic-settings", file=sys.stderr)
            else:
                (port,) = free_ports(1)
                group.spawn("llama_cpp.server", [
                    sys.executable, "-m", "llama_cpp.server", "--model", str(path),
                    "--model_alias", MODEL_ID, "--n_threads", str(args.threads),
                    "--n_threads_batch", str(args.threads), "--n_ctx", str(ctx),
                    "--host", "127.0.0.1", "--port", str(port)], logs / "b.log", env=env)
                urls["b"] = f"http://127.0.0.1:{port}"
        pa, aa, pb, ab = free_ports(4)
        tmp = logs / "data"
        node_a = group.spawn("node-a", [
            sys.executable, "-m", "peerllm", "node", "--data-dir", str(tmp / "a"), "--name",
            "bench-a", "--listen", f"/ip4/127.0.0.1/tcp/{pa}", "--api", f"127.0.0.1:{aa}",
            "--no-mdns", "--preload", MODEL_ID], logs / "a.log", env=env)
        urls["c"] = f"http://127.0.0.1:{aa}"

        def api_up(url: str) -> bool | None:
            try:
                return httpx.get(url + "/v1/models", trust_env=False, timeout=2).status_code \
                    == 200 or None
            except httpx.HTTPError:
                return None

        for key in list(urls):
            if not wait_until(lambda k=key: api_up(urls[k]), timeout_s=120):
                raise SystemExit(f"path {key} did not come up; see {logs}")
        peer_a = httpx.get(urls["c"] + "/v1/node/info", trust_env=False).json()["node"]["peer_id"]
        group.spawn("node-b", [
            sys.executable, "-m", "peerllm", "node", "--data-dir", str(tmp / "b"), "--name",
            "bench-b", "--listen", f"/ip4/127.0.0.1/tcp/{pb}", "--api", f"127.0.0.1:{ab}",
            "--no-mdns", "--no-default-model", "--bootstrap",
            f"/ip4/127.0.0.1/tcp/{pa}/p2p/{peer_a}"], logs / "b-node.log", env=env)
        urls["d"] = f"http://127.0.0.1:{ab}"

        def b_knows_model() -> bool | None:
            try:
                data = httpx.get(urls["d"] + "/v1/models", trust_env=False, timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return None
            return any(m["id"] == MODEL_ID for m in data.get("data", [])) or None

        if not wait_until(b_knows_model, timeout_s=120):
            raise SystemExit(f"node B never saw A's model; see {logs}")
        paths = ["a", *[k for k in ("b", "c", "d") if k in urls]]
        # Warm-up: model loads, connections, first-request paths.
        for key in paths:
            (run_direct(llm, 8, args.seed) if key == "a" else run_http(urls[key], 8, args.seed))
        for r in range(args.runs):
            for key in paths:
                s = (run_direct(llm, args.tokens, args.seed) if key == "a"
                     else run_http(urls[key], args.tokens, args.seed))
                samples[key].append(s)
                print(f"run {r + 1} {key}: {s['tokens_per_s'] or 0:.1f} tok/s, "
                      f"ttft {s['ttft_ms'] or 0:.1f} ms, {s['tokens']} tokens", file=sys.stderr)
        assert node_a.alive()

    def med(key: str, field: str) -> float | None:
        vals = [s[field] for s in samples[key] if s[field] is not None]
        return statistics.median(vals) if vals else None

    summary: dict[str, Any] = {}
    base_tps = med("a", "tokens_per_s")
    for key in paths:
        tps = med(key, "tokens_per_s")
        summary[key] = {"tokens_per_s": tps, "ttft_ms": med(key, "ttft_ms"),
                        "e2e_tokens_per_s": med(key, "e2e_tokens_per_s"),
                        "ratio_to_a": None if tps is None or not base_tps else tps / base_tps,
                        "tokens": [s["tokens"] for s in samples[key]]}
    texts = {key: samples[key][0]["text"] for key in paths if samples[key]}
    same_text = len(set(texts.values())) == 1
    added_ttft_mesh = (None if med("d", "ttft_ms") is None or med("c", "ttft_ms") is None
                       else med("d", "ttft_ms") - med("c", "ttft_ms"))  # type: ignore[operator]
    targets = [
        ("(c) tokens/s >= 0.97x (a)", summary.get("c", {}).get("ratio_to_a"), 0.97, ">="),
        ("(d) tokens/s >= 0.97x (a)", summary.get("d", {}).get("ratio_to_a"), 0.97, ">="),
        ("added TTFT through the mesh (d)-(c), ms", added_ttft_mesh, 5.0, "<="),
    ]
    if "b" in summary and summary["b"]["tokens_per_s"] and summary["c"]["tokens_per_s"]:
        targets.append(("(c) tokens/s >= (b)", summary["c"]["tokens_per_s"]
                        / summary["b"]["tokens_per_s"], 1.0, ">="))
    verdicts = []
    for name, value, limit, op in targets:
        ok = value is not None and (value >= limit if op == ">=" else value <= limit)
        verdicts.append({"target": name, "value": value, "limit": limit,
                         "verdict": "PASS" if ok else "MISS"})
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info(),
           "model_path": str(path), "prompt": PROMPT, "samples": samples, "summary": summary,
           "same_text_all_paths": same_text, "added_ttft_mesh_ms": added_ttft_mesh,
           "targets": verdicts}
    out = write_results(args.out, "overhead", doc, slug)
    names = {"a": "(a) llama-cpp-python direct", "b": "(b) llama_cpp.server",
             "c": "(c) peerllm node, local", "d": "(d) peerllm via node B"}
    rows = [[names[k], f"{summary[k]['tokens_per_s'] or 0:.1f}",
             f"{summary[k]['ratio_to_a'] or 0:.3f}", f"{summary[k]['ttft_ms'] or 0:.1f}"]
            for k in paths]
    print(table(rows, ["path", "tokens/s (median)", "ratio to (a)", "TTFT ms (median)"]))
    for v in verdicts:
        value = "n/a" if v["value"] is None else f"{v['value']:.3f}"
        print(f"{v['verdict']:4}  {v['target']}: {value} (limit {v['limit']})")
    print(f"identical greedy text on all paths: {same_text}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
