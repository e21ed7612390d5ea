"""The node-info document shows what peers see of each model: its file, digest and target."""

from __future__ import annotations

import dataclasses

from peerllm.mesh.documents import info_document
from peerllm.wire import nodeinfo as wni
from tests.unit.wire.test_nodeinfo import sample_info

DIGEST = "sha256:" + "cd" * 32


def test_info_document_models_carry_digest_file_size_and_replicas() -> None:
    info = sample_info()
    model = wni.ModelInfo(id="tiny", loaded=True, context_size=512, size_bytes=9_000,
                          tags=("small",), file_bytes=8_000, digest=DIGEST, replicas=2)
    doc = info_document(dataclasses.replace(info, models=(model,)), uptime_s=1.0,
                        network={}, limits={})
    assert doc["models"] == [{"id": "tiny", "loaded": True, "size_bytes": 9_000,
                              "file_bytes": 8_000, "digest": DIGEST, "replicas": 2,
                              "context_size": 512, "tags": ["small"]}]
