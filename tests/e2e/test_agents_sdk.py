"""The OpenAI Agents SDK (Python) runs an agent with one function tool end to end on the
default model, through the Responses API, unchanged but for base_url and key. It lives in
its own virtual environment (scripts/setup.sh --python); its tracing export is off, as it
needs the network."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

AGENTS_VENV = Path(os.environ.get("PEREGRINE_AGENTS_VENV", Path.home() / ".cache/peregrine/venv-agents"))
AGENT = Path(__file__).with_name("agents_sdk_agent.py")


def test_an_agent_with_one_function_tool_finishes(server, api_key):
    python = AGENTS_VENV / "bin" / "python"
    assert python.exists(), f"no Agents SDK environment at {AGENTS_VENV}: run scripts/setup.sh --python"
    out = subprocess.run(
        [str(python), str(AGENT), server, api_key, "llama-3.3-70b-versatile"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The tool ran (once: the repeat guard turns a second identical call into the answer),
    # and the agent finished with an answer that uses its result.
    assert result["calls"] == ["Paris"], result
    answer = result["final_output"].lower()
    assert "sunny" in answer or "21" in answer, result
