"""The official ``openai`` client against a real node serving the bundled model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import peerllm
from tests.helpers import MODEL, api_url

# The client stops reading at "data: [DONE]" without closing its inner async generators;
# under trio their garbage collection is reported. That is the client's doing, not ours.
_CLIENT_GENERATORS = ("ignore:Exception ignored in. <async_generator object "
                      r"(AsyncStream|SSEDecoder|Response|PoolByteStream)\.:"
                      "pytest.PytestUnraisableExceptionWarning")
pytestmark = pytest.mark.filterwarnings(_CLIENT_GENERATORS)

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


@asynccontextmanager
async def client_for(node: peerllm.Node) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=api_url(node) + "/v1", api_key="x", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
    async with client:
        yield client


async def test_chat_completions(node: peerllm.Node) -> None:
    async with client_for(node) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
        assert raw.headers["x-peerllm-served-by"] == node.peer_id
        assert raw.headers["x-peerllm-served-by-name"] == node.name
        assert raw.headers["x-peerllm-node-id"] == node.identity.node_id
        whole = raw.parse()
        choice = whole.choices[0]
        assert whole.object == "chat.completion" and whole.model == MODEL
        assert choice.message.role == "assistant" and choice.message.content
        assert choice.finish_reason in ("stop", "length")
        usage = whole.usage
        assert usage is not None and 0 < usage.completion_tokens <= 8
        assert usage.prompt_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == choice.message.content  # greedy: same text streamed or not
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == choice.finish_reason and not any(finishes[:-1])
        assert chunks[-1].choices == [] and chunks[-1].usage == usage


async def test_completions_embeddings_and_models(node: peerllm.Node) -> None:
    async with client_for(node) as client:
        models = await client.models.list()
        mine = next(m for m in models.data if m.id == MODEL)
        assert mine.owned_by == "peerllm"
        assert mine.model_extra is not None
        assert mine.model_extra["peerllm"]["providers"][0]["peer_id"] == node.peer_id

        comp = await client.completions.create(model=MODEL, prompt="The sky is",
                                               max_tokens=4, temperature=0)
        assert comp.object == "text_completion" and comp.choices[0].text
        assert comp.usage is not None and 0 < comp.usage.completion_tokens <= 4
        streamed = [c async for c in await client.completions.create(
            model=MODEL, prompt="The sky is", max_tokens=4, temperature=0, stream=True)]
        assert "".join(c.choices[0].text for c in streamed) == comp.choices[0].text

        emb = await client.embeddings.create(model=MODEL, input=["hello", "world"])  # base64
        flt = await client.embeddings.create(model=MODEL, input="hello",
                                             encoding_format="float")
        assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
        assert emb.data[0].embedding == pytest.approx(flt.data[0].embedding, abs=1e-5)


async def test_errors_have_openai_shapes(node: peerllm.Node) -> None:
    async with client_for(node) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="no-such-model", messages=HELLO,
                                                 max_tokens=4)
        assert nf.value.code == "model_not_found" and nf.value.param == "model"
        with pytest.raises(openai.BadRequestError) as n2:
            await client.chat.completions.create(model=MODEL, messages=HELLO, n=2,
                                                 max_tokens=4)
        assert "n must be 1" in n2.value.message
        with pytest.raises(openai.BadRequestError) as mt:
            await client.chat.completions.create(model=MODEL, messages=HELLO,
                                                 max_tokens=0)
        assert mt.value.param == "max_tokens"
        # The node keeps serving after the errors.
        assert (await client.models.list()).data
