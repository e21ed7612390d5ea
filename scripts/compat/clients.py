"""Optional compatibility lane: LiteLLM and LangChain against a two-node PeerLLM mesh.

Starts two in-process nodes on 127.0.0.1 (``holder`` serves the bundled model, ``front``
serves none and is bootstrapped to holder), points each library at front, runs its basic
calls (chat whole and streamed, embeddings, structured output) and prints a pass/fail table,
then the results as JSON (``--json PATH`` writes them to a file too). Exit status: 0 when
every check that ran passed, 1 otherwise; a library that is not installed is reported as
``skipped``, not failed.

It installs nothing. The libraries are not test dependencies (they are large and change
often); install them yourself first:

    pip install litellm langchain-openai langchain-ollama
    python scripts/compat/clients.py
    python scripts/compat/clients.py --only langchain --json /tmp/compat.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

import peerllm
from peerllm.api import open_api
from peerllm.config import NodeConfig, config_from_mapping
from peerllm.inference.catalog import DEFAULT_MODEL_ID as MODEL

INSTALL = "pip install litellm langchain-openai langchain-ollama"
HELLO = "Say hello."
MAX_TOKENS = 8
READY_TIMEOUT_S = 60.0
"""How long front may take to learn holder's model before the run gives up."""


@dataclass(frozen=True)
class Check:
    library: str
    name: str
    run: Callable[[str], str]
    """Called with front's base URL (no path); returns a short detail or raises."""


@dataclass(frozen=True)
class Outcome:
    library: str
    check: str
    status: str  # "pass", "fail" or "skipped"
    detail: str
    seconds: float


class NotInstalled(Exception):
    """The library for a check is not importable; the check is skipped, not failed."""


def need(module: str) -> Any:
    """Import ``module`` or raise NotInstalled naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NotInstalled(f"{module} is not installed ({INSTALL})") from e


def short(text: object, limit: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def must(condition: bool, problem: str) -> None:
    if not condition:
        raise AssertionError(problem)


def parse_person(text: str) -> str:
    value = json.loads(text)
    must(isinstance(value, dict) and isinstance(value.get("name"), str),
         f"not a {{'name': str}} object: {short(text)}")
    return short(text)


PERSON_SCHEMA = {"title": "person", "description": "A person.", "type": "object",
                 "properties": {"name": {"type": "string"}}, "required": ["name"]}


# -- LiteLLM ------------------------------------------------------------------------------

def need_litellm() -> Any:
    # Its price table is otherwise fetched from the internet on import (three tries).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = need("litellm")
    litellm.suppress_debug_info = True  # else each error prints a help banner on stdout
    return litellm


def litellm_chat(url: str, provider: str) -> str:
    litellm = need_litellm()
    base = url + "/v1" if provider == "openai" else url
    answer = litellm.completion(model=f"{provider}/{MODEL}", api_base=base, api_key="x",
                                messages=[{"role": "user", "content": HELLO}],
                                max_tokens=MAX_TOKENS, temperature=0)
    text = answer.choices[0].message.content
    must(bool(text), "empty answer")
    return short(text)


def litellm_stream(url: str, provider: str) -> str:
    litellm = need_litellm()
    base = url + "/v1" if provider == "openai" else url
    chunks = list(litellm.completion(model=f"{provider}/{MODEL}", api_base=base, api_key="x",
                                     messages=[{"role": "user", "content": HELLO}],
                                     max_tokens=MAX_TOKENS, temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    must(bool(text), f"no text in {len(chunks)} chunks")
    return f"{len(chunks)} chunks: {short(text, 40)}"


def litellm_embedding(url: str, provider: str) -> str:
    litellm = need_litellm()
    base = url + "/v1" if provider == "openai" else url
    answer = litellm.embedding(model=f"{provider}/{MODEL}", api_base=base, api_key="x",
                               input=["hello", "world"])
    vectors = [d["embedding"] for d in answer.data]
    must(len(vectors) == 2 and len(vectors[0]) > 0, f"{len(vectors)} vectors")
    return f"2 × {len(vectors[0])} dims"


def litellm_structured(url: str) -> str:
    litellm = need_litellm()
    answer = litellm.completion(
        model=f"openai/{MODEL}", api_base=url + "/v1", api_key="x", temperature=0,
        max_tokens=STRUCTURED_MAX_TOKENS,
        messages=[{"role": "user", "content": "Give a JSON object with a name."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON_SCHEMA}})
    return parse_person(answer.choices[0].message.content or "")


# -- LangChain ----------------------------------------------------------------------------

# A structured answer needs room: a JSON object cut at MAX_TOKENS is no answer.
STRUCTURED_MAX_TOKENS = 128


def chat_openai(url: str, max_tokens: int = MAX_TOKENS) -> Any:
    return need("langchain_openai").ChatOpenAI(
        model=MODEL, base_url=url + "/v1", api_key="x", max_tokens=max_tokens, temperature=0,
        max_retries=0)


def chat_ollama(url: str, max_tokens: int = MAX_TOKENS) -> Any:
    return need("langchain_ollama").ChatOllama(model=MODEL, base_url=url, num_predict=max_tokens,
                                               temperature=0)


ChatModel = Callable[[str, int], Any]


def langchain_invoke(make: ChatModel) -> Callable[[str], str]:
    def run(url: str) -> str:
        text = make(url, MAX_TOKENS).invoke(HELLO).content
        must(bool(text), "empty answer")
        return short(text)
    return run


def langchain_stream(make: ChatModel) -> Callable[[str], str]:
    def run(url: str) -> str:
        chunks = list(make(url, MAX_TOKENS).stream(HELLO))
        text = "".join(str(c.content) for c in chunks)
        must(bool(text), f"no text in {len(chunks)} chunks")
        return f"{len(chunks)} chunks: {short(text, 40)}"
    return run


def langchain_structured(make: ChatModel) -> Callable[[str], str]:
    def run(url: str) -> str:
        model = make(url, STRUCTURED_MAX_TOKENS)
        person = model.with_structured_output(PERSON_SCHEMA).invoke(
            "Give a JSON object with a name.")
        must(isinstance(person, dict) and isinstance(person.get("name"), str),
             f"not a person: {short(person)}")
        return short(person)
    return run


def openai_embeddings(url: str) -> str:
    # check_embedding_ctx_length=False: otherwise it tokenizes with tiktoken (whose
    # encodings are downloaded at run time) and sends token ids, which no GGUF model shares.
    embeddings = need("langchain_openai").OpenAIEmbeddings(
        model=MODEL, base_url=url + "/v1", api_key="x", check_embedding_ctx_length=False,
        max_retries=0)
    vectors = embeddings.embed_documents(["hello", "world"])
    must(len(vectors) == 2 and len(vectors[0]) > 0, f"{len(vectors)} vectors")
    return f"2 × {len(vectors[0])} dims"


def ollama_embeddings(url: str) -> str:
    embeddings = need("langchain_ollama").OllamaEmbeddings(model=MODEL, base_url=url)
    vectors = embeddings.embed_documents(["hello", "world"])
    must(len(vectors) == 2 and len(vectors[0]) > 0, f"{len(vectors)} vectors")
    return f"2 × {len(vectors[0])} dims"


CHECKS: tuple[Check, ...] = (
    Check("litellm", "openai/ chat", lambda u: litellm_chat(u, "openai")),
    Check("litellm", "openai/ stream", lambda u: litellm_stream(u, "openai")),
    Check("litellm", "openai/ embedding", lambda u: litellm_embedding(u, "openai")),
    Check("litellm", "openai/ json_schema", litellm_structured),
    Check("litellm", "ollama/ chat", lambda u: litellm_chat(u, "ollama")),
    Check("litellm", "ollama/ stream", lambda u: litellm_stream(u, "ollama")),
    Check("litellm", "ollama/ embedding", lambda u: litellm_embedding(u, "ollama")),
    Check("langchain", "ChatOpenAI invoke", langchain_invoke(chat_openai)),
    Check("langchain", "ChatOpenAI stream", langchain_stream(chat_openai)),
    Check("langchain", "ChatOpenAI with_structured_output", langchain_structured(chat_openai)),
    Check("langchain", "ChatOllama invoke", langchain_invoke(chat_ollama)),
    Check("langchain", "ChatOllama stream", langchain_stream(chat_ollama)),
    Check("langchain", "ChatOllama with_structured_output", langchain_structured(chat_ollama)),
    Check("langchain", "OpenAIEmbeddings", openai_embeddings),
    Check("langchain", "OllamaEmbeddings", ollama_embeddings),
)


def run_check(check: Check, url: str) -> Outcome:
    started = time.perf_counter()
    try:
        detail, status = check.run(url), "pass"
    except NotInstalled as e:
        detail, status = str(e), "skipped"
    except Exception as e:  # any library error is this check's result, not the run's end
        # The class and the library's own message, never a traceback: that is the report.
        detail, status = f"{type(e).__name__}: {short(e, 160)}", "fail"
    return Outcome(check.library, check.name, status, detail,
                   round(time.perf_counter() - started, 2))


# -- the mesh -----------------------------------------------------------------------------

def mesh_config(root: Path, name: str, *, serve: bool, bootstrap: list[str]) -> NodeConfig:
    return config_from_mapping({
        "data_dir": str(root / name), "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": bootstrap},
        "discovery": {"mdns": False, "dht": False},
        "api": {"host": "127.0.0.1", "port": 0},
        "models": {"serve_default": serve},
    })


async def run_all(checks: list[Check]) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="peerllm-compat-") as tmp:
        root = Path(tmp)
        holder_cfg = mesh_config(root, "holder", serve=True, bootstrap=[])
        async with peerllm.open_node(holder_cfg) as holder:
            front_cfg = mesh_config(root, "front", serve=False, bootstrap=[holder.addrs()[0]])
            async with peerllm.open_node(front_cfg) as front, open_api(front) as url:
                with trio.move_on_after(READY_TIMEOUT_S):
                    while not front.router.candidates(MODEL)[0]:
                        await trio.sleep(0.1)
                if not front.router.candidates(MODEL)[0]:
                    raise SystemExit(f"front did not learn {MODEL} from holder in "
                                     f"{READY_TIMEOUT_S:.0f} s")
                print(f"mesh ready: holder {holder.peer_id}, front {url}", file=sys.stderr)
                # The libraries are synchronous: they run in a thread while the nodes serve.
                return [await trio.to_thread.run_sync(run_check, c, url) for c in checks]


def table(outcomes: list[Outcome]) -> str:
    rows = [("library", "check", "result", "seconds", "detail")]
    rows += [(o.library, o.check, o.status.upper(), f"{o.seconds:.2f}", o.detail)
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True))
                     + "  " + r[4] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted({c.library for c in CHECKS}),
                        help="run one library's checks")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    checks = [c for c in CHECKS if args.only in (None, c.library)]
    outcomes = trio.run(run_all, checks)
    print(table(outcomes))
    document = {"model": MODEL, "peerllm": peerllm.__version__,
                "results": [asdict(o) for o in outcomes]}
    print(json.dumps(document, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(o.status == "fail" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
