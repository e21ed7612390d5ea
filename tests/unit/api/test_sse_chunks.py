"""OpenAI stream chunks are spliced into a template rendered once per stream: the bytes
are exactly those of rendering each chunk whole."""

from __future__ import annotations

import json

import pytest

from peerllm.api.openai import _Renderer
from peerllm.api.schemas import openai_chat, openai_completion
from peerllm.mesh.routed import Routed

TEXTS = ["Hello", ' "quoted"\n', "é ünïcode ☃", "", "\x00nul", "</script>"]


@pytest.mark.parametrize("chat", [True, False])
def test_a_spliced_chunk_is_the_whole_rendering(chat: bool) -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    gen = openai_chat({**body, "messages": [{"role": "user", "content": "hi"}]},
                      session_header=None) if chat else \
        openai_completion({**body, "prompt": "hi"}, session_header=None)
    renderer = _Renderer(gen, chat=chat)
    routed = Routed(model="m")
    for text in TEXTS:
        got = renderer.chunk(routed, text)
        assert got.startswith(b"data: ") and got.endswith(b"\n\n")
        obj = json.loads(got[6:])
        choice = obj["choices"][0]
        assert (choice["delta"]["content"] if chat else choice["text"]) == text
        whole = b"data: " + json.dumps(renderer._chunk(routed, renderer._choice(text, None)),
                                       separators=(",", ":")).encode() + b"\n\n"
        assert got == whole
