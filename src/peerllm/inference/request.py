"""What a generation request looks like (frozen, validated values); answers: peerllm.events."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

ROLES: Final = ("system", "user", "assistant")
MAX_STOP_STRINGS: Final = 16
MAX_STOP_LENGTH: Final = 256


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How tokens are picked. ``temperature=0`` is greedy (deterministic).

    Raises:
        ValueError: a value is out of range; the message starts with the field name.
    """

    max_tokens: int = 256  # new tokens, further capped by the context window
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40  # 0 = no top-k cut
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ()  # generation ends before the first of these; never emitted
    seed: int | None = None  # None = a fresh random seed per request

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be a whole number >= 1, got {self.max_tokens!r}")
        _number("temperature", self.temperature, low=0.0)
        _number("top_p", self.top_p, low=0.0, low_open=True, high=1.0)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k: must be a whole number >= 0, got {self.top_k!r}")
        _number("repeat_penalty", self.repeat_penalty, low=0.0, low_open=True)
        stop = self.stop
        if isinstance(stop, str) or not isinstance(stop, tuple | list):
            raise TypeError(f"stop: expected a tuple of strings, got {stop!r}")
        if len(stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop: at most {MAX_STOP_STRINGS} strings, got {len(stop)}")
        for s in stop:
            if not isinstance(s, str) or not s or len(s) > MAX_STOP_LENGTH:
                raise ValueError(f"stop: each must be a string of 1..{MAX_STOP_LENGTH} "
                                 f"characters, got {s!r}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**32):
            raise ValueError(f"seed: must be a whole number in [0, 2**32), got {self.seed!r}")


def _number(name: str, value: object, *, low: float, low_open: bool = False,
            high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < low or (low_open and value == low) \
            or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low:g}"
        if high is not None:
            bounds += f" and <= {high:g}"
        raise ValueError(f"{name}: must be a number {bounds}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One chat turn. ``role`` is system, user or assistant."""

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: {self.role!r} is not one of " + ", ".join(ROLES))
        if not isinstance(self.content, str):
            raise TypeError(f"content: expected a string, got {type(self.content).__name__}")


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """A chat (``messages``) or raw completion (``prompt``) request; exactly one is set.

    ``resume_text`` is output already produced elsewhere (a replica that failed mid-stream):
    it is fed after the prompt and generation continues from there; it is not repeated in
    the output, and its tokens are not counted in the usage.

    Raises:
        ValueError: both or neither of messages/prompt, an empty model id, bad types.
    """

    model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    params: SamplingParams = SamplingParams()
    resume_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model: expected a model id, got {self.model!r}")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("messages: give exactly one of messages or prompt")
        if self.messages is not None:
            if isinstance(self.messages, str) or not isinstance(self.messages, tuple | list) \
                    or not self.messages:
                raise ValueError("messages: expected a non-empty tuple of ChatMessage")
            if not all(isinstance(m, ChatMessage) for m in self.messages):
                raise ValueError("messages: every item must be a ChatMessage")
            object.__setattr__(self, "messages", tuple(self.messages))
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt: expected a string, got {type(self.prompt).__name__}")
        if not isinstance(self.params, SamplingParams):
            raise TypeError(f"params: expected SamplingParams, got {type(self.params).__name__}")
        if not isinstance(self.resume_text, str):
            raise TypeError("resume_text: expected a string")
