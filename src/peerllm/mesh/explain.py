"""Why each node would (or would not) get a request for a model: the ``/v1/route`` document."""

from __future__ import annotations

from typing import Any

from .router import Router


def explain(router: Router, model: str) -> dict[str, Any]:
    """Candidates in rank order with every criterion's value and contribution, their load
    and where it came from, their breaker; and a named reason for every excluded node."""
    cands, excluded = router.candidates(model)
    order, scored = router.ranked(cands, None)
    by_peer = {s.candidate.peer_id: s for s in scored}
    rows = []
    for i, c in enumerate(order):
        s = by_peer[c.peer_id]
        rows.append({
            "rank": i + 1, "peer_id": c.peer_id, "name": c.name, "local": c.local,
            "score": round(s.total, 4),
            "multiplier": s.multiplier,
            "criteria": {k: {"value": round(s.values[k], 4),
                             "contribution": round(s.contributions[k], 4)} for k in s.values},
            "load": {"active": c.active, "queued": c.queued, "capacity": c.capacity,
                     "in_flight": c.in_flight,
                     "from": "local" if c.local else
                     "accepted" if c.peer_id in router.loads.hints else "node-info"},
            "prefixes": len(c.prefixes),  # conversations its batch slots hold
            "health": "half_open" if c.half_open else "degraded" if c.degraded else "healthy",
            "breaker": router.breakers.describe(c.peer_id),
        })
    return {
        "model": model,
        "strategy": router.settings.strategy,
        "weights": router.weights.normalised(),
        "candidates": rows,
        "excluded": [{"name": k, "reason": v} for k, v in excluded.items()],
    }
