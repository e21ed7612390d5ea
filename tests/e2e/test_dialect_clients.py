"""The official clients of the newer dialects against a two-node mesh with the bundled
model, through the node that does not hold it: ``openai``'s ``responses.create`` and the
``anthropic`` package's ``messages.create`` / ``messages.stream``, streamed and not, and
their errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anthropic
import openai
import pytest

from tests.e2e.conftest import Mesh
from tests.helpers import MODEL

# Both clients stop reading at the stream's last event without closing their inner async
# generators; under trio their garbage collection is reported. That is the clients' doing.
_CLIENT_GENERATORS = ("ignore:Exception ignored in. <async_generator object "
                      r"(AsyncStream|SSEDecoder|Response|PoolByteStream|"
                      r"AsyncMessageStream)\.:pytest.PytestUnraisableExceptionWarning")
pytestmark = pytest.mark.filterwarnings(_CLIENT_GENERATORS)


# The anthropic client no longer takes sampling options; older ones (and other tools) send
# them, and we honour them: greedy, so a stream and a whole answer can be compared.
GREEDY = {"temperature": 0}


@asynccontextmanager
async def openai_for(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
    async with client:
        yield client


@asynccontextmanager
async def anthropic_for(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0,
                                      http_client=anthropic.DefaultAsyncHttpxClient(trust_env=False))
    async with client:
        yield client


async def test_responses_create_whole_and_streamed(mesh: Mesh) -> None:
    async with openai_for(mesh.url) as client:
        whole = await client.responses.create(model=MODEL, input="Say hello.",
                                              instructions="Answer in one short sentence.",
                                              max_output_tokens=8, temperature=0)
        assert whole.object == "response" and whole.model == MODEL
        assert whole.status in ("completed", "incomplete")
        assert whole.output_text  # computed by the client from the output items
        assert whole.usage is not None and 0 < whole.usage.output_tokens <= 8
        assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens

        stream = await client.responses.create(
            model=MODEL, input=[{"role": "user", "content": [
                {"type": "input_text", "text": "Say hello."}]}],
            instructions="Answer in one short sentence.", max_output_tokens=8,
            temperature=0, stream=True)
        events = [e async for e in stream]
        assert events[0].type == "response.created"
        assert events[-1].type == f"response.{whole.status}"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == whole.output_text  # greedy: the same text streamed or not
        assert [e.sequence_number for e in events] == list(range(len(events)))

        # The client's stream helper accumulates the events into the final response.
        async with client.responses.stream(model=MODEL, input="Say hello.",
                                           instructions="Answer in one short sentence.",
                                           max_output_tokens=64, temperature=0) as helper:
            streamed = "".join([e.delta async for e in helper
                                if e.type == "response.output_text.delta"])
            final = await helper.get_final_response()
        assert final.output_text == streamed and final.status == "completed"


async def test_responses_errors(mesh: Mesh) -> None:
    async with openai_for(mesh.url) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.responses.create(model="no-such-model", input="hi")
        assert nf.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as tools:
            await client.responses.create(model=MODEL, input="hi", tools=[{
                "type": "function", "name": "f", "parameters": {}, "strict": False}])
        assert tools.value.param == "tools"


async def test_anthropic_messages_whole_and_streamed(mesh: Mesh) -> None:
    async with anthropic_for(mesh.url) as client:
        hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hello."}]
        whole = await client.messages.create(model=MODEL, max_tokens=8, extra_body=GREEDY,
                                             system="Answer in one short sentence.",
                                             messages=hello)
        assert whole.type == "message" and whole.role == "assistant"
        assert whole.stop_reason in ("end_turn", "max_tokens")
        [block] = whole.content
        assert block.type == "text" and block.text
        assert 0 < whole.usage.output_tokens <= 8 and whole.usage.input_tokens > 0

        async with client.messages.stream(model=MODEL, max_tokens=8, extra_body=GREEDY,
                                          system="Answer in one short sentence.",
                                          messages=hello) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text == block.text  # greedy: the same text streamed or not
        assert final.stop_reason == whole.stop_reason and final.usage == whole.usage

        raw = await client.messages.create(model=MODEL, max_tokens=8, extra_body=GREEDY,
                                           messages=hello, stream=True)
        kinds = [e.type async for e in raw]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_anthropic_errors(mesh: Mesh) -> None:
    async with anthropic_for(mesh.url) as client:
        with pytest.raises(anthropic.NotFoundError) as nf:
            await client.messages.create(model="no-such-model", max_tokens=4,
                                         messages=[{"role": "user", "content": "hi"}])
        assert nf.value.body == {"type": "error", "error": {
            "type": "not_found_error",
            "message": "model 'no-such-model' is not served by any node in the mesh"}}
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(model=MODEL, max_tokens=4, messages=[
                {"role": "user", "content": [{"type": "image", "source": {
                    "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
        assert "messages[0].content[0]" in bad.value.message
