"""Structured outputs through the official groq SDK: every seed schema non-streaming, and five
of them (one of each shape) streaming too (beyond Groq), checked with `jsonschema`; pydantic
seeds parse with `model_validate_json` (a few runs may instead loop to the token budget and be refused, see
MAX_LOOPS); bad schemas and unfinished values get Groq's errors.

The seed requests are sent as documented (messages, response_format) with only the client's
base_url and api_key changed, plus `max_completion_tokens` so a runaway answer cannot stall the
suite and `temperature: 0` for repeatable runs on a 0.5B model.
"""

from __future__ import annotations

import json
from pathlib import Path

import groq
import jsonschema
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "structured"
SEEDS = json.loads((FIXTURES / "seeds.json").read_text())
MODEL = "openai/gpt-oss-20b"  # Groq's structured-outputs model id; an alias of the default model
BUDGET = 1500
# The seeds also run streamed: an enum-heavy object, arrays of objects, a strict schema, a
# strict recursive one and a pydantic model. Streaming changes how the value reaches the client,
# not how it is decoded, so one of each shape checks it; all sixteen streamed cost ~3 of CI's
# minutes on a slow CPU.
STREAMED = {"product_review", "math_response", "create_task", "organization_chart", "email_classification_pydantic"}


def _id(seed: dict) -> str:
    # Some seeds show one schema twice (JSON and pydantic/zod) under the same name.
    return seed.get("id", seed["name"])


def _request(seed: dict, stream: bool) -> dict:
    return dict(
        model=MODEL,
        messages=seed["messages"],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": seed["name"],
                "schema": seed["schema"],
                **({"strict": True} if seed.get("strict") else {}),
            },
        },
        max_completion_tokens=BUDGET,
        temperature=0,
        stream=stream,
    )


# The greedy 0.5B model can fall into a repetition loop on a long seed schema, writing the
# schema's own words as array items until the token budget runs out. Which seeds do depends on
# the CPU's kernels and on whether the prompt came from the cache (the last bits of the logits
# differ): on one machine kind none did, on another the pydantic SQL seed did and one streamed
# seed too. That is the model, not the constraint, so such a run must end as an unfinished
# value refused with json_validate_failed (never an invalid value or an early stop), and at
# most MAX_LOOPS of the runs may end so. The Rust test `seed_schemas_produce_valid_values` has
# the same rule.
MAX_LOOPS = 3

# Each seed first without, then (for STREAMED) with streaming; the second reuses the cached
# prompt.
SEED_RUNS = [(s, stream) for s in SEEDS for stream in (False, True) if not stream or _id(s) in STREAMED]
assert STREAMED <= {_id(s) for s in SEEDS}, STREAMED - {_id(s) for s in SEEDS}


class RanToBudget(str):
    """The failed_generation of a seed that looped until the budget and was refused."""


def _answer(client: groq.Groq, seed: dict, stream: bool) -> str:
    if not stream:
        resp = client.chat.completions.create(**_request(seed, False))
        assert resp.choices[0].finish_reason == "stop", resp
        return resp.choices[0].message.content
    parts = []
    finish = None
    for chunk in client.chat.completions.create(**_request(seed, True)):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    return "".join(parts)


def _run(client: groq.Groq, seed: dict, stream: bool) -> str:
    try:
        return _answer(client, seed, stream)
    except groq.APIError as e:
        if not isinstance(e.body, dict):
            raise
        # A plain response's body is the envelope; a stream's error event is the error itself.
        err = e.body.get("error", e.body)
        if err.get("code") != "json_validate_failed":
            raise
        return RanToBudget(err["failed_generation"])


def _assert_ran_to_budget(text: str) -> None:
    # The grammar lets no invalid JSON through, so a value that does not parse was cut; every
    # token of a JSON value is at least one character, so a run that used the whole budget is
    # at least BUDGET characters long.
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert len(text) >= BUDGET, text


@pytest.fixture(scope="module")
def seed_outputs(module_groq_client):
    """Every seed, both ways, one request at a time.

    Greedy output of a request running alone is repeatable; batched beside others, its logits
    can differ in the last bits (docs/decisions/0003), and for a few of these long schemas the
    0.5B model then falls into a repetition loop that runs to the token budget (a
    json_validate_failed, correctly). One at a time keeps the suite deterministic.
    """
    outs = [_run(module_groq_client, *run) for run in SEED_RUNS]
    return {(_id(s), stream): out for (s, stream), out in zip(SEED_RUNS, outs)}


def test_few_seed_runs_loop_to_the_budget(seed_outputs):
    looped = [k for k, text in seed_outputs.items() if isinstance(text, RanToBudget)]
    print("ran to the token budget:", looped)
    assert len(looped) <= MAX_LOOPS, looped


@pytest.mark.parametrize(
    "seed,stream", SEED_RUNS, ids=[f"{_id(s)}-{'stream' if st else 'plain'}" for s, st in SEED_RUNS]
)
def test_seed_schema_output_validates(seed_outputs, seed, stream):
    text = seed_outputs[(_id(seed), stream)]
    if isinstance(text, RanToBudget):
        _assert_ran_to_budget(text)
        return
    value = json.loads(text)
    jsonschema.validate(value, seed["schema"])
    if seed.get("pydantic"):
        ns: dict = {}
        exec(seed["pydantic"], ns)  # the seed's own pydantic models
        model = ns[seed["pydantic_model"]]
        # exec'd classes resolve their forward references in the exec namespace.
        model.model_rebuild(_types_namespace=ns)
        model.model_validate_json(text)


def test_json_object_mode(groq_client):
    resp = groq_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give the name and population of two large cities."}],
        response_format={"type": "json_object"},
        max_completion_tokens=300,
        temperature=0,
    )
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


def test_unsupported_schema_is_a_400(groq_client):
    with pytest.raises(groq.BadRequestError) as e:
        groq_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "List numbers"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "nums", "schema": {"type": "array", "uniqueItems": True}},
            },
        )
    assert "uniqueItems" in e.value.body["error"]["message"]


def test_strict_rules_are_enforced(groq_client):
    with pytest.raises(groq.BadRequestError) as e:
        groq_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "A person"}],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "person",
                    "strict": True,
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
            },
        )
    assert "additionalProperties" in e.value.body["error"]["message"]


def test_unfinished_value_is_json_validate_failed(groq_client):
    with pytest.raises(groq.BadRequestError) as e:
        groq_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe Paris in JSON with many fields."}],
            response_format={"type": "json_object"},
            max_completion_tokens=5,
            # Greedy: sampled, a short answer such as `{}` can close the value within 5 tokens.
            temperature=0,
        )
    err = e.value.body["error"]
    assert err["code"] == "json_validate_failed"
    assert err["failed_generation"].startswith("{")


def test_unfinished_stream_raises(groq_client):
    stream = groq_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris in JSON with many fields."}],
        response_format={"type": "json_object"},
        max_completion_tokens=5,
        temperature=0,
        stream=True,
    )
    with pytest.raises(groq.APIError) as e:
        for _ in stream:
            pass
    assert "JSON" in str(e.value)
