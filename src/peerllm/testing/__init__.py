"""Test doubles for code built on peerllm: run the protocols, router and engine in tests
without libp2p hosts, network or llama.cpp. Public and kept stable like ``peerllm``.

In-memory peers (``p2p`` protocols over memory instead of libp2p):

* ``memory_peer_pair()`` — two connected ``ByteStream``s (with libp2p-like reset).
* ``open_memory_network()`` — a ``MemoryNetwork``: ``serve(peer, protocol, handler)``
  registers a handler as ``P2PHost.set_handler`` does (same ``safe_handler``), and
  ``opener(peer)`` is a ``StreamOpener`` for ``InferClient`` / ``NodeInfoClient``.

Scripted inference (one step language, ``Step``: seconds of silence, token text,
``DONE``, ``SILENT``, a ``Done`` record, or an exception to raise):

* ``ScriptedGenerator(steps)`` — the local engine as ``InferServer`` sees it.
* ``ScriptedInferClient(scripts)`` — ``InferClient`` whose remote peers play scripts:
  accepted, tokens, done, errors, silence.

Engine without llama.cpp:

* ``FakeBackend(tokens=...)`` — a ``ModelBackend`` emitting scripted tokens in worker
  threads, for ``open_registry(..., backend=FakeBackend())``. Threads and
  ``autojump_clock`` do not mix (the clock jumps while a thread works): use real time
  with it, and ``ScriptedGenerator`` for virtual-time tests. Its embeddings are
  ``fake_vector(text)`` (from a hash of the text: the same on every node).

* ``peerllm.open_node(config, backend=FakeBackend(...))`` — a real node (libp2p
  host, router, HTTP API with ``peerllm.api.open_api``) whose models run on the fake;
  serve a file written by ``write_fake_gguf(path)`` (``models.paths``): a valid GGUF
  header (``FAKE_GGUF``) and no tensors, which the node's header check accepts.

Model files for /peerllm/blob: ``StaticBlobCatalog(entries)`` serves fixed files (by
digest or model id) and ``blob_entry(path, model_id=...)`` makes an entry of a file.

Values: ``make_identity()`` (an in-memory node key) and ``make_node_info(peer_id)``.

Example, a component test on autojump_clock::

    async with open_memory_network() as net:
        server = InferServer(self_peer_id="srv", generate=ScriptedGenerator(["a", DONE]))
        net.serve("srv", wi.PROTOCOL_ID, server.handle)
        client = InferClient(net.opener("cli"), accept_timeout_s=5)
        async with client.request("srv", request) as remote:
            events = [ev async for ev in remote.events()]
"""

from __future__ import annotations

from ._backend import FakeBackend as FakeBackend
from ._backend import FakeInstance as FakeInstance
from ._backend import fake_vector as fake_vector
from ._blob import StaticBlobCatalog as StaticBlobCatalog
from ._blob import blob_entry as blob_entry
from ._gguf import FAKE_GGUF as FAKE_GGUF
from ._gguf import write_fake_gguf as write_fake_gguf
from ._memory import MemoryByteStream as MemoryByteStream
from ._memory import MemoryNetwork as MemoryNetwork
from ._memory import MemoryOpener as MemoryOpener
from ._memory import memory_peer_pair as memory_peer_pair
from ._memory import open_memory_network as open_memory_network
from ._scripts import DONE as DONE
from ._scripts import SILENT as SILENT
from ._scripts import ScriptedGeneration as ScriptedGeneration
from ._scripts import ScriptedGenerator as ScriptedGenerator
from ._scripts import ScriptedInferClient as ScriptedInferClient
from ._scripts import Step as Step
from ._values import make_identity as make_identity
from ._values import make_node_info as make_node_info

__all__ = [
    "DONE",
    "FAKE_GGUF",
    "SILENT",
    "FakeBackend",
    "FakeInstance",
    "MemoryByteStream",
    "MemoryNetwork",
    "MemoryOpener",
    "ScriptedGeneration",
    "ScriptedGenerator",
    "ScriptedInferClient",
    "StaticBlobCatalog",
    "Step",
    "blob_entry",
    "fake_vector",
    "make_identity",
    "make_node_info",
    "memory_peer_pair",
    "open_memory_network",
    "write_fake_gguf",
]
