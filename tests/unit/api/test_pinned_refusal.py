"""The 404 for a pinned model id that the mesh serves only at other versions names them."""

from __future__ import annotations

from peerllm.api.generation import api_error
from peerllm.errors import NoRoute

OLD = "sha256:" + "1a2b3c4d" * 8


def test_a_pinned_id_served_at_another_version_names_what_is_served() -> None:
    err = api_error(NoRoute("gemma@9f8e7d6c", {}, known=False,
                            versions={"node-a": OLD, "node-b": None}))
    assert err.status == 404
    assert err.message == ("model 'gemma@9f8e7d6c' is not served by any node in the mesh; "
                           "gemma is at 1a2b3c4d (node-a), a version not hashed yet (node-b)")


def test_an_unknown_model_still_says_nobody_serves_it() -> None:
    err = api_error(NoRoute("nope", {}, known=False))
    assert (err.status, err.message) == (404, "model 'nope' is not served by any node in "
                                              "the mesh")
