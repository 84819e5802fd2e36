"""Built-in tools and compound systems through the groq SDK, on the real default model.

The seed docs' code-execution and compound examples, with only base_url and api_key changed:
the server runs the model's Python in its sandbox (bubblewrap), feeds the output back, and
answers with `executed_tools`, the transcript in `reasoning`, and usage over every turn.
Where the model's wording is random (the seeds set no temperature), the test checks what the
server guarantees (the shapes, that the code ran); a `seed`ed run checks the arithmetic. The
seed requests add `max_completion_tokens` (each turn's budget) and a `seed`: sampled at
temperature 1 without a bound, the 0.5B model can write thousands of tokens in a turn, and a
request of several turns then outlasts the client's timeout on a slow CPU.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import groq
import pytest

from conftest import CLIENT_TIMEOUT_S, ServerProcess

CORPUS = Path(__file__).resolve().parent / "corpus"
SQRT_PROMPT = "Calculate the square root of 12345. Output only the final answer."
# Completion tokens per turn for the seed requests that set none (see the module docs).
SEED_TURN_BUDGET = 400


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"<html><head><title>Falcon facts</title></head><body><p>Peregrine falcons dive at 390 km/h.</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_host():
    """A loopback web page, allow-listed for the server's website visits."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def tools_server(api_key, served_model, page_host, tmp_path_factory):
    """A server with web search on the test corpus and the loopback page allow-listed."""
    data_dir = tmp_path_factory.mktemp("data")
    server = ServerProcess(
        api_key, served_model, str(data_dir),
        ("--search-dir", str(CORPUS), "--visit-allow-host", page_host),
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def groq_client(tools_server, api_key):
    client = groq.Groq(base_url=tools_server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture
def server(tools_server):
    return tools_server


def _python_outputs(executed) -> list[str]:
    """The printed text of every Python run of an answer (gpt-oss or compound shape)."""
    out = []
    for t in executed or []:
        if t.type == "python":
            out.append(t.output or "")
        elif t.type == "function" and t.name == "python":
            out.extend(r.text or "" for r in t.code_results or [])
    return out


# --- Code execution: gpt-oss quickstart (seed "Code Execution: Gpt Oss Quickstart") ---------


def test_code_execution_gpt_oss_quickstart(groq_client):
    response = groq_client.chat.completions.create(
        messages=[{"role": "user", "content": SQRT_PROMPT}],
        model="openai/gpt-oss-20b",
        tool_choice="required",
        tools=[{"type": "code_interpreter"}],
        max_completion_tokens=SEED_TURN_BUDGET,
        seed=11,
    )
    message = response.choices[0].message
    print(message.content)
    print(message.reasoning)
    assert message.executed_tools, message
    first = message.executed_tools[0]
    print(first)
    assert first.type == "function" and first.name == "python" and first.index == 0
    assert first.search_results.results is None
    assert first.code_results and first.code_results[0].text is not None
    assert "<tool>python(" in message.reasoning and "<output>" in message.reasoning
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_square_root_of_12345_is_computed_by_the_sandbox(groq_client):
    response = groq_client.chat.completions.create(
        messages=[{"role": "user", "content": SQRT_PROMPT}],
        model="openai/gpt-oss-20b",
        tool_choice="required",
        tools=[{"type": "code_interpreter"}],
        temperature=0,
        seed=7,
        max_completion_tokens=SEED_TURN_BUDGET,
    )
    message = response.choices[0].message
    assert message.executed_tools, message
    computed = False
    for t in message.executed_tools:
        sandbox = "".join(r.text or "" for r in t.code_results or [])
        try:
            compile(t.arguments, "<code>", "exec")
        except SyntaxError:
            # Greedy output depends on the CPU's kernels: the 0.5B model sometimes writes
            # `return` at the top level. The sandbox must then report Python's error.
            assert "SyntaxError" in sandbox, (t.arguments, sandbox)
            continue
        if "sqrt(12345)" in t.arguments.replace(" ", ""):
            assert "111.108" in sandbox, (t.arguments, sandbox)
            computed = True
    if computed:
        assert "111.1" in (message.content or ""), message


# --- Compound: code execution only (seed "Built In Tools: Code Execution Only (py)") --------


def test_compound_code_execution_only(groq_client):
    response = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "Calculate the square root of 12345"}],
        compound_custom={"tools": {"enabled_tools": ["code_interpreter"]}},
        max_completion_tokens=SEED_TURN_BUDGET,
        seed=11,
    )
    message = response.choices[0].message
    assert response.model == "groq/compound"
    for i, t in enumerate(message.executed_tools or []):
        assert t.index == i and t.type == "python"
        assert json.loads(t.arguments)["code"]
        assert t.search_results.results == []
    breakdown = response.usage_breakdown
    assert breakdown.models and breakdown.models[0].usage.total_tokens > 0
    assert sum(m.usage.total_tokens for m in breakdown.models) == response.usage.total_tokens


def test_compound_square_root_seeded(groq_client):
    response = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "Calculate the square root of 12345"}],
        compound_custom={"tools": {"enabled_tools": ["code_interpreter"]}},
        temperature=0,
        seed=7,
        max_completion_tokens=SEED_TURN_BUDGET,
    )
    message = response.choices[0].message
    outputs = _python_outputs(message.executed_tools)
    assert any("111.108" in o for o in outputs), message
    assert "111.1" in (message.content or ""), message
    assert "<tool>python(" in message.reasoning


# --- Compound: version header (seed "Compound: Version (py)") --------------------------------


def test_compound_version_latest(server, api_key):
    client = groq.Groq(
        base_url=server, api_key=api_key, default_headers={"Groq-Model-Version": "latest"}, timeout=600
    )
    chat_completion = client.chat.completions.create(
        messages=[{"role": "user", "content": "What is the weather today?"}],
        model="groq/compound",
        max_completion_tokens=64,
    )
    print(chat_completion.choices[0].message.content)
    assert chat_completion.choices[0].message.content is not None
    # Compound's accounting: every turn's usage, per served model, adds up to the total.
    breakdown = chat_completion.usage_breakdown.models
    assert sum(m.usage.total_tokens for m in breakdown) == chat_completion.usage.total_tokens
    for i, t in enumerate(chat_completion.choices[0].message.executed_tools):
        assert t.index == i and t.type in ("search", "python", "visit"), t


def test_compound_unknown_version_is_refused(server, api_key):
    client = groq.Groq(
        base_url=server, api_key=api_key, default_headers={"Groq-Model-Version": "1999-01-01"}, max_retries=0
    )
    with pytest.raises(groq.BadRequestError) as e:
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], model="groq/compound")
    assert e.value.body["error"]["param"] == "Groq-Model-Version"


def test_compound_old_version_has_no_visit_website(server, api_key):
    client = groq.Groq(
        base_url=server, api_key=api_key, default_headers={"Groq-Model-Version": "2025-07-23"}, max_retries=0
    )
    with pytest.raises(groq.BadRequestError) as e:
        client.chat.completions.create(
            messages=[{"role": "user", "content": "hi"}],
            model="groq/compound",
            compound_custom={"tools": {"enabled_tools": ["visit_website"]}},
        )
    assert "newer system version" in e.value.body["error"]["message"]


# --- Compound: executed tools and specific tools (seeds "Compound: Executed Tools",
# "Built In Tools: Enable Specific Tools (py)") -----------------------------------------------


def test_compound_executed_tools(groq_client):
    response = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "What did Groq release last week?"}],
        max_completion_tokens=128,
    )
    executed = response.choices[0].message.executed_tools
    print(executed)
    assert isinstance(executed, list)
    # Version 2025-08-16's defaults: search, code and visits; each entry's record matches.
    for i, t in enumerate(executed):
        assert t.index == i and t.type in ("search", "python", "visit"), t
        json.loads(t.arguments)
        assert t.output is not None
        if t.type == "search":
            assert all(r.url and r.title for r in t.search_results.results)


def test_compound_enable_specific_tools(server, api_key):
    client = groq.Groq(
        base_url=server, api_key=api_key, default_headers={"Groq-Model-Version": "latest"}, timeout=600
    )
    response = client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "Search for recent AI developments and then visit the Groq website"}],
        compound_custom={"tools": {"enabled_tools": ["web_search", "visit_website"]}},
        max_completion_tokens=128,
    )
    for t in response.choices[0].message.executed_tools:
        assert t.type in ("search", "visit"), t
        if t.type == "search":
            for r in t.search_results.results:
                assert r.url.startswith("https://") and r.title and r.score > 0


def test_compound_search_is_ranked_and_filtered(groq_client):
    response = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "Search the web: what did Groq release?"}],
        compound_custom={"tools": {"enabled_tools": ["web_search"]}},
        search_settings={"include_domains": ["groq.com"]},
        temperature=0,
        seed=1,
        max_completion_tokens=96,
    )
    searches = [t for t in response.choices[0].message.executed_tools if t.type == "search"]
    assert searches, response.choices[0].message
    for s in searches:
        assert all(r.url.startswith("https://groq.com/") for r in s.search_results.results), s


def test_compound_visits_an_allow_listed_page(groq_client, page_host):
    url = f"http://{page_host}/falcons"
    response = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": f"Visit {url} and tell me how fast peregrine falcons dive."}],
        compound_custom={"tools": {"enabled_tools": ["visit_website"]}},
        temperature=0,
        seed=1,
        max_completion_tokens=96,
    )
    visits = [t for t in response.choices[0].message.executed_tools if t.type == "visit"]
    assert visits, response.choices[0].message
    assert any("390 km/h" in (t.output or "") for t in visits), visits


# --- Compound mini (seed "Compound: Natural Language (js)", ported) --------------------------


def test_compound_mini_makes_at_most_one_call(groq_client):
    completion = groq_client.chat.completions.create(
        messages=[
            {
                "role": "system",
                "content": "You are a helpful assistant capable of performing calculations and executing simple code when asked.",
            },
            {
                "role": "user",
                "content": "Calculate the monthly payment for a $30,000 loan over 5 years at 6% annual interest.",
            },
        ],
        model="groq/compound-mini",
        max_completion_tokens=200,
    )
    message = completion.choices[0].message
    assert len(message.executed_tools or []) <= 1
    assert message.content is not None


# --- Streaming compound ----------------------------------------------------------------------


def test_compound_streaming_shapes(groq_client):
    stream = groq_client.chat.completions.create(
        model="groq/compound",
        messages=[{"role": "user", "content": "Use Python to compute 17 * 23."}],
        compound_custom={"tools": {"enabled_tools": ["code_interpreter"]}},
        temperature=0,
        seed=3,
        max_completion_tokens=SEED_TURN_BUDGET,
        stream=True,
    )
    reasoning, content, executed, finish = "", "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += delta.reasoning or ""
        content += delta.content or ""
        executed.extend(delta.executed_tools or [])
        if chunk.choices[0].finish_reason:
            finish = chunk
    assert finish is not None
    assert executed and executed[0].type == "python", reasoning
    assert "<tool>python(" in reasoning and "<output>" in reasoning
    assert any("391" in (t.output or "") for t in executed), executed
    breakdown = finish.x_groq.usage_breakdown
    assert breakdown.models[0].usage.total_tokens == finish.x_groq.usage.total_tokens


# --- Refusals ----------------------------------------------------------------------------------


def test_user_tools_on_compound_are_refused(groq_client):
    with pytest.raises(groq.BadRequestError) as e:
        groq_client.chat.completions.create(
            model="groq/compound",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    assert e.value.body["error"]["param"] == "tools"


def test_models_list_compound(groq_client):
    ids = {m.id for m in groq_client.models.list().data}
    assert {"groq/compound", "groq/compound-mini"} <= ids
