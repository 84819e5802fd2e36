"""Error behaviour through the SDKs and raw HTTP: statuses, exception classes, Groq envelopes."""

from __future__ import annotations

import groq
import httpx
import openai
import pytest

MODEL = "llama-3.3-70b-versatile"
MSGS = [{"role": "user", "content": "Hi"}]


def error_of(exc: groq.APIStatusError | openai.APIStatusError) -> dict:
    """The `error` object of an SDK exception, checked against the Groq envelope."""
    body = exc.response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], err
    assert isinstance(err.get("type"), str) and err["type"], err
    # The groq SDK keeps the whole decoded body; the openai SDK keeps the inner object.
    if isinstance(exc, groq.APIStatusError):
        assert exc.body == body
    else:
        assert exc.body == err
    assert exc.response.headers["content-type"].startswith("application/json")
    return err


def bad_request(groq_client, **kwargs) -> dict:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", MSGS)
    kwargs.setdefault("max_tokens", 2)
    with pytest.raises(groq.BadRequestError) as ei:
        groq_client.chat.completions.create(**kwargs)
    assert ei.value.status_code == 400
    err = error_of(ei.value)
    assert err["type"] == "invalid_request_error", err
    return err


# --- Authentication -----------------------------------------------------------------------------

def test_wrong_api_key_groq(base_url):
    client = groq.Groq(base_url=base_url, api_key="gsk_wrong_key", max_retries=0)
    try:
        with pytest.raises(groq.AuthenticationError) as ei:
            client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
        assert ei.value.status_code == 401
        err = error_of(ei.value)
        assert err["code"] == "invalid_api_key"
        assert err["type"] == "invalid_request_error"
        assert err["message"] == "Invalid API Key"
        with pytest.raises(groq.AuthenticationError):
            client.models.list()
    finally:
        client.close()


def test_wrong_api_key_openai(base_url):
    client = openai.OpenAI(base_url=f"{base_url}/openai/v1", api_key="sk-wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as ei:
            client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
        assert ei.value.status_code == 401
        assert ei.value.code == "invalid_api_key"
        assert error_of(ei.value)["code"] == "invalid_api_key"
    finally:
        client.close()


def test_missing_api_key_raw(base_url):
    r = httpx.post(f"{base_url}/openai/v1/chat/completions", json={"model": MODEL, "messages": MSGS})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_health_needs_no_key(base_url):
    r = httpx.get(f"{base_url}/health")
    assert r.status_code == 200


# --- Model --------------------------------------------------------------------------------------

def test_unknown_model(groq_client):
    with pytest.raises(groq.NotFoundError) as ei:
        groq_client.chat.completions.create(model="no-such-model-xyz", messages=MSGS, max_tokens=2)
    assert ei.value.status_code == 404
    err = error_of(ei.value)
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"
    assert "`no-such-model-xyz`" in err["message"]


def test_unknown_model_streaming_is_plain_json_error(groq_client):
    """Errors before a stream starts are ordinary JSON responses, not SSE."""
    with pytest.raises(groq.NotFoundError) as ei:
        groq_client.chat.completions.create(model="no-such-model-xyz", messages=MSGS, max_tokens=2, stream=True)
    assert error_of(ei.value)["code"] == "model_not_found"


# --- Parameter validation -----------------------------------------------------------------------

def test_n_2(groq_client):
    err = bad_request(groq_client, n=2)
    assert "n" in err["message"]


def test_five_stop_sequences(groq_client):
    err = bad_request(groq_client, stop=["a", "b", "c", "d", "e"])
    assert "stop" in err["message"]


def test_temperature_3(groq_client):
    err = bad_request(groq_client, temperature=3)
    assert "temperature" in err["message"]


def test_top_p_1_5(groq_client):
    err = bad_request(groq_client, top_p=1.5)
    assert "top_p" in err["message"]


def test_empty_messages(groq_client):
    err = bad_request(groq_client, messages=[])
    assert "messages" in err["message"]


def test_unknown_field(groq_client):
    err = bad_request(groq_client, extra_body={"foo": 1})
    assert "property 'foo' is unsupported" in err["message"], err["message"]
    assert "code" not in err or err["code"] is None


def test_unknown_field_openai(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2, extra_body={"foo": 1})
    assert ei.value.status_code == 400
    err = error_of(ei.value)
    assert err["type"] == "invalid_request_error"
    assert "property 'foo' is unsupported" in err["message"], err["message"]


def test_unknown_nested_field(groq_client):
    err = bad_request(groq_client, messages=[{"role": "user", "content": "Hi", "zzz": 1}])
    assert "property 'messages[0].zzz' is unsupported" in err["message"], err["message"]


def test_context_length_exceeded(groq_client):
    words = " ".join(["word"] * 40_000)
    err = bad_request(groq_client, messages=[{"role": "user", "content": words}])
    assert err["code"] == "context_length_exceeded", err
    assert "reduce the length" in err["message"]


def test_valid_request_after_errors_still_works(groq_client):
    """The error paths leave the server healthy."""
    resp = groq_client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
    assert resp.choices[0].message.content


# --- Raw HTTP -----------------------------------------------------------------------------------

@pytest.fixture
def raw(base_url, api_key):
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120) as c:
        yield c


def _raw_400(raw: httpx.Client, content: str | bytes) -> dict:
    r = raw.post("/openai/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["type"] == "invalid_request_error", err
    assert err["message"], err
    return err


def test_raw_malformed_json(raw):
    err = _raw_400(raw, '{"model": "llama-3.3-70b-versatile", "messages": [')
    assert "json" in err["message"].lower()


def test_raw_not_an_object(raw):
    _raw_400(raw, '["llama-3.3-70b-versatile"]')


def test_raw_missing_model(raw):
    err = _raw_400(raw, '{"messages": [{"role": "user", "content": "Hi"}]}')
    assert "model" in err["message"]


def test_raw_missing_messages(raw):
    err = _raw_400(raw, '{"model": "llama-3.3-70b-versatile"}')
    assert "messages" in err["message"]


def test_raw_wrong_type(raw):
    err = _raw_400(
        raw,
        '{"model": "llama-3.3-70b-versatile", "messages": [{"role": "user", "content": "Hi"}], '
        '"temperature": "hot"}',
    )
    assert "temperature" in err["message"]


def test_raw_v1_prefix_errors_too(raw):
    r = raw.post("/v1/chat/completions", json={"model": "no-such-model-xyz", "messages": MSGS})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_raw_success_headers(raw):
    r = raw.post("/openai/v1/chat/completions", json={"model": MODEL, "messages": MSGS, "max_tokens": 2})
    assert r.status_code == 200
    body = r.json()
    assert r.headers["x-request-id"] == body["x_groq"]["id"]
    assert body["choices"][0]["logprobs"] is None
    assert "logprobs" in body["choices"][0]
