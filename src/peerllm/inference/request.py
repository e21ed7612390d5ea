"""What a generation request looks like (frozen, validated values); answers: peerllm.events.

The request limits are ``wire.limits``, the infer protocol's: a request that constructs
here can be sent to any peer, so the API, the engine and the wire refuse the same things.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ..errors import InvalidField
from ..wire import limits

ROLES: Final = ("system", "user", "assistant")
JSON_OBJECT_SCHEMA: Final = '{"type": "object"}'
"""The ``json_schema`` of "any JSON object" (OpenAI ``json_object``, Ollama ``"json"``)."""
MIN_P: Final = 0.05
"""The engine always samples with this min-p cut (llama-cpp-python's default)."""
REPEAT_LAST_N: Final = 64
"""The penalties look back this many tokens, always."""
SEED_RANGE: Final = 2**32
"""Seeds are 0..SEED_RANGE-1 (llama.cpp takes a 32-bit seed)."""


def utf8_size(field: str, text: str) -> int:
    """The UTF-8 length of ``text``.

    Raises:
        InvalidField: ``text`` holds a lone surrogate (e.g. JSON ``"\\ud800"``), which no
            UTF-8 frame can carry.
    """
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidField(field, f"contains a lone surrogate ({text[exc.start]!r} at "
                                  f"index {exc.start}), which is not valid text") from exc


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How tokens are picked. ``temperature=0`` is greedy (deterministic).

    Raises:
        InvalidField: a value is out of range (``wire.limits``); ``field`` names it.
        TypeError: ``stop`` is not a tuple or list.
    """

    max_tokens: int = 256  # new tokens, further capped by the context window
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40  # 0 = no top-k cut
    repeat_penalty: float = 1.1
    stop: tuple[str, ...] = ()  # generation ends before the first of these; never emitted
    seed: int | None = None  # None = a fresh random seed per request
    presence_penalty: float = 0.0  # subtracted once from every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence of a generated token
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    json_schema: str | None = None
    """The output must be JSON matching this schema (JSON text); None for free text.
    Its size is checked here; whether it compiles is ``inference.grammar``'s to say."""

    def __post_init__(self) -> None:
        _whole("max_tokens", self.max_tokens, low=1, high=limits.MAX_TOKENS)
        _number("temperature", self.temperature, low=0.0, high=limits.MAX_TEMPERATURE)
        _number("top_p", self.top_p, low=0.0, low_open=True, high=1.0)
        _whole("top_k", self.top_k, low=0, high=limits.MAX_TOP_K)
        _number("repeat_penalty", self.repeat_penalty, low=0.0, low_open=True,
                high=limits.MAX_REPEAT_PENALTY)
        stop = self.stop
        if isinstance(stop, str) or not isinstance(stop, tuple | list):
            raise TypeError(f"stop: expected a tuple of strings, got {stop!r}")
        if len(stop) > limits.MAX_STOP:
            raise InvalidField("stop", f"at most {limits.MAX_STOP} strings, got {len(stop)}")
        for i, s in enumerate(stop):
            if not isinstance(s, str) or not 1 <= len(s) <= limits.MAX_STOP_CHARS:
                raise InvalidField("stop", f"each must be a string of 1..{limits.MAX_STOP_CHARS}"
                                           f" characters, got {s!r}")
            utf8_size(f"stop[{i}]", s)
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None:
            _whole("seed", self.seed, low=0, high=SEED_RANGE - 1)
        for name in ("presence_penalty", "frequency_penalty"):
            _number(name, getattr(self, name), low=-limits.MAX_PENALTY, high=limits.MAX_PENALTY)
        self._check_logit_bias()
        schema = self.json_schema
        if schema is not None:
            if not isinstance(schema, str) or not schema:
                raise InvalidField("json_schema", "expected a JSON schema as JSON text")
            if len(schema) > limits.MAX_JSON_SCHEMA_CHARS:
                raise InvalidField("json_schema", f"the schema is {len(schema)} characters as "
                                   f"JSON; the limit is {limits.MAX_JSON_SCHEMA_CHARS}")
            utf8_size("json_schema", schema)

    def _check_logit_bias(self) -> None:
        bias = self.logit_bias
        if not isinstance(bias, tuple | list):
            raise TypeError(f"logit_bias: expected a tuple of (token, bias), got {bias!r}")
        if len(bias) > limits.MAX_LOGIT_BIAS:
            raise InvalidField("logit_bias", f"at most {limits.MAX_LOGIT_BIAS} entries, "
                                             f"got {len(bias)}")
        seen: set[int] = set()
        for entry in bias:
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise TypeError(f"logit_bias: expected (token, bias) pairs, got {entry!r}")
            token, value = entry
            _whole("logit_bias", token, low=0, high=limits.MAX_TOKEN_ID)
            _number(f"logit_bias[{token}]", value, low=-limits.MAX_LOGIT_BIAS_VALUE,
                    high=limits.MAX_LOGIT_BIAS_VALUE)
            if token in seen:
                raise InvalidField("logit_bias", f"token {token} is given twice")
            seen.add(token)
        object.__setattr__(self, "logit_bias", tuple((t, float(v)) for t, v in bias))


def _whole(name: str, value: object, *, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(name, f"must be a whole number in {low}..{high}, got {value!r}")


def _number(name: str, value: object, *, low: float, high: float,
            low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < low or (low_open and value == low) \
            or value > high:
        bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
        raise InvalidField(name, f"must be a number {bounds}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One chat turn. ``role`` is system, user or assistant.

    Its text is checked (size, lone surrogates) by the GenerationRequest that holds it.
    """

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidField("role", f"{self.role!r} is not one of " + ", ".join(ROLES))
        if not isinstance(self.content, str):
            raise TypeError(f"content: expected a string, got {type(self.content).__name__}")


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """A chat (``messages``) or raw completion (``prompt``) request; exactly one is set.

    ``resume_text`` is output already produced elsewhere (a replica that failed mid-stream):
    it is fed after the prompt and generation continues from there; it is not repeated in
    the output, and its tokens are not counted in the usage. It counts in the prompt-size
    limits, so a resumed request may be refused where the first attempt was not.

    Raises:
        InvalidField: both or neither of messages/prompt, an empty or over-long model id,
            over MAX_MESSAGES turns, prompt text over MAX_PROMPT_CHARS characters or
            MAX_PROMPT_BYTES of UTF-8 (``too_large``), text with a lone surrogate.
        TypeError: ``params`` or ``resume_text`` has the wrong type.
    """

    model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    params: SamplingParams = SamplingParams()
    resume_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidField("model", f"expected a model id, got {self.model!r}")
        if len(self.model) > limits.MAX_MODEL_ID_CHARS:
            raise InvalidField("model", f"at most {limits.MAX_MODEL_ID_CHARS} characters, "
                                        f"got {len(self.model)}")
        utf8_size("model", self.model)
        if (self.messages is None) == (self.prompt is None):
            raise InvalidField("messages", "give exactly one of messages or prompt")
        if not isinstance(self.params, SamplingParams):
            raise TypeError(f"params: expected SamplingParams, got {type(self.params).__name__}")
        if not isinstance(self.resume_text, str):
            raise TypeError("resume_text: expected a string")
        chars = len(self.resume_text)
        size = utf8_size("resume_text", self.resume_text)
        if self.messages is not None:
            where = "messages"
            chars, size = self._check_messages(chars, size)
        else:
            where = "prompt"
            if not isinstance(self.prompt, str):
                raise InvalidField("prompt", f"expected a string, got {type(self.prompt).__name__}")
            chars += len(self.prompt)
            size += utf8_size("prompt", self.prompt)
        with_resume = " with resume_text" if self.resume_text else ""
        if chars > limits.MAX_PROMPT_CHARS:
            raise InvalidField(where, f"the prompt{with_resume} is {chars} characters; the limit "
                                      f"is {limits.MAX_PROMPT_CHARS}", too_large=True)
        if size > limits.MAX_PROMPT_BYTES:
            raise InvalidField(where, f"the prompt{with_resume} is {size} bytes of UTF-8; the "
                                      f"limit is {limits.MAX_PROMPT_BYTES}", too_large=True)

    def _check_messages(self, chars: int, size: int) -> tuple[int, int]:
        """Normalise ``messages`` to a tuple; returns ``chars``/``size`` plus their text."""
        messages = self.messages
        if isinstance(messages, str) or not isinstance(messages, tuple | list) or not messages:
            raise InvalidField("messages", "expected a non-empty tuple of ChatMessage")
        if len(messages) > limits.MAX_MESSAGES:
            raise InvalidField("messages", f"at most {limits.MAX_MESSAGES} messages, "
                                           f"got {len(messages)}")
        for i, m in enumerate(messages):
            if not isinstance(m, ChatMessage):
                raise InvalidField("messages", "every item must be a ChatMessage")
            chars += len(m.content)
            size += utf8_size(f"messages[{i}].content", m.content)
        object.__setattr__(self, "messages", tuple(messages))
        return chars, size
