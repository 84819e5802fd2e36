"""The Responses API (`/openai/v1/responses`, Groq's beta) through the OpenAI SDK, unchanged but
for base_url and key: `responses.create`, `responses.stream`, `responses.parse` with a pydantic
model, function tools over two turns, and Groq's 400s for the fields it does not support."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

MODEL = "llama-3.3-70b-versatile"  # Groq's id, served by the default model

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_create_answers_with_a_message(openai_client):
    r = openai_client.responses.create(
        model=MODEL,
        instructions="Answer in one short sentence.",
        input="What is the capital of France?",
        max_output_tokens=40,
        temperature=0,
    )
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed", r
    assert "paris" in r.output_text.lower()
    assert r.output[-1].type == "message" and r.output[-1].role == "assistant"
    u = r.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert r.max_output_tokens == 40 and r.store is False and r.previous_response_id is None


def test_a_short_budget_gives_an_incomplete_response(openai_client):
    r = openai_client.responses.create(
        model=MODEL, input="Count from 1 to 50.", max_output_tokens=5, temperature=0
    )
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5


def test_stream_events_build_the_final_response(openai_client):
    deltas = []
    types = []
    with openai_client.responses.stream(
        model=MODEL, input="Count from 1 to 5.", max_output_tokens=40, temperature=0
    ) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.output_text.done" in types
    assert final.output_text == "".join(deltas)
    assert "1" in final.output_text and "5" in final.output_text
    assert final.usage.output_tokens > 0


class Capital(BaseModel):
    city: str
    country: str


def test_parse_fills_a_pydantic_model(openai_client):
    r = openai_client.responses.parse(
        model=MODEL,
        input="What is the capital of France? Give the city and the country.",
        text_format=Capital,
        temperature=0,
    )
    parsed = r.output_parsed
    assert isinstance(parsed, Capital)
    assert parsed.city.lower() == "paris" and parsed.country.lower() == "france"


def test_function_tools_over_two_turns(openai_client):
    conversation: list = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = openai_client.responses.create(
        model=MODEL, input=conversation, tools=[WEATHER_TOOL], tool_choice="required", temperature=0
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris"}

    # The second turn passes the first response's output back, with the tool's result, and
    # keeps offering the tool (as agent frameworks do).
    conversation += [o.model_dump(exclude_none=True) for o in first.output]
    conversation.append(
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "sunny", "temp_c": 21})}
    )
    second = openai_client.responses.create(
        model=MODEL, input=conversation, tools=[WEATHER_TOOL], temperature=0
    )
    assert [o.type for o in second.output] == ["message"], second.output
    answer = second.output_text.lower()
    assert "sunny" in answer or "21" in answer, answer


def test_streamed_call_arrives_as_a_function_call_item(openai_client):
    with openai_client.responses.stream(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
    ) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in types
    assert final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"previous_response_id": "resp_01k3hgcytaf7vawfkph3pef9qk"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"safety_identifier": "user-1"}, "safety_identifier"),
    ],
)
def test_unsupported_fields_get_groqs_400(openai_client, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.responses.create(model=MODEL, input="hi", **extra)
    assert err.value.status_code == 400
    assert f"`{param}` is not supported" in str(err.value)
