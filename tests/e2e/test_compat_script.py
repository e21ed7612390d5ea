"""scripts/compat/clients.py, the optional LiteLLM/LangChain lane, keeps working: it starts
its mesh, runs or skips every check, and reports each one in its JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import MODEL, REPO, clean_env

SCRIPT = REPO / "scripts" / "compat" / "clients.py"


def test_the_optional_lane_reports_every_check(tmp_path: Path) -> None:
    out = tmp_path / "compat.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "langchain", "--json",
                           str(out)], capture_output=True, text=True, timeout=600,
                          env=clean_env(), check=False)
    document = json.loads(out.read_text())
    assert document["model"] == MODEL
    results = document["results"]
    assert {r["library"] for r in results} == {"langchain"}
    assert {r["status"] for r in results} <= {"pass", "fail", "skipped"}
    if importlib.util.find_spec("langchain_openai") is None:
        # Not installed (as in CI): every check that needs it says how to install it.
        assert any("pip install litellm langchain-openai langchain-ollama" in r["detail"]
                   for r in results if r["status"] == "skipped")
    assert done.returncode == (1 if any(r["status"] == "fail" for r in results) else 0), \
        done.stderr[-2000:]
    assert "ChatOpenAI invoke" in done.stdout  # the table
