"""Merging the tokens of one infer request into as few ``Tokens`` frames as the limits allow."""

from __future__ import annotations

from collections import deque

from ...errors import LocalProtocolError
from .messages import MAX_TOKEN_TEXT_CHARS, MAX_TOKENS_CAP, Tokens


class TokenCoalescer:
    """Merges the tokens of one request into as few Tokens frames as the limits allow.

    The I/O layer ``add``s every token as the engine produces it and, whenever the
    stream is free to write, sends ``take()``: all tokens produced during the previous
    write leave in one frame. A frame never exceeds ``max_chars`` of text or
    MAX_TOKENS_CAP tokens; overflow waits for the next ``take``.
    """

    def __init__(self, request_id: int, *, max_chars: int = MAX_TOKEN_TEXT_CHARS) -> None:
        if not 1 <= max_chars <= MAX_TOKEN_TEXT_CHARS:
            raise ValueError(f"max_chars must be in 1..{MAX_TOKEN_TEXT_CHARS}, got {max_chars}")
        self.request_id = request_id
        self.max_chars = max_chars
        self._sealed: deque[Tokens] = deque()  # full frames, oldest first
        self._parts: list[str] = []  # the open frame
        self._chars = 0
        self._n = 0
        self._pending = 0
        self._pending_chars = 0

    @property
    def pending(self) -> int:
        """Tokens added but not yet taken."""
        return self._pending

    @property
    def pending_chars(self) -> int:
        return self._pending_chars

    def add(self, text: str, n_tokens: int = 1) -> None:
        """Queue ``n_tokens`` tokens whose text is ``text``.

        Raises:
            LocalProtocolError: ``n_tokens`` outside 1..MAX_TOKENS_CAP or ``text``
                longer than ``max_chars`` (such a frame could never be sent).
        """
        if type(n_tokens) is not int or not 1 <= n_tokens <= MAX_TOKENS_CAP:
            raise LocalProtocolError(f"n_tokens must be in 1..{MAX_TOKENS_CAP}, got {n_tokens!r}")
        if len(text) > self.max_chars:
            raise LocalProtocolError(f"token text of {len(text)} chars exceeds {self.max_chars}")
        if self._n and (
            self._chars + len(text) > self.max_chars or self._n + n_tokens > MAX_TOKENS_CAP
        ):
            self._seal()
        self._parts.append(text)
        self._chars += len(text)
        self._n += n_tokens
        self._pending += n_tokens
        self._pending_chars += len(text)

    def take(self) -> Tokens | None:
        """The oldest frame's worth of pending tokens merged into one Tokens, or None."""
        if not self._sealed:
            if not self._n:
                return None
            self._seal()
        frame = self._sealed.popleft()
        self._pending -= frame.n_tokens
        self._pending_chars -= len(frame.text)
        return frame

    def _seal(self) -> None:
        text = "".join(self._parts)
        self._sealed.append(Tokens(request_id=self.request_id, text=text, n_tokens=self._n))
        self._parts, self._chars, self._n = [], 0, 0
