"""Scripted stand-ins for both ends of an inference: a generator for InferServer, and an
InferClient whose peers answer from a script."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio

from ..events import Done, TokenChunk
from ..wire import infer as wi

Step = float | str | Done | BaseException
"""One step of a scripted answer.

* a number: that many seconds of silence (``trio.sleep``; instant on autojump_clock);
* a string: one token with that text (except the two markers below);
* ``DONE``: finish with ``Done(finish_reason="length")`` counting the tokens so far;
  a ``Done`` instance finishes with exactly that record;
* ``SILENT``: go silent for good (a frozen peer or a stuck engine);
* an exception: raise it. Waits and exceptions before the first token happen before
  the request is accepted, as a refusal or a dial failure would.
"""
DONE: Final = "done"
SILENT: Final = "hang"


async def _lead_in(steps: Sequence[Step]) -> list[Step]:
    """Play the steps before the first token; return the rest."""
    rest = list(steps)
    while rest:
        head = rest[0]
        if isinstance(head, BaseException):
            raise head
        if not isinstance(head, int | float):
            break
        rest.pop(0)
        await trio.sleep(head)
    return rest


async def _play(steps: Sequence[Step], *, model: str) -> AsyncGenerator[TokenChunk | Done, None]:
    n = 0
    for step in steps:
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Done):
            yield step
            return
        if isinstance(step, int | float):
            await trio.sleep(step)
        elif step == SILENT:
            await trio.sleep_forever()
        elif step == DONE:
            yield Done(finish_reason="length", prompt_tokens=1, completion_tokens=n,
                       ttft_ms=None, total_ms=1.0, model=model)
            return
        else:
            n += 1
            yield TokenChunk(text=step, n_tokens=1)


class ScriptedGenerator:
    """An ``InferServer`` generator (``p2p.infer.Generator``) that plays ``steps``.

    Raise an ``InferenceRejected`` step to refuse (before any token) or fail mid-stream,
    as the serving engine's mapped errors do. ``outcomes`` records how each generation
    ended: "done", "failed", or "stopped" (cancelled by the server: the client left).
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.requests: list[tuple[wi.InferRequest, str]] = []
        self.outcomes: list[str] = []
        self._changed = trio.Event()

    async def wait_outcomes(self, n: int) -> list[str]:
        """Block until ``n`` generations have ended; return all outcomes so far."""
        while len(self.outcomes) < n:
            await self._changed.wait()
        return list(self.outcomes)

    def _ended(self, outcome: str) -> None:
        self.outcomes.append(outcome)
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def __call__(self, req: wi.InferRequest, peer: str
                       ) -> AsyncIterator[trio.MemoryReceiveChannel[TokenChunk | Done]]:
        self.requests.append((req, peer))
        try:
            rest = await _lead_in(self.steps)
        except Exception:
            self._ended("failed")
            raise
        send, recv = trio.open_memory_channel[TokenChunk | Done](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, rest, send, req.model)
            yield recv
            nursery.cancel_scope.cancel()

    async def _produce(self, steps: list[Step], send: trio.MemorySendChannel[TokenChunk | Done],
                       model: str) -> None:
        outcome = "stopped"
        try:
            async with send, aclosing(_play(steps, model=model)) as items:
                async for item in items:
                    await send.send(item)
                    if isinstance(item, Done):
                        outcome = "done"
        except Exception:
            outcome = "failed"
            raise
        finally:
            self._ended(outcome)


@dataclass
class ScriptedGeneration:
    """What ``ScriptedInferClient.request`` yields; shaped like ``p2p.infer.RemoteGeneration``."""

    peer: str
    accepted: wi.Accepted
    steps: list[Step]
    model: str
    text_received: str = ""
    tokens_received: int = 0

    async def events(self) -> AsyncGenerator[TokenChunk | Done, None]:
        async with aclosing(_play(self.steps, model=self.model)) as items:
            async for item in items:
                if isinstance(item, TokenChunk):
                    self.text_received += item.text
                    self.tokens_received += item.n_tokens
                yield item


@dataclass
class ScriptedInferClient:
    """Stands in for ``p2p.infer.InferClient``: each peer answers from a script.

    ``scripts[peer]`` lists one script per request, in order; the last one repeats.
    ``calls`` records (peer, trio time, resume_text) of every request.
    """

    scripts: dict[str, list[list[Step]]]
    load: wi.Load | None = None  # what every `accepted` reports
    calls: list[tuple[str, float, str]] = field(default_factory=list)

    def next_request_id(self) -> int:
        return len(self.calls) + 1

    @asynccontextmanager
    async def request(self, peer_id: str, req: wi.InferRequest
                      ) -> AsyncIterator[ScriptedGeneration]:
        self.calls.append((peer_id, trio.current_time(), req.resume_text))
        script = self.scripts[peer_id]
        steps = script.pop(0) if len(script) > 1 else script[0]
        rest = await _lead_in(steps)  # errors before the first token surface here
        yield ScriptedGeneration(peer=peer_id, accepted=wi.Accepted(
            request_id=req.request_id, served_by=peer_id, model=req.model, load=self.load),
            steps=rest, model=req.model)
