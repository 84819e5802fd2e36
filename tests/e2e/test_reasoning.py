"""Reasoning end to end, through the groq SDK, on a generated Qwen3-style model.

The model (scripts/make_hf_test_models.py `reasoning`) is a tiny Qwen3 built by transformers
from Qwen3's config shrunk and converted by llama.cpp's convert_hf_to_gguf.py, with Qwen3's
real chat template and tokenizer; its embeddings and output are designed so that greedy
decoding follows a script: after the
generation prompt it says `<think>Okay thinking.</think>\\n\\nHello!` and ends its turn; with
`enable_thinking=false` (`reasoning_effort: "none"`) it says `Hello!`. So every assertion
below is exact. What it proves: template rendering, the <think> tokens, splitting reasoning
from the answer for each `reasoning_format`, streaming, usage, grammars and tool calls that
apply to the answer only, and every 400. What it cannot: anything about quality.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import groq
import pytest
from conftest import CLIENT_TIMEOUT_S, ServerProcess, hf_test_models

REASONING = "Okay thinking."
ANSWER = "Hello!"
RAW = f"<think>{REASONING}</think>\n\n{ANSWER}"
# <think>, Okay, " thinking", ".", </think>: the tokens that open, carry and close it.
REASONING_TOKENS = 5
# ...then "\n\n", "Hello", "!" (the end of turn is not counted).
COMPLETION_TOKENS = 8
MESSAGES = [{"role": "user", "content": "Hi"}]


def reasoning_model() -> str:
    path = os.environ.get("PEREGRINE_REASONING_MODEL")
    if path:
        return path
    return hf_test_models("reasoning")["model"]


@pytest.fixture(scope="module")
def client(api_key):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-reasoning-")
    server = ServerProcess(api_key, reasoning_model(), data_dir, ("--ctx-size", "2048"))
    url = server.start()
    c = groq.Groq(base_url=url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


MODEL = "qwen3-reasoning-tiny"


def chat(c: groq.Groq, **kw):
    kw.setdefault("messages", MESSAGES)
    return c.chat.completions.create(model=MODEL, temperature=0, **kw)


def details(usage) -> int:
    return usage.completion_tokens_details.reasoning_tokens


def test_the_model_lists_reasoning(client):
    m = client.models.retrieve(MODEL)
    assert "reasoning" in m.supported_features


def test_raw_is_the_default(client):
    r = chat(client)
    msg = r.choices[0].message
    assert msg.content == RAW
    assert msg.reasoning is None
    assert r.usage.completion_tokens == COMPLETION_TOKENS
    assert details(r.usage) == REASONING_TOKENS


@pytest.mark.parametrize(
    "kw, content, reasoning",
    [
        ({"reasoning_format": "raw"}, RAW, None),
        ({"reasoning_format": "parsed"}, ANSWER, REASONING),
        ({"reasoning_format": "hidden"}, ANSWER, None),
        ({"include_reasoning": True}, ANSWER, REASONING),
        ({"include_reasoning": False}, ANSWER, None),
    ],
)
def test_each_format(client, kw, content, reasoning):
    r = chat(client, **kw)
    msg = r.choices[0].message
    assert (msg.content, msg.reasoning) == (content, reasoning)
    assert r.choices[0].finish_reason == "stop"
    # Hidden reasoning is still generated, and billed.
    assert r.usage.completion_tokens == COMPLETION_TOKENS
    assert details(r.usage) == REASONING_TOKENS


@pytest.mark.parametrize(
    "fmt, content, reasoning",
    [("raw", RAW, ""), ("parsed", ANSWER, REASONING), ("hidden", ANSWER, "")],
)
def test_each_format_streaming(client, fmt, content, reasoning):
    stream = chat(client, reasoning_format=fmt, stream=True)
    got_content, got_reasoning, usage, reasons = "", "", None, []
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        got_content += d.content or ""
        got_reasoning += getattr(d, "reasoning", None) or ""
        if chunk.choices[0].finish_reason:
            reasons.append(chunk.choices[0].finish_reason)
            usage = chunk.x_groq.usage
    assert (got_content, got_reasoning) == (content, reasoning)
    assert reasons == ["stop"]
    assert usage.completion_tokens == COMPLETION_TOKENS
    assert details(usage) == REASONING_TOKENS


def test_parsed_reasoning_streams_before_the_answer(client):
    kinds = []
    for chunk in chat(client, reasoning_format="parsed", stream=True):
        d = chunk.choices[0].delta if chunk.choices else None
        if d is not None and getattr(d, "reasoning", None):
            kinds.append("reasoning")
        if d is not None and d.content:
            kinds.append("content")
    assert kinds == ["reasoning"] * 3 + ["content"] * 2, kinds


def test_effort_none_turns_thinking_off(client):
    r = chat(client, reasoning_effort="none", reasoning_format="parsed")
    msg = r.choices[0].message
    assert (msg.content, msg.reasoning) == (ANSWER, None)
    assert details(r.usage) == 0
    assert r.usage.completion_tokens == 2
    # `default` leaves it on.
    r = chat(client, reasoning_effort="default")
    assert r.choices[0].message.content == RAW


def test_json_schema_applies_to_the_answer(client):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    r = chat(
        client,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": schema}},
    )
    msg = r.choices[0].message
    # JSON mode defaults to parsed: the reasoning is free text, the answer is the JSON.
    assert msg.reasoning == REASONING
    assert set(json.loads(msg.content)) == {"ok"}
    assert details(r.usage) == REASONING_TOKENS


def test_json_object_cut_short_is_judged_on_the_answer_alone(client):
    # The bigram model cannot close a free JSON object (it loops inside a string), so the
    # answer is cut by the budget: Groq's json_validate_failed, whose failed_generation is
    # the answer the grammar shaped from its first token, not the reasoning before it.
    e = refusal(lambda: chat(
        client, response_format={"type": "json_object"}, reasoning_format="hidden", max_completion_tokens=24
    ))
    err = e.body["error"] if "error" in e.body else e.body
    assert err["code"] == "json_validate_failed"
    assert err["failed_generation"].startswith("{"), err["failed_generation"]


TOOL = {
    "type": "function",
    "function": {
        "name": "flag",
        "parameters": {
            "type": "object",
            "properties": {"on": {"type": "boolean"}},
            "required": ["on"],
            "additionalProperties": False,
        },
    },
}


def test_reasoning_then_a_required_tool_call(client):
    r = chat(client, tools=[TOOL], tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.reasoning == REASONING
    (call,) = choice.message.tool_calls
    assert call.function.name == "flag"
    assert set(json.loads(call.function.arguments)) == {"on"}


def test_reasoning_then_a_required_tool_call_streaming(client):
    reasoning, calls = "", []
    for chunk in chat(client, tools=[TOOL], tool_choice="required", stream=True):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        reasoning += getattr(d, "reasoning", None) or ""
        calls += d.tool_calls or []
    assert reasoning == REASONING
    assert [c.function.name for c in calls] == ["flag"]


def test_auto_tools_answer_after_reasoning(client):
    r = chat(client, tools=[TOOL])
    msg = r.choices[0].message
    assert (msg.content, msg.reasoning, msg.tool_calls) == (ANSWER, REASONING, None)


def test_multi_turn_with_reasoning_echoed_back(client):
    first = chat(client, reasoning_format="parsed").choices[0].message
    messages = MESSAGES + [
        {"role": "assistant", "content": first.content, "reasoning": first.reasoning},
        {"role": "user", "content": "Again"},
    ]
    r = chat(client, messages=messages, reasoning_format="parsed")
    msg = r.choices[0].message
    assert (msg.content, msg.reasoning) == (ANSWER, REASONING)


@pytest.fixture(scope="module")
def plain_model(groq_client) -> str:
    """The session server's model, which does not reason."""
    model = groq_client.models.list().data[0]
    assert "reasoning" not in model.supported_features
    return model.id


def refusal(call) -> groq.BadRequestError:
    with pytest.raises(groq.BadRequestError) as e:
        call()
    return e.value


@pytest.mark.parametrize(
    "kw, param, words",
    [
        ({"reasoning_format": "parsed", "include_reasoning": True}, "reasoning_format", "cannot both be set"),
        ({"reasoning_format": "raw", "response_format": {"type": "json_object"}}, "reasoning_format", "JSON mode or tool"),
        ({"reasoning_format": "raw", "tools": [TOOL]}, "reasoning_format", "JSON mode or tool"),
        ({"reasoning_format": "verbose"}, "reasoning_format", "must be one of"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "`none`, `default`"),
    ],
)
def test_reasoning_400s(client, kw, param, words):
    e = refusal(lambda: chat(client, **kw))
    err = e.body["error"] if "error" in e.body else e.body
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert words in err["message"], err["message"]


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"reasoning_format": "parsed"}, "reasoning_format"),
        ({"include_reasoning": True}, "include_reasoning"),
        ({"reasoning_effort": "none"}, "reasoning_effort"),
    ],
)
def test_reasoning_parameters_on_a_model_without_reasoning(groq_client, plain_model, kw, name):
    e = refusal(lambda: groq_client.chat.completions.create(model=plain_model, messages=MESSAGES, **kw))
    err = e.body["error"] if "error" in e.body else e.body
    # Groq's wording (a live capture of `reasoning_effort` on a model without it).
    assert err["message"] == f"`{name}` is not supported with this model"
    assert err["type"] == "invalid_request_error"


def test_include_reasoning_false_on_a_model_without_reasoning_asks_for_nothing(groq_client, plain_model):
    r = groq_client.chat.completions.create(
        model=plain_model, messages=MESSAGES, include_reasoning=False, max_completion_tokens=4, temperature=0
    )
    assert r.choices[0].message.reasoning is None
    assert r.usage.completion_tokens_details is None
