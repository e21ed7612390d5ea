"""Continuous batching: aggregate tokens/s of one model at 1, 2, 4, 8 concurrent streams.

In process, on the bundled gemma3-270m-q4_k_m, greedy (or --temperature), n_threads 2
(the machine has 2 cores). Two contexts on the same file:

  single   today's path: one LlamaInstance, one request at a time (the baseline rate)
  batched  one BatchedLlamaInstance with --parallel slots: C threads call generate at
           once, every active sequence shares one llama_decode per step

Per run and concurrency C it records the wall time from releasing the C requests to the
last one finishing, the completion tokens, aggregate tokens/s (tokens / wall time, so
prompt prefill is included), TTFT per stream, and the decode steps taken with how many
sequences each held, and the CPU seconds of this process (all threads), because on a
shared machine the wall clock mostly measures the neighbours. Each level is paired with a
single-stream run just before it (single, C=1, single, C=2, ...); the medians over --runs
of the paired ratios are reported against the issue's targets (>= 2.0x the
single-stream rate at 4 streams, >= 2.5x at 8), with tokens per CPU-second beside them.
JSON with every sample goes to scripts/bench/results/batching-<timestamp>.json.

OMP_WAIT_POLICY: llama-cpp-python's wheel uses OpenMP. With libgomp's default (spin, then
sleep), a long-lived thread that decodes again and again (the batch's step thread, or a
reused trio worker thread) burned 5-10x the CPU per token on this shared 2-core machine;
PASSIVE made it steady. The benchmark sets PASSIVE unless --omp-wait default is given
(it must be set before llama.cpp is loaded).

    python scripts/bench/batching.py --runs 3 --tokens 64
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_RESULTS_DIR,
    fmt,
    machine_info,
    median,
    table,
    timestamp_slug,
    write_results,
)

from peerllm.inference.backend import ModelInstance, OpenOptions
from peerllm.inference.batched_llama import BatchedLlamaInstance
from peerllm.inference.catalog import assemble_bundled
from peerllm.inference.llama import LlamaBackend
from peerllm.inference.request import SamplingParams

PROMPTS = ("Once upon a time, in a small village by the sea,",
           "The history of the Roman Empire begins",
           "Here is a recipe for a simple tomato soup:",
           "The three laws of thermodynamics are",
           "In computer science, a hash table is",
           "Dear diary, today I went to the market and",
           "The quick brown fox jumps over the lazy dog. Then",
           "A guide to planting a vegetable garden: first,")
TARGETS = {4: 2.0, 8: 2.5}


def verdict(ratio: float | None, target: float) -> str:
    return "n/a" if ratio is None else "PASS" if ratio >= target else "MISS"


def stream_set(instance: ModelInstance, concurrency: int, tokens: int,
               temperature: float = 0.0) -> dict[str, Any]:
    """C requests released together; wall time, tokens and TTFTs. Temperature 0 is
    greedy; above it each stream draws with its own seed (reproducible across runs)."""
    params = [SamplingParams(max_tokens=tokens, temperature=temperature, seed=i)
              for i in range(concurrency)]
    encoded = [instance.encode(messages=None, prompt=PROMPTS[i % len(PROMPTS)],
                               resume_text="") for i in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    produced = [0] * concurrency
    ttft: list[float | None] = [None] * concurrency
    t0 = [0.0]

    def run(i: int) -> None:
        def emit(_text: str, _n: int) -> None:
            if ttft[i] is None:
                ttft[i] = time.perf_counter() - t0[0]

        start.wait()
        outcome = instance.generate(encoded[i], params[i], emit=emit,
                                    should_stop=lambda: False)
        produced[i] = outcome.completion_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu0 = _cpu_s()
    t0[0] = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0[0]
    cpu = _cpu_s() - cpu0
    return {"concurrency": concurrency, "wall_s": wall, "cpu_s": cpu, "tokens": sum(produced),
            "aggregate_tps": sum(produced) / wall,
            "tokens_per_cpu_s": sum(produced) / cpu if cpu > 0 else None, "ttft_s": ttft}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (llama.cpp's OpenMP team too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64, help="completion tokens per stream")
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0 = greedy (the default); e.g. 0.8 measures sampled requests")
    ap.add_argument("--omp-wait", choices=("passive", "default"), default="passive")
    ap.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = ap.parse_args()
    if args.omp_wait == "passive":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before llama_cpp loads
    levels = [int(x) for x in args.levels.split(",")]
    machine = machine_info()
    path = assemble_bundled()
    backend = LlamaBackend()

    def opts(parallel: int) -> OpenOptions:
        return OpenOptions(model_id="gemma", context_size=1024, n_threads=args.threads,
                           parallel=parallel)

    single = backend.open(path, opts(1), should_stop=lambda: False)
    batched = backend.open(path, opts(max(levels)), should_stop=lambda: False)
    assert isinstance(batched, BatchedLlamaInstance)
    samples: list[dict[str, Any]] = []
    try:
        stream_set(single, 1, 8)  # warm both: thread start-up, page faults of the weights
        stream_set(batched, 2, 8)
        for run in range(args.runs):
            for level in levels:
                # Paired: the single-stream rate is measured right before each level, so
                # the ratio compares two runs a few seconds apart on a shared machine.
                base = stream_set(single, 1, args.tokens, args.temperature)
                samples.append({"run": run, "path": "single", "before": level, **base})
                before = batched.statistics()
                got = stream_set(batched, level, args.tokens, args.temperature)
                after = batched.statistics()
                steps = after.decode_calls - before.decode_calls
                seqs = sum(w * (n - before.steps_by_width.get(w, 0))
                           for w, n in after.steps_by_width.items())
                samples.append({"run": run, "path": "batched", **got, "decode_calls": steps,
                                "mean_sequences_per_step": seqs / steps if steps else None,
                                "ratio_to_single": got["aggregate_tps"] / base["aggregate_tps"],
                                "cpu_ratio_to_single": _ratio(got["tokens_per_cpu_s"],
                                                              base["tokens_per_cpu_s"])})
                print(f"run {run} C={level}: {got['aggregate_tps']:.1f} tok/s "
                      f"(single {base['aggregate_tps']:.1f})", flush=True)
    finally:
        batched.close()
        single.close()

    singles = [s for s in samples if s["path"] == "single"]
    single_tps = median([s["aggregate_tps"] for s in singles])
    single_cpu = median([s["tokens_per_cpu_s"] for s in singles])
    rows, summary = [], {}
    for level in levels:
        mine = [s for s in samples if s["path"] == "batched" and s["concurrency"] == level]
        tps = median([s["aggregate_tps"] for s in mine])
        ttfts = [t for s in mine for t in s["ttft_s"] if t is not None]
        ratio = median([s["ratio_to_single"] for s in mine])
        cpu_ratio = median([s["cpu_ratio_to_single"] for s in mine])
        width = median([s["mean_sequences_per_step"] for s in mine])
        target = TARGETS.get(level)
        summary[str(level)] = {"aggregate_tps": tps, "ratio_to_single": ratio,
                               "per_stream_tps": tps / level if tps else None,
                               "tokens_per_cpu_s": median([s["tokens_per_cpu_s"] for s in mine]),
                               "cpu_ratio_to_single": cpu_ratio,
                               "ttft_p50_s": median(ttfts), "mean_sequences_per_step": width,
                               "target": target, "verdict": verdict(ratio, target)
                               if target else None}
        rows.append([str(level), fmt(tps), fmt(tps / level if tps else None),
                     fmt(ratio, "x"), fmt(cpu_ratio, "x"), fmt(median(ttfts), " s", 3),
                     fmt(width), f">= {target}x {verdict(ratio, target)}" if target else "-"])
    print(f"\nsingle-stream (today's path): {fmt(single_tps)} tok/s and {fmt(single_cpu)} "
          f"tokens per CPU-second, medians of {len(singles)} runs; {args.tokens} tokens per "
          f"stream, n_threads {args.threads}; load average at start "
          f"{machine['load_average_at_start']} on {machine['cpus_usable']} cpus")
    print("'vs single' = median of paired ratios (each level against a single-stream run just "
          "before it); 'CPU eff.' = the same for tokens per CPU-second of this process")
    print(table(rows, ["streams", "aggregate tok/s", "per stream", "vs single", "CPU eff.",
                       "TTFT p50", "seqs/step", "target"]))
    doc = {"benchmark": "batching", "machine": machine,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "args": vars(args) | {"out": str(args.out)}, "single_tps": single_tps,
           "single_tokens_per_cpu_s": single_cpu, "summary": summary, "samples": samples}
    out = write_results(args.out, "batching", doc, timestamp_slug())
    print(f"\nraw samples: {out}")


if __name__ == "__main__":
    main()
