"""Prefix affinity: TTFT of a chat's second turn through the mesh, with and without it.

Three in-process nodes on 127.0.0.1: A and B serve the bundled gemma3-270m-q4_k_m with
continuous batching (--parallel slots, 1 llama thread each), C serves nothing and takes
the client's requests. Each run holds two conversations, each with a long system prompt
(about --system-tokens tokens, unique from its first word so no other slot shares it):

  on   turn one on the holder's own engine (A in even runs, B in odd ones); once C sees
       the holder advertise the conversation (node-info ModelInfo.prefixes), turn two
       goes to C's API with no session key, affinity on
  off  the same, with C's scheduling.affinity off: C ranks A and B as usual (which
       usually means one of them, whichever ranks better, for every request)
  elsewhere  the baseline: C is told the holder is busy, so turn two goes to the other
       node, which prefills the whole conversation

and records, per second turn, the time to the first streamed token at the client, whether
the holder served it, and the prompt tokens the serving node's batch reused (its
statistics). The three are interleaved (on, off, elsewhere, on, ...). Medians over --runs go to
the summary; every sample to scripts/bench/results/affinity-<timestamp>.json.

OMP_WAIT_POLICY=PASSIVE is set for the process (before llama.cpp loads), as batching.py
does.

    nice -n 10 python scripts/bench/affinity.py --runs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
    table,
    timestamp_slug,
    write_results,
)

MODEL = "gemma3-270m-q4_k_m"
MODES = ("on", "off", "elsewhere")
STORY = ("the quick brown fox jumps over the lazy dog while a careful reader notes "
         "every detail of the story and keeps it for later questions")


def system_prompt(tag: str, tokens: int) -> str:
    """About ``tokens`` tokens of text starting with ``tag`` (one word is ~1.3 tokens)."""
    story = STORY.split()
    words = [story[i % len(story)] for i in range(int(tokens / 1.3))]
    return f"{tag}: " + " ".join(words)


def config(root: Path, name: str, *, bootstrap: list[str], serve: bool, parallel: int
           ) -> Any:
    from peerllm.config import config_from_mapping

    return config_from_mapping({
        "data_dir": str(root / name), "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": bootstrap,
                "heartbeat_interval_s": 1.0},
        "discovery": {"mdns": False, "dht": False},
        "api": {"host": "127.0.0.1", "port": 0},
        "models": {"serve_default": serve},
        "inference": {"parallel": parallel, "warmup_tokens": 0, "n_threads": 1},
    })


async def second_turn(http: Any, messages: list[dict[str, str]], tokens: int
                      ) -> tuple[float, str]:
    """Stream one chat completion; (seconds to the first token, who served it)."""
    start = time.perf_counter()
    first: float | None = None
    async with http.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": messages, "max_tokens": tokens, "temperature": 0,
            "stream": True}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"second turn refused: {resp.status_code} {await resp.aread()!r}")
        served_by = resp.headers["x-peerllm-served-by"]
        async for line in resp.aiter_lines():
            if first is None and line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError("the second turn streamed no text")
    return first - start, served_by


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import trio

    import peerllm
    from peerllm.api import open_api
    from peerllm.inference.batched_llama import BatchedLlamaInstance
    from peerllm.inference.llama import LlamaBackend
    from peerllm.inference.prefixes import next_turn_prefix
    from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams

    class Keeping(LlamaBackend):
        def __init__(self) -> None:
            self.opened: list[Any] = []

        def open(self, path: Any, options: Any, *, should_stop: Any) -> Any:
            instance = super().open(path, options, should_stop=should_stop)
            self.opened.append(instance)
            return instance

    samples: list[dict[str, Any]] = []
    keep_a, keep_b = Keeping(), Keeping()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with peerllm.open_node(config(root, "a", bootstrap=[], serve=True,
                                            parallel=args.parallel), backend=keep_a) as a, \
                peerllm.open_node(config(root, "b", bootstrap=[a.addrs()[0]], serve=True,
                                         parallel=args.parallel), backend=keep_b) as b, \
                peerllm.open_node(config(root, "c", bootstrap=[a.addrs()[0], b.addrs()[0]],
                                         serve=False, parallel=1)) as c, \
                open_api(c) as url, \
                httpx.AsyncClient(base_url=url, trust_env=False, timeout=300) as http:
            while {x.peer_id for x in c.router.candidates(MODEL)[0]} != {a.peer_id, b.peer_id}:
                await trio.sleep(0.2)
            assert a.engine is not None and b.engine is not None
            for engine in (a.engine, b.engine):  # load both before timing anything
                await engine.complete(GenerationRequest(
                    model=MODEL, prompt="Hello", params=SamplingParams(max_tokens=1)))
            instances = {a.peer_id: keep_a.opened[-1], b.peer_id: keep_b.opened[-1]}
            assert all(isinstance(i, BatchedLlamaInstance) for i in instances.values())
            settings = c.router.settings
            for run in range(args.runs):
                holder = (a, b)[run % 2]
                assert holder.engine is not None
                for mode in MODES:
                    tag = f"conversation {run}-{mode}"
                    turn1 = (ChatMessage(role="system", content=system_prompt(
                        tag, args.system_tokens)),
                             ChatMessage(role="user", content="Summarise the story so far."))
                    answer, _ = await holder.engine.complete(GenerationRequest(
                        model=MODEL, messages=turn1,
                        params=SamplingParams(max_tokens=args.tokens, temperature=0.0)))
                    turn2 = (*turn1, ChatMessage(role="assistant", content=answer),
                             ChatMessage(role="user", content="And then?"))
                    digest = next_turn_prefix(GenerationRequest(model=MODEL, messages=turn2))
                    with trio.fail_after(30):
                        while not any(x.peer_id == holder.peer_id and digest in x.prefixes
                                      for x in c.router.candidates(MODEL)[0]):
                            await trio.sleep(0.05)
                    c.router.settings = dataclasses.replace(settings, affinity=mode == "on")
                    reused = {p: i.statistics().reused_tokens for p, i in instances.items()}
                    if mode == "elsewhere":
                        c.router.loads.busy(holder.peer_id, 30.0, now=trio.current_time())
                    ttft, served_by = await second_turn(
                        http, [{"role": m.role, "content": m.content} for m in turn2],
                        args.tokens)
                    c.router.loads.busy_until.pop(holder.peer_id, None)
                    server = instances[served_by]
                    samples.append({
                        "run": run, "mode": mode, "ttft_ms": ttft * 1000.0,
                        "holder": holder.name, "served_by": "a" if served_by == a.peer_id
                        else "b", "on_holder": served_by == holder.peer_id,
                        "reused": server.statistics().reused_tokens - reused[served_by],
                        "prompt_tokens": len(server.encode(messages=turn2, prompt=None,
                                                           resume_text="").tokens)})
                    print(json.dumps(samples[-1]), flush=True)
            c.router.settings = settings
    return {"samples": samples}


def summary(doc: dict[str, Any]) -> str:
    rows = []
    for mode in MODES:
        picked = [s for s in doc["samples"] if s["mode"] == mode]
        hits = [s for s in picked if s["on_holder"]]
        misses = [s for s in picked if not s["on_holder"]]
        label = mode if mode == "elsewhere" else f"affinity {mode}"
        rows.append([label, str(len(picked)), f"{len(hits)}/{len(picked)}",
                     fmt(median([s["ttft_ms"] for s in picked]), " ms", 1),
                     fmt(median([s["ttft_ms"] for s in hits]), " ms", 1),
                     fmt(median([s["ttft_ms"] for s in misses]), " ms", 1),
                     fmt(median([s["reused"] for s in hits]), "", 0),
                     fmt(median([s["reused"] for s in misses]), "", 0),
                     fmt(median([s["prompt_tokens"] for s in picked]), "", 0)])
    return table(rows, ["second turn", "n", "on holder", "TTFT p50", "p50 on holder",
                        "p50 elsewhere", "reused (holder)", "reused (else)", "prompt tok"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--system-tokens", type=int, default=600)
    parser.add_argument("--tokens", type=int, default=8, help="tokens per answer")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before llama.cpp loads

    import trio

    doc: dict[str, Any] = {"bench": "affinity", "machine": machine_info(),
                           "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                           "settings": vars(args) | {"out": str(args.out)},
                           "load_before": os.getloadavg()}
    doc |= trio.run(bench, args)
    doc["load_after"] = os.getloadavg()
    text = summary(doc)
    doc["summary"] = text
    path = write_results(args.out, "affinity", doc, timestamp_slug())
    print(text)
    print(f"load average before/after: {doc['load_before']} / {doc['load_after']}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
