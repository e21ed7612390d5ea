"""How long a peer that accepted a request may stay silent before the request moves on.

Pure: the caller measures time and passes it in.
"""

from __future__ import annotations

MODEL_LOAD_ALLOWANCE_S = 120.0  # the engine's default model-load timeout
STALL_FLOOR_S = 2.0
STALL_GAP_FACTOR = 20.0
GAP_SMOOTHING = 0.2  # weight of the newest gap in the running estimate


def first_token_limit(base_s: float, queued: int, *, loaded: bool) -> float:
    """Until the first token: ``base_s`` for the request itself and for each request
    queued there when it accepted ours, plus a model load if the model was not in
    memory. A busy peer is slow, not broken."""
    return base_s * (1 + max(0, queued)) + (0.0 if loaded else MODEL_LOAD_ALLOWANCE_S)


def stall_limit(gap_s: float | None, cap_s: float) -> float:
    """Mid-stream: 20× the stream's usual gap between frames, at least 2 s (a healthy
    node never pauses that long between tokens), at most ``cap_s`` (the configured
    stall_timeout_s, which also applies before a gap is known). A frozen peer keeps its
    TCP connection open, so silence is the only sign."""
    if gap_s is None:
        return cap_s
    return min(cap_s, max(STALL_FLOOR_S, STALL_GAP_FACTOR * gap_s))


def smoothed_gap(gap_s: float | None, sample_s: float) -> float:
    """The running estimate of a stream's gap between frames after one more sample."""
    if gap_s is None:
        return sample_s
    return (1 - GAP_SMOOTHING) * gap_s + GAP_SMOOTHING * sample_s
