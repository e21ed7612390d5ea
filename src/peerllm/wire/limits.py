"""Every limit on a generation request, defined once for the API, the engine and the wire.

The infer protocol (protocols/inference.md) is the narrowest path a request may take,
so its limits are the request limits: ``GenerationRequest`` and ``SamplingParams``
enforce them when they are built, which makes every request the HTTP API accepts
encodable by the infer codec, and the codec checks the same numbers on both ends.
Pure constants: nothing here reads, sends or validates anything.
"""

from __future__ import annotations

from typing import Final

MAX_MESSAGES: Final = 256
"""Chat turns in one request."""
MAX_PROMPT_CHARS: Final = 256 * 1024
"""Prompt text in code points: ``prompt`` (or all message contents) plus ``resume_text``."""
MAX_INFER_FRAME_BYTES: Final = 1024 * 1024
"""The infer protocol's frame cap, both directions."""
MAX_PROMPT_BYTES: Final = MAX_INFER_FRAME_BYTES - 32 * 1024
"""Prompt text as UTF-8 (same parts as MAX_PROMPT_CHARS). Not a wire rule: the frame cap
is; 256 Ki four-byte characters would overflow it, and 32 KiB is more than every other
field of a request can take (256 message headers, 8 stop strings, ids)."""
MAX_MODEL_ID_CHARS: Final = 256
MAX_SESSION_CHARS: Final = 256
"""The affinity key a conversation's requests share."""
MAX_STOP: Final = 8
"""Stop strings per request."""
MAX_STOP_CHARS: Final = 64
"""Characters in one stop string (at least 1)."""
MAX_TOKENS: Final = 32768
"""Largest ``max_tokens`` (further capped by the model's context window)."""
MAX_TOP_K: Final = 1000
"""Largest ``top_k``; 0 disables top-k."""
MAX_TEMPERATURE: Final = 5.0
MAX_REPEAT_PENALTY: Final = 10.0
"""``repeat_penalty`` is in (0, MAX_REPEAT_PENALTY]; 1 means no penalty."""
MAX_DEADLINE_MS: Final = 3_600_000
"""Largest budget a client may grant a server for one request (and a ``retry_after``)."""

MAX_EMBED_INPUTS: Final = 2048
"""Inputs (strings) in one embeddings request (OpenAI's own cap)."""
MAX_EMBED_CHARS: Final = MAX_PROMPT_CHARS
"""All inputs of one embeddings request together, in code points."""
MAX_EMBED_DIMS: Final = 16384
"""Largest vector an embeddings answer may carry (the widest GGUF models are 8192)."""
MAX_EMBED_VALUES: Final = 4 * 1024 * 1024
"""Floats in one embeddings answer (inputs x dims): 16 MiB of float32. A request whose
answer would be larger is refused (``too_large``); split it into smaller batches."""
MAX_PENALTY: Final = 2.0
"""``presence_penalty`` and ``frequency_penalty`` are in [-MAX_PENALTY, MAX_PENALTY] (OpenAI's)."""
MAX_LOGIT_BIAS: Final = 300
"""Entries in one ``logit_bias`` (OpenAI's cap)."""
MAX_LOGIT_BIAS_VALUE: Final = 100.0
"""A ``logit_bias`` value is in [-MAX_LOGIT_BIAS_VALUE, MAX_LOGIT_BIAS_VALUE]."""
MAX_TOKEN_ID: Final = 2**31 - 1
"""Largest token id a ``logit_bias`` may name (llama.cpp token ids are int32)."""
MAX_JSON_SCHEMA_CHARS: Final = 16 * 1024
"""A structured-output JSON schema, as JSON text."""
