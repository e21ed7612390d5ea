"""MCDA scoring and the selection strategies (mcda and the baselines), pure.

Score = health multiplier × Σ weight_i × criterion_i, every criterion normalised to
[0, 1] (1 = best):

- free memory: free / (free + MEMORY_SCALE_BYTES): headroom matters most when it is
  scarce (8 GiB free scores 0.5, 24 GiB 0.75), so 48 GiB against 20 GiB barely counts
  while 2 GiB against 8 GiB does;
- load: (active + queued + our own in-flight + this request) over capacity, in units of
  each node's measured speed, i.e. how long its backlog takes to drain; the shortest
  drain scores 1, one twice as long 0.5. A fast node with a queue can beat a slow idle
  one, which plain busy-ratio cannot see;
- latency: RTT_SCALE_MS / (RTT_SCALE_MS + rtt): on an absolute scale, so 1 ms against
  40 ms (both negligible next to a generation) is a small difference, not the whole range;
- throughput: measured tokens/s as a fraction of the fastest candidate's.

Unknown values score a neutral 0.5 (unknown speed counts as the candidates' median in
the load criterion). The scheduling simulation (scripts/bench/scheduling.py) compares
these choices with the oracle; min-max normalisation and a saturating busy-ratio put
MCDA's p95 at 2× the oracle's there, a free-memory fraction of the best at 1.2×.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .candidates import Candidate, load_ratio

if TYPE_CHECKING:  # the caller passes a seeded random.Random in; we never use global state
    import random

CRITERIA = ("free_memory", "load", "latency", "throughput")
DEGRADED_MULTIPLIER = 0.5
RTT_SCALE_MS = 100.0
MEMORY_SCALE_BYTES = 8 * 2**30
HALF_OPEN_MULTIPLIER = 0.5


@dataclass(frozen=True, kw_only=True)
class Weights:
    free_memory: float = 0.40
    load: float = 0.30
    latency: float = 0.20
    throughput: float = 0.10

    def __post_init__(self) -> None:
        values = [getattr(self, c) for c in CRITERIA]
        if any(v < 0 or not math.isfinite(v) for v in values) or sum(values) <= 0:
            raise ValueError("weights must be finite, >= 0, and not all 0")

    def normalised(self) -> dict[str, float]:
        total = sum(getattr(self, c) for c in CRITERIA)
        return {c: getattr(self, c) / total for c in CRITERIA}


@dataclass(frozen=True, kw_only=True)
class Scored:
    candidate: Candidate
    total: float
    multiplier: float
    values: dict[str, float]  # normalised criterion values in [0, 1]
    contributions: dict[str, float]  # weight × value (before the multiplier)


# Peers report these numbers; beyond them a report is a lie or a bug, not a faster node.
MAX_TOKENS_PER_SECOND = 1e6
MAX_CAPACITY = 10_000


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def _fraction_of_best(raw: Sequence[float | int | None]) -> list[float]:
    raw = [None if v is None else _clamp(v, 0.0, MAX_TOKENS_PER_SECOND) for v in raw]
    best = max((v for v in raw if v is not None), default=None)
    if best is None:
        return [0.5] * len(raw)
    if best <= 0:
        return [0.5 if v is None else 1.0 for v in raw]
    return [0.5 if v is None else max(0.0, v) / best for v in raw]


def _drain_time_score(cands: Sequence[Candidate]) -> list[float]:
    """Shortest backlog drain time over each one's (1 = the least backed-up node)."""
    speeds = sorted(_clamp(c.tokens_per_second, 1e-3, MAX_TOKENS_PER_SECOND) for c in cands
                    if c.tokens_per_second is not None and c.tokens_per_second > 0)
    typical = speeds[len(speeds) // 2] if speeds else 1.0
    drain = []
    for c in cands:
        speed = _clamp(c.tokens_per_second, 1e-3, MAX_TOKENS_PER_SECOND) \
            if c.tokens_per_second and c.tokens_per_second > 0 else typical
        capacity = _clamp(c.capacity, 1, MAX_CAPACITY)
        # load_ratio plus this request's own share of a slot; always > 0 after clamping.
        drain.append((load_ratio(c) + 1.0 / capacity) / speed)
    best = min(drain, default=1.0)
    return [best / d for d in drain]


def score(cands: Sequence[Candidate], weights: Weights) -> list[Scored]:
    """Score every candidate; best first, exact ties broken by peer ID."""
    w = weights.normalised()
    columns = {
        "free_memory": [0.5 if c.free_memory_bytes is None else
                        max(0, c.free_memory_bytes) / (max(0, c.free_memory_bytes)
                                                       + MEMORY_SCALE_BYTES)
                        for c in cands],
        "load": _drain_time_score(cands),
        "latency": [0.5 if c.rtt_ms is None
                    else RTT_SCALE_MS / (RTT_SCALE_MS + max(0.0, c.rtt_ms)) for c in cands],
        "throughput": _fraction_of_best([c.tokens_per_second for c in cands]),
    }
    out = []
    for i, c in enumerate(cands):
        values = {k: columns[k][i] for k in CRITERIA}
        contributions = {k: w[k] * values[k] for k in CRITERIA}
        multiplier = 1.0
        if c.degraded:
            multiplier *= DEGRADED_MULTIPLIER
        if c.half_open:
            multiplier *= HALF_OPEN_MULTIPLIER
        out.append(Scored(candidate=c, total=multiplier * sum(contributions.values()),
                          multiplier=multiplier, values=values, contributions=contributions))
    out.sort(key=lambda s: (-s.total, s.candidate.peer_id))
    return out


def choose_mcda(scored: Sequence[Scored], rng: random.Random, *, tie_epsilon: float,
                temperature: float = 0.02) -> list[Scored]:
    """Anti-herding: the first pick is drawn among the near-tied best (softmax over their
    scores) so independent nodes with the same stale view spread their load; the rest
    follow in score order for failover."""
    if not scored:
        return []
    best = scored[0].total
    tied = [s for s in scored if best - s.total <= tie_epsilon]
    weights = [math.exp((s.total - best) / temperature) for s in tied]
    pick = rng.choices(range(len(tied)), weights=weights)[0]
    first = tied[pick]
    return [first, *[s for s in scored if s is not first]]


# -- baselines (return a full ranked list for failover) ------------------------------

def round_robin(cands: Sequence[Candidate], counter: int) -> list[Candidate]:
    ordered = sorted(cands, key=lambda c: c.peer_id)
    if not ordered:
        return []
    k = counter % len(ordered)
    return ordered[k:] + ordered[:k]


def weighted_round_robin(cands: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    """Pick ∝ capacity × measured tokens/s (unknown speed counts as 1)."""
    pool = sorted(cands, key=lambda c: c.peer_id)
    out: list[Candidate] = []
    while pool:
        w = [max(c.capacity, 1) * (c.tokens_per_second or 1.0) for c in pool]
        out.append(pool.pop(rng.choices(range(len(pool)), weights=w)[0]))
    return out


def least_connections(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (c.active + c.queued + c.in_flight, c.peer_id))


def latency(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: (c.rtt_ms if c.rtt_ms is not None else 1e9, c.peer_id))


def random_order(cands: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    out = list(cands)
    rng.shuffle(out)
    return out


Affinity = Literal["session", "prefix"]
"""Which rule put a candidate first: the node that served the session's last turn, or
the one advertising the conversation's prefix."""


def affinity_pick(ranked: Sequence[Candidate], preferred: str | None,
                  prefix: bytes | None = None) -> tuple[int, Affinity] | None:
    """The index of the candidate affinity puts first, and why (None: the rank stands).

    The peer that served the session's last turn wins while it is fully healthy (not
    degraded, not on trial); failing that, the best-ranked fully healthy candidate
    advertising ``prefix`` (the conversation so far, wire.prefixes), whose batch slot
    then reuses the cached chat instead of reading it all again.
    """
    healthy = [(i, c) for i, c in enumerate(ranked) if not c.degraded and not c.half_open]
    if preferred is not None:
        for i, c in healthy:
            if c.peer_id == preferred:
                return i, "session"
    if prefix is not None:
        for i, c in healthy:
            if prefix in c.prefixes:
                return i, "prefix"
    return None


def apply_affinity(ranked: Sequence[Candidate], preferred: str | None,
                   prefix: bytes | None = None) -> list[Candidate]:
    """``ranked`` with affinity_pick's candidate (if any) moved to the front."""
    pick = affinity_pick(ranked, preferred, prefix)
    if pick is None:
        return list(ranked)
    i = pick[0]
    return [ranked[i], *ranked[:i], *ranked[i + 1:]]


def prefer_loaded(ranked: Sequence[Candidate]) -> list[Candidate]:
    """Candidates that already hold the model first, each group in rank order: a resume
    mid-stream should not wait for a model load (~2 s for a small model) when a warm
    replica exists."""
    return sorted(ranked, key=lambda c: not c.loaded)


def rank_by(strategy: str, cands: Sequence[Candidate], *, weights: Weights,
            rng: random.Random, counter: int, tie_epsilon: float
            ) -> tuple[list[Candidate], list[Scored]]:
    """Ranked candidates for ``strategy`` plus their MCDA scores (for explain)."""
    scored = score(cands, weights)
    chooser: dict[str, Callable[[], list[Candidate]]] = {
        "mcda": lambda: [s.candidate for s in choose_mcda(scored, rng,
                                                          tie_epsilon=tie_epsilon)],
        "round_robin": lambda: round_robin(cands, counter),
        "weighted_round_robin": lambda: weighted_round_robin(cands, rng),
        "least_connections": lambda: least_connections(cands),
        "latency": lambda: latency(cands),
        "random": lambda: random_order(cands, rng),
    }
    if strategy not in chooser:
        raise ValueError(f"unknown strategy {strategy!r}")
    return chooser[strategy](), scored
