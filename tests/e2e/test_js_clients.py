"""The official JavaScript ``openai`` and ``ollama`` npm clients through a node that holds
no model.

The scripts in tests/compat/js/ run under node against the front node of a two-node mesh
(``mesh`` in conftest.py) and print one JSON object, {case: result}; the assertions are
here. The packages are pinned in tests/compat/js/package-lock.json and installed with
``npm ci --prefix tests/compat/js`` (``.ci/run`` does it). Without node or the packages the
tests skip, except under ``PEERLLM_CI=1`` (set by .ci/run), where they must be present.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest
import trio

from tests.e2e.conftest import Mesh
from tests.helpers import MODEL, REPO

JS = REPO / "tests" / "compat" / "js"
INSTALL = "npm ci --prefix tests/compat/js"
SCRIPT_TIMEOUT_S = 180.0
"""A hang guard only: every case of a script together takes a few seconds."""


@pytest.fixture
def node_js() -> str:
    """The node executable, once the packages are installed; skip (or fail in CI) if not.

    A plain fixture, so that it decides before the mesh starts (and pytest keeps the reason).
    """
    node = shutil.which("node")
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    absent = [name for name in wanted
              if not (JS / "node_modules" / name / "package.json").is_file()]
    if node is None:
        missing = "node (Node.js 20 or later) is not on PATH"
    elif absent:
        missing = f"npm package(s) {', '.join(absent)} not installed (run `{INSTALL}`)"
    else:
        return node
    if os.environ.get("PEERLLM_CI") == "1":
        pytest.fail(f"the JavaScript client lane must run in CI: {missing}")
    pytest.skip(f"JavaScript client lane: {missing}")


async def run_script(node: str, mesh: Mesh, package: str, *cases: str) -> dict[str, Any]:
    """Run tests/compat/js/<package>.mjs against the mesh's front node; its JSON result."""
    with trio.fail_after(SCRIPT_TIMEOUT_S):
        done = await trio.run_process(
            [node, str(JS / f"{package}.mjs"), mesh.url, MODEL, *cases],
            capture_stdout=True, capture_stderr=True, check=False, cwd=JS)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{package}.mjs exited {done.returncode}: {err[-2000:]}"
    results: dict[str, Any] = json.loads(out)
    return results


def ok(results: dict[str, Any], case: str) -> dict[str, Any]:
    """A case's result, failing with what the client threw if it threw."""
    result: dict[str, Any] = results[case]
    assert "thrown" not in result, f"{case}: {result['thrown']}"
    return result


def refusal(result: dict[str, Any], status: int) -> dict[str, Any]:
    assert "unexpected_success" not in result, result
    assert result["status"] == status, result
    return result


# -- openai -------------------------------------------------------------------------------

async def test_openai_js_chat_stream_completions_and_errors(node_js: str, mesh: Mesh) -> None:
    results = await run_script(node_js, mesh, "openai", "chat", "stream", "completions", "error")

    chat = ok(results, "chat")
    assert chat["object"] == "chat.completion" and chat["model"] == MODEL
    assert chat["role"] == "assistant" and chat["content"]
    assert chat["finish_reason"] in ("stop", "length")
    assert 0 < chat["usage"]["completion_tokens"] <= 8

    stream = ok(results, "stream")
    assert stream["objects"] == ["chat.completion.chunk"]
    assert stream["first_role"] == "assistant"
    assert stream["text"] == chat["content"]  # greedy: same text streamed or not
    assert stream["finish_reasons"][-1] == chat["finish_reason"]
    assert not any(stream["finish_reasons"][:-1])
    assert stream["usage"] == chat["usage"]

    completions = ok(results, "completions")
    assert completions["object"] == "text_completion" and completions["text"]
    assert 0 < completions["usage"]["completion_tokens"] <= 4

    errors = ok(results, "error")
    unknown = refusal(errors["unknown_model"], 404)
    assert unknown["name"] == "NotFoundError"
    assert unknown["code"] == "model_not_found" and unknown["param"] == "model"
    assert "no-such-model" in unknown["message"]
    n2 = refusal(errors["n2"], 400)
    assert n2["name"] == "BadRequestError" and n2["param"] == "n"
    assert n2["message"] == "400 n must be 1"  # what the user reads: status and our message


async def test_openai_js_embeddings(node_js: str, mesh: Mesh) -> None:
    emb = ok(await run_script(node_js, mesh, "openai", "embeddings"), "embeddings")
    assert emb["count"] == 2 and emb["dims"][0] == emb["dims"][1] > 0
    # The client asks for base64 and decodes it; the float answer must agree.
    assert emb["first_b64"] == pytest.approx(emb["first_float"], abs=1e-5)


async def test_openai_js_structured_output(node_js: str, mesh: Mesh) -> None:
    answer = ok(await run_script(node_js, mesh, "openai", "structured"), "structured")
    assert set(json.loads(answer["content"])) == {"name"}


# -- ollama -------------------------------------------------------------------------------

async def test_ollama_js_chat_stream_generate_and_errors(node_js: str, mesh: Mesh) -> None:
    results = await run_script(node_js, mesh, "ollama", "chat", "stream", "generate", "error")

    chat = ok(results, "chat")
    assert chat["model"] == MODEL and chat["done"] is True
    assert chat["done_reason"] in ("stop", "length")
    assert chat["role"] == "assistant" and chat["content"]
    assert 0 < chat["eval_count"] <= 8 and chat["prompt_eval_count"] > 0

    stream = ok(results, "stream")
    assert stream["done"][-1] is True and not any(stream["done"][:-1])
    assert stream["text"] == chat["content"]
    assert stream["done_reason"] == chat["done_reason"]

    generate = ok(results, "generate")
    assert generate["done"] is True and generate["response"] == chat["content"]
    assert generate["streamed"] == generate["response"]
    assert generate["streamed_done"][-1] is True and not any(generate["streamed_done"][:-1])

    errors = ok(results, "error")
    # ollama-js shows the body's "error" string as the message: it must be a string, never
    # an object ("[object Object]").
    for name, status, needle in (("unknown_model", 404, "no-such-model"),
                                 ("bad_option", 400, "options.temperature"),
                                 ("refused", 400, "tools")):
        refused = refusal(errors[name], status)
        assert refused["name"] == "ResponseError", refused
        assert isinstance(refused["error"], str) and needle in refused["error"], refused
        assert refused["message"] == refused["error"]


async def test_ollama_js_embed(node_js: str, mesh: Mesh) -> None:
    emb = ok(await run_script(node_js, mesh, "ollama", "embeddings"), "embeddings")
    assert emb["count"] == 2 and emb["dims"][0] == emb["dims"][1] > 0


async def test_ollama_js_structured_output(node_js: str, mesh: Mesh) -> None:
    answer = ok(await run_script(node_js, mesh, "ollama", "structured"), "structured")
    assert set(json.loads(answer["content"])) == {"name"}


def test_the_lockfile_pins_what_package_json_asks_for() -> None:
    """`npm ci` refuses a lockfile that disagrees with package.json; catch it here first."""
    manifest = json.loads((JS / "package.json").read_text())
    lock = json.loads((JS / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
