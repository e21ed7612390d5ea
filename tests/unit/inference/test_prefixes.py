"""The prefix book: which finished chat turns a model's batch slots still hold."""

from __future__ import annotations

import gc
from pathlib import Path

from peerllm.inference.backend import ModelInstance, OpenOptions
from peerllm.inference.prefixes import PrefixBooks, answered_digest
from peerllm.inference.request import ChatMessage, GenerationRequest, SamplingParams
from peerllm.testing import FakeBackend
from peerllm.wire.prefixes import MAX_PREFIXES
from tests.slotted import SlottedBackend, SlottedInstance

OPTIONS = OpenOptions(model_id="m", context_size=512)


def chat(text: str, *, max_tokens: int = 3) -> GenerationRequest:
    return GenerationRequest(model="m", messages=(ChatMessage(role="user", content=text),),
                             params=SamplingParams(max_tokens=max_tokens))


def open_slotted(slots: int, **kwargs: object) -> SlottedInstance:
    return SlottedBackend(slots=slots, **kwargs).open(Path("m.gguf"), OPTIONS,
                                                      should_stop=lambda: False)


def run(instance: ModelInstance, req: GenerationRequest, *, stop_after: int | None = None
        ) -> str:
    parts: list[str] = []
    prompt = instance.encode(messages=req.messages, prompt=req.prompt,
                             resume_text=req.resume_text)
    instance.generate(prompt, req.params, emit=lambda text, _n: parts.append(text),
                      should_stop=lambda: stop_after is not None and len(parts) >= stop_after)
    return "".join(parts)


def test_a_finished_turn_is_live_until_its_slot_moves_on() -> None:
    books, inst = PrefixBooks(), open_slotted(2)
    req = chat("hi")
    answer = run(books.watching(inst, model_id="m", req=req), req)
    assert answer == "t0 t1 t2 "  # what the caller got is passed through untouched
    first = answered_digest(req, answer)
    assert books.live("m") == (first,)
    second_req = chat("other")
    second = answered_digest(second_req, run(books.watching(inst, model_id="m",
                                                            req=second_req), second_req))
    assert books.live("m") == (second, first)  # newest first
    inst.evict(0)  # the first turn's slot is given to someone else
    assert books.live("m") == (second,)
    assert books.live("other-model") == ()


def test_cancelled_turns_prompts_and_plain_contexts_are_not_recorded() -> None:
    books, inst = PrefixBooks(), open_slotted(2)
    req = chat("hi", max_tokens=10)
    run(books.watching(inst, model_id="m", req=req), req, stop_after=2)  # cancelled
    prompt = GenerationRequest(model="m", prompt="hi", params=SamplingParams(max_tokens=2))
    assert books.watching(inst, model_id="m", req=prompt) is inst
    plain = FakeBackend().open(Path("m.gguf"), OPTIONS, should_stop=lambda: False)
    assert books.watching(plain, model_id="m", req=req) is plain  # not batched: no slots
    assert books.live("m") == ()


def test_the_list_is_bounded_and_a_repeated_conversation_listed_once() -> None:
    books, inst = PrefixBooks(), open_slotted(MAX_PREFIXES + 4)
    for i in range(MAX_PREFIXES + 4):
        req = chat(f"q{i % (MAX_PREFIXES + 2)}")  # two conversations asked twice
        run(books.watching(inst, model_id="m", req=req), req)
    live = books.live("m")
    assert len(live) == MAX_PREFIXES == len(set(live))
    assert live[0] == answered_digest(chat("q1"), "t0 t1 t2 ")


def test_a_reloaded_model_starts_a_new_book_and_an_unloaded_one_lists_nothing() -> None:
    books, old = PrefixBooks(), open_slotted(2)
    req = chat("hi")
    run(books.watching(old, model_id="m", req=req), req)
    new = open_slotted(2)  # epochs start again at 0: old records must not match them
    run(books.watching(new, model_id="m", req=chat("x")), chat("x"))
    assert books.live("m") == (answered_digest(chat("x"), "t0 t1 t2 "),)
    del new
    gc.collect()
    assert books.live("m") == ()
