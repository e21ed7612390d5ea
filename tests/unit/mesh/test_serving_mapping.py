"""Generation requests to infer messages and back: every sampling option survives the wire."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerllm.inference.request import GenerationRequest, SamplingParams
from peerllm.mesh.serving import from_wire_request, to_wire_request
from peerllm.wire import infer as wi
from peerllm.wire import limits
from peerllm.wire.framing import pack, unpack_map

params = st.builds(
    SamplingParams,
    max_tokens=st.integers(1, limits.MAX_TOKENS),
    temperature=st.floats(0, limits.MAX_TEMPERATURE),
    presence_penalty=st.floats(-limits.MAX_PENALTY, limits.MAX_PENALTY),
    frequency_penalty=st.floats(-limits.MAX_PENALTY, limits.MAX_PENALTY),
    logit_bias=st.dictionaries(
        st.integers(0, limits.MAX_TOKEN_ID),
        st.floats(-limits.MAX_LOGIT_BIAS_VALUE, limits.MAX_LOGIT_BIAS_VALUE), max_size=20,
    ).map(lambda d: tuple(d.items())),
    json_schema=st.none() | st.sampled_from(['{"type":"object"}', '{"type":"string"}']),
    seed=st.none() | st.integers(0, 2**32 - 1),
)


@given(p=params)
def test_sampling_options_cross_the_wire_unchanged(p: SamplingParams) -> None:
    req = GenerationRequest(model="m", prompt="hi", params=p)
    wire = to_wire_request(req, request_id=1, deadline_s=5.0, session=None)
    received = wi.message_from_map(unpack_map(pack(wi.message_to_map(wire))))
    assert isinstance(received, wi.InferRequest)
    assert from_wire_request(received) == req
