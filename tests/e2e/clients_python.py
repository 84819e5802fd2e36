"""The Python client libraries Groq users reach for first (langchain-groq, langchain-openai,
instructor, litellm), each run against Peregrine unchanged but for base URL and key; run by
test_clients_python.py in the clients' own virtual environment.

    python clients_python.py <client> <server_url> <api_key>

Runs every case of that client and prints one JSON line: {case: result}. A case that raises
reports {"error": <traceback>} so the other cases still run and the test shows the failure.
Replies stay short (a 0.5B model on CPU) and greedy, so runs repeat."""

from __future__ import annotations

import io
import json
import os
import sys
import time
import traceback
from typing import Callable

# The test machine reaches nothing but package registries: litellm must use its bundled cost
# map rather than fetch one on import, and must not try (five times, with back-off) to fetch a
# Llama tokenizer from the Hugging Face Hub to count tokens; it falls back to tiktoken.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["HF_HUB_OFFLINE"] = "1"

from pydantic import BaseModel  # noqa: E402

MODEL = "llama-3.3-70b-versatile"
MAX_TOKENS = 32
# A structured answer or a tool call cut short fails validation (Groq's json_validate_failed /
# tool_use_failed), so those cases leave room for the whole object.
STRUCTURED_MAX_TOKENS = 96
CHAT_PROMPT = "Count from one to five."
STRUCTURED_PROMPT = "Extract the city: Paris is the capital of France and has 2 million people."
TOOL_PROMPT = "What is the weather in Paris?"
RESPONSES_PROMPT = "Say hello."


class City(BaseModel):
    """The structured-output target: one field of each JSON scalar type a caller relies on."""

    name: str
    country: str
    population_millions: int
    is_capital: bool


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}


def structured_result(obj: BaseModel) -> dict:
    """What the test checks of a structured output: the class the client returned and the
    JSON type of each field (pydantic already validated, so this shows it coerced nothing)."""
    fields = obj.model_dump()
    return {
        "class": type(obj).__name__,
        "fields": fields,
        "types": {k: type(v).__name__ for k, v in fields.items()},
    }


def tokens(prompt: int, completion: int, total: int) -> dict:
    """Token usage under one set of names: each client spells them its own way."""
    return {"input": prompt, "output": completion, "total": total}


def langchain_tokens(usage: dict | None) -> dict | None:
    return usage and tokens(usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])


def tool_call_result(name: str, arguments: str | dict) -> dict:
    """A tool call as the test checks it: the function name and its arguments parsed as JSON
    (clients hand back either the raw string or an already parsed dict)."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return {"name": name, "args": args}


# --- langchain (langchain-groq and langchain-openai share the chat-model interface) ---------


def roomy(llm):
    """The same chat model with room for a whole object (a bind() would be lost: the
    structured-output wrapper is built from the bare model)."""
    return llm.model_copy(update={"max_tokens": STRUCTURED_MAX_TOKENS})


def langchain_chat(llm) -> dict:
    msg = llm.invoke(CHAT_PROMPT)
    return {"text": msg.content, "usage": langchain_tokens(msg.usage_metadata)}


def langchain_stream(llm) -> dict:
    """Streams and sums the chunks: the sum's text must be the chunks' texts joined."""
    chunks = list(llm.stream(CHAT_PROMPT))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return {
        "chunks": [c.content for c in chunks],
        "text": total.content,
        "usage": langchain_tokens(total.usage_metadata),
    }


def langchain_structured(llm) -> dict:
    """with_structured_output with the class's default method (function calling for ChatGroq,
    json_schema for ChatOpenAI): what a first-time user gets."""
    runnable = roomy(llm).with_structured_output(City)
    return structured_result(runnable.invoke(STRUCTURED_PROMPT))


def langchain_tools(llm) -> dict:
    """bind_tools with the function forced by name."""
    msg = roomy(llm).bind_tools([WEATHER_TOOL], tool_choice="get_weather").invoke(TOOL_PROMPT)
    return {"calls": [tool_call_result(c["name"], c["args"]) for c in msg.tool_calls]}


def chat_groq(server: str, api_key: str):
    from langchain_groq import ChatGroq

    # langchain-groq hands base_url to the groq SDK, which appends /openai/v1 itself.
    return ChatGroq(model=MODEL, base_url=server, api_key=api_key, temperature=0,
                    max_tokens=MAX_TOKENS, max_retries=0)


def chat_openai(server: str, api_key: str, **kwargs):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=f"{server}/openai/v1", api_key=api_key, temperature=0,
                      max_tokens=MAX_TOKENS, max_retries=0, **kwargs)


def langchain_groq_cases(server: str, api_key: str) -> dict[str, Callable[[], dict]]:
    llm = chat_groq(server, api_key)
    return {
        "chat": lambda: langchain_chat(llm),
        "stream": lambda: langchain_stream(llm),
        "structured": lambda: langchain_structured(llm),
        "tools": lambda: langchain_tools(llm),
    }


def langchain_openai_responses(server: str, api_key: str) -> dict:
    """ChatOpenAI(use_responses_api=True) sends /responses instead of /chat/completions."""
    msg = chat_openai(server, api_key, use_responses_api=True).invoke(RESPONSES_PROMPT)
    return {"text": msg.text, "usage": langchain_tokens(msg.usage_metadata),
            "id": msg.response_metadata.get("id")}


def langchain_openai_cases(server: str, api_key: str) -> dict[str, Callable[[], dict]]:
    # stream_usage: ChatOpenAI only asks for usage in a stream when told to.
    llm = chat_openai(server, api_key, stream_usage=True)
    return {
        "chat": lambda: langchain_chat(llm),
        "stream": lambda: langchain_stream(llm),
        "structured": lambda: langchain_structured(llm),
        "tools": lambda: langchain_tools(llm),
        "responses": lambda: langchain_openai_responses(server, api_key),
    }


# --- instructor ----------------------------------------------------------------------------


def instructor_client(server: str, api_key: str):
    """instructor.from_groq over the groq SDK, in its default mode (TOOLS: a forced call)."""
    import groq
    import instructor

    return instructor.from_groq(groq.Groq(base_url=server, api_key=api_key, max_retries=0))


def instructor_structured(client) -> dict:
    city = client.chat.completions.create(
        model=MODEL, response_model=City, max_retries=1, temperature=0,
        max_tokens=STRUCTURED_MAX_TOKENS, messages=[{"role": "user", "content": STRUCTURED_PROMPT}],
    )
    return structured_result(city)


def instructor_partial(client) -> dict:
    """create_partial streams partial objects as the arguments arrive; the last is complete."""
    partials = list(client.chat.completions.create_partial(
        model=MODEL, response_model=City, max_retries=1, temperature=0,
        max_tokens=STRUCTURED_MAX_TOKENS, messages=[{"role": "user", "content": STRUCTURED_PROMPT}],
    ))
    return {"count": len(partials), **structured_result(City.model_validate(partials[-1].model_dump()))}


def instructor_cases(server: str, api_key: str) -> dict[str, Callable[[], dict]]:
    client = instructor_client(server, api_key)
    return {
        "structured": lambda: instructor_structured(client),
        "partial": lambda: instructor_partial(client),
    }


# --- litellm -------------------------------------------------------------------------------


def litellm_module():
    """litellm with its telemetry off: it must not try to reach the internet."""
    import litellm

    litellm.telemetry = False
    return litellm


def litellm_tokens(usage) -> dict:
    return tokens(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def litellm_chat(litellm, kw: dict) -> dict:
    resp = litellm.completion(messages=[{"role": "user", "content": CHAT_PROMPT}], **kw)
    return {"text": resp.choices[0].message.content, "usage": litellm_tokens(resp.usage)}


def litellm_stream(litellm, kw: dict) -> dict:
    """stream_options.include_usage: the usage arrives in the last chunk, as from Groq."""
    stream = litellm.completion(messages=[{"role": "user", "content": CHAT_PROMPT}], stream=True,
                                stream_options={"include_usage": True}, **kw)
    chunks, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks.append(chunk.choices[0].delta.content)
        if getattr(chunk, "usage", None):
            usage = litellm_tokens(chunk.usage)
    return {"chunks": chunks, "text": "".join(chunks), "usage": usage}


def litellm_structured(litellm, kw: dict) -> dict:
    """response_format=<pydantic class>. litellm's model map lists no native json_schema for
    groq/llama-3.3-70b-versatile, so it sends the schema as a forced "json_tool_call" tool and
    hands the call's arguments back as the message content."""
    resp = litellm.completion(messages=[{"role": "user", "content": STRUCTURED_PROMPT}],
                              response_format=City, **{**kw, "max_tokens": STRUCTURED_MAX_TOKENS})
    return structured_result(City.model_validate_json(resp.choices[0].message.content))


def litellm_tools(litellm, kw: dict) -> dict:
    resp = litellm.completion(messages=[{"role": "user", "content": TOOL_PROMPT}],
                              tools=[WEATHER_TOOL], tool_choice="required",
                              **{**kw, "max_tokens": STRUCTURED_MAX_TOKENS})
    calls = resp.choices[0].message.tool_calls or []
    return {"calls": [tool_call_result(c.function.name, c.function.arguments) for c in calls]}


def litellm_responses(litellm, kw: dict) -> dict:
    """litellm.responses() with the openai provider: litellm's groq provider has no Responses
    config and bridges the call onto /chat/completions, so only this one reaches /responses."""
    from litellm.responses.utils import ResponsesAPIRequestUtils

    resp = litellm.responses(input=RESPONSES_PROMPT, max_output_tokens=MAX_TOKENS, **kw)
    # litellm wraps the server's id in its own base64 routing id; the server's is inside.
    server_id = ResponsesAPIRequestUtils.decode_previous_response_id_to_original_previous_response_id(resp.id)
    usage = tokens(resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens)
    return {"text": resp.output_text, "usage": usage, "id": server_id}


def wait_for_batch(litellm, batch_id: str, kw: dict, timeout_s: float = 300.0):
    """Polls retrieve_batch until the batch ends (one short line: seconds on a CPU)."""
    deadline = time.monotonic() + timeout_s
    while True:
        batch = litellm.retrieve_batch(batch_id=batch_id, **kw)
        if batch.status in ("completed", "failed", "expired", "cancelled") or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


def litellm_files_batches(litellm, server: str, api_key: str) -> dict:
    """Uploads a one-line batch file, runs a batch over it and reads its output back, through
    litellm's OpenAI-compatible Files/Batches calls (they have no groq provider)."""
    kw = {"custom_llm_provider": "openai", "api_base": f"{server}/openai/v1", "api_key": api_key}
    line = {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 8, "temperature": 0,
                     "messages": [{"role": "user", "content": CHAT_PROMPT}]}}
    upload = io.BytesIO((json.dumps(line) + "\n").encode())
    upload.name = "batch.jsonl"
    created = litellm.create_file(file=upload, purpose="batch", **kw)
    batch = litellm.create_batch(completion_window="24h", endpoint="/v1/chat/completions",
                                 input_file_id=created.id, **kw)
    done = wait_for_batch(litellm, batch.id, kw)
    output = litellm.file_content(file_id=done.output_file_id, **kw) if done.output_file_id else None
    return {
        "file": {"id": created.id, "purpose": created.purpose, "bytes": created.bytes},
        "batch": {"id": batch.id, "input_file_id": batch.input_file_id},
        "done": {"id": done.id, "status": done.status,
                 "counts": done.request_counts.model_dump() if done.request_counts else None},
        "output": [json.loads(x) for x in output.text.splitlines()] if output else None,
    }


def litellm_cases(server: str, api_key: str) -> dict[str, Callable[[], dict]]:
    litellm = litellm_module()
    # The groq provider, as Groq users write it; api_base is the OpenAI-style root.
    kw = {"model": f"groq/{MODEL}", "api_base": f"{server}/openai/v1", "api_key": api_key,
          "temperature": 0, "max_tokens": MAX_TOKENS, "num_retries": 0}
    return {
        "chat": lambda: litellm_chat(litellm, kw),
        "stream": lambda: litellm_stream(litellm, kw),
        "structured": lambda: litellm_structured(litellm, kw),
        "tools": lambda: litellm_tools(litellm, kw),
        "responses": lambda: litellm_responses(
            litellm, {"model": f"openai/{MODEL}", "api_base": f"{server}/openai/v1",
                      "api_key": api_key, "temperature": 0}),
        "files_batches": lambda: litellm_files_batches(litellm, server, api_key),
    }


CLIENTS = {
    "langchain-groq": langchain_groq_cases,
    "langchain-openai": langchain_openai_cases,
    "instructor": instructor_cases,
    "litellm": litellm_cases,
}


def run_case(case: Callable[[], dict]) -> dict:
    """Runs one case; a failure becomes its result, so one broken case hides no other."""
    start = time.monotonic()
    try:
        result = case()
    except Exception:  # noqa: BLE001 - reported to the test, which fails on it
        result = {"error": traceback.format_exc()}
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


def main(client: str, server: str, api_key: str) -> None:
    cases = CLIENTS[client](server, api_key)
    print(json.dumps({name: run_case(case) for name, case in cases.items()}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:4])
