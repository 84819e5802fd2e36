"""The Node clients a user reaches for first, unchanged but for base URL and key: the official
`openai` package, `groq-sdk`, and the Vercel AI SDK (`ai` with `@ai-sdk/groq`, and
`@ai-sdk/openai` for the Responses API). node/clients.mjs runs each client's cases and prints
what the client returned; the assertions are here, one test per (client, case). The packages
are pinned in node/package-lock.json and installed with `npm ci` in tests/e2e/node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).with_name("node")
SCRIPT = NODE_DIR / "clients.mjs"
MODEL = "llama-3.3-70b-versatile"
# The batch cases poll for up to 5 minutes; the other cases take seconds each.
RUN_TIMEOUT_S = 900

CLIENT_CASES = {
    "openai-node": ("chat", "stream", "structured", "tools", "batch", "responses", "responses_stream"),
    "groq-sdk": ("chat", "stream", "structured", "tools", "batch"),
    "ai-sdk": ("chat", "stream", "structured", "tools", "agent", "responses", "responses_stream"),
}


@pytest.fixture(scope="module")
def node_results(server, api_key):
    """Starts every client at once (they wait on the server, not on each other) and returns a
    function giving one client's results, waiting for its run the first time."""
    node = shutil.which("node")
    assert node, "no `node` on PATH: the Node client tests need Node.js 20 or later"
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"the Node clients are not installed: run `npm ci` in {NODE_DIR}")
    procs = {
        client: subprocess.Popen(
            [node, str(SCRIPT), client, server, api_key],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for client in CLIENT_CASES
    }
    results: dict[str, dict] = {}

    def result(client: str) -> dict:
        if client not in results:
            out, err = procs[client].communicate(timeout=RUN_TIMEOUT_S)
            assert procs[client].returncode == 0, f"{client} exited {procs[client].returncode}:\n{err[-3000:]}"
            results[client] = json.loads(out.strip().splitlines()[-1])
        return results[client]

    yield result
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def usage_counts(client: str, usage: dict) -> tuple[int, int, int]:
    """(input, output, total) tokens from a client's usage object, whatever its spelling."""
    if client == "ai-sdk":
        return usage["inputTokens"], usage["outputTokens"], usage["totalTokens"]
    if "input_tokens" in usage:  # the Responses API
        return usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


def assert_usage(client: str, usage: dict) -> None:
    inp, out, total = usage_counts(client, usage)
    assert inp > 0 and out > 0 and total == inp + out, usage


def assert_counts_up(text: str) -> None:
    # The prompt asks to count from 1 to 5: separators vary, the digits do not.
    assert re.findall(r"\d", text)[:3] == ["1", "2", "3"], text


def check_chat(client: str, r: dict) -> None:
    assert "paris" in r["text"].lower(), r
    assert r["finish_reason"] == "stop", r
    assert_usage(client, r["usage"])
    if client != "ai-sdk":
        assert r["id"].startswith("chatcmpl-") and r["object"] == "chat.completion", r
        assert r["model"] == MODEL, r


def check_stream(client: str, r: dict) -> None:
    assert r["deltas"] >= 3, r
    assert_counts_up(r["text"])
    assert r["finish_reason"] == "stop", r
    # openai-node and groq-sdk asked for it with stream_options.include_usage.
    assert_usage(client, r["usage"])


def check_structured(client: str, r: dict) -> None:
    city = r["parsed"]
    assert set(city) == {"city", "country", "population_millions", "is_capital"}, city
    assert isinstance(city["city"], str) and "paris" in city["city"].lower(), city
    assert isinstance(city["country"], str) and city["country"], city
    assert isinstance(city["population_millions"], (int, float)), city
    assert not isinstance(city["population_millions"], bool), city
    assert isinstance(city["is_capital"], bool), city
    assert r["finish_reason"] == "stop", r


def assert_paris_weather_call(calls: list) -> None:
    assert [c["name"] for c in calls] == ["get_weather"], calls
    assert set(calls[0]["arguments"]) == {"city"}, calls
    assert "paris" in calls[0]["arguments"]["city"].lower(), calls


def check_tools(client: str, r: dict) -> None:
    assert_paris_weather_call(r["calls"])
    if client == "ai-sdk":
        # The SDK ran the tool with the parsed arguments.
        assert r["finish_reason"] == "tool-calls", r
        assert [x["sky"] for x in r["results"]] == ["sunny"], r
    else:
        assert r["finish_reason"] == "tool_calls", r
        assert r["calls"][0]["id"].startswith("call_") and r["calls"][0]["type"] == "function", r


def check_agent(client: str, r: dict) -> None:
    steps = r["steps"]
    assert_paris_weather_call(steps[0]["calls"])
    # It ended with an answer, not by running out of steps, and the answer uses the result.
    assert steps[-1]["calls"] == [] and r["finish_reason"] == "stop", r
    assert "sunny" in r["text"].lower() or "21" in r["text"], r


def check_batch(client: str, r: dict) -> None:
    assert r["file"]["id"].startswith("file_") and r["file"]["purpose"] == "batch", r
    assert r["status"] == "completed", r
    assert r["request_counts"] == {"total": 2, "completed": 2, "failed": 0}, r
    lines = sorted(r["lines"], key=lambda line: line["custom_id"])
    assert [line["custom_id"] for line in lines] == ["request-1", "request-2"], r
    for line in lines:
        assert line["status_code"] == 200 and line["content"], r


def check_responses(client: str, r: dict) -> None:
    assert r["id"].startswith("resp_"), r
    assert "paris" in r["text"].lower(), r
    assert_usage(client, r["usage"])
    if client == "ai-sdk":
        assert r["finish_reason"] == "stop", r
    else:
        assert r["object"] == "response" and r["status"] == "completed", r


def check_responses_stream(client: str, r: dict) -> None:
    assert r["deltas"] >= 3, r
    assert_counts_up(r["text"])
    if client == "ai-sdk":
        assert r["id"].startswith("resp_") and r["finish_reason"] == "stop", r
        assert_usage(client, r["usage"])
    else:
        types = r["types"]
        assert types[0] == "response.created" and types[-1] == "response.completed", types
        assert "response.output_text.delta" in types and "response.output_text.done" in types, types
        final = r["final"]
        assert final["status"] == "completed" and final["text"] == r["text"], r
        assert_usage(client, final["usage"])


CHECKS = {
    "chat": check_chat,
    "stream": check_stream,
    "structured": check_structured,
    "tools": check_tools,
    "agent": check_agent,
    "batch": check_batch,
    "responses": check_responses,
    "responses_stream": check_responses_stream,
}


@pytest.mark.parametrize(
    ("client", "case"),
    [(client, case) for client, cases in CLIENT_CASES.items() for case in cases],
    ids=lambda value: value,
)
def test_node_client(node_results, client, case):
    results = node_results(client)
    assert case in results, f"clients.mjs ran no {case!r} case for {client}: {sorted(results)}"
    result = results[case]
    assert "error" not in result, f"{client} {case} threw: {json.dumps(result['error'], indent=1)}"
    CHECKS[case](client, result["ok"])
