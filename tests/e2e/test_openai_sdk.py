"""The same basics through the OpenAI SDK (base_url=<server>/openai/v1), as Groq documents."""

from __future__ import annotations

import math
import os

import openai
import pytest

from _helpers import (
    COUNT_PROMPT,
    FAST_LM_PROMPT,
    SHORT,
    SHORT_ANSWER,
    SYSTEM_HELPFUL,
    assert_chat_completion,
    assert_usage,
    check_stream_chunks,
    field,
)

GROQ_ALIAS = "llama-3.3-70b-versatile"
DEFAULT_ID = "qwen2.5-coder-0.5b-instruct"


def _served_id(served_model: str) -> str | None:
    """The catalogue id the server lists for the served model (None for a GGUF path)."""
    return None if served_model.endswith(".gguf") or os.sep in served_model else served_model


def test_chat_completion(openai_client):
    resp = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=SHORT_ANSWER,
        max_completion_tokens=SHORT,
        temperature=0,
    )
    content = assert_chat_completion(resp, model=GROQ_ALIAS, max_tokens=SHORT, finish_reasons=("stop",))
    assert "paris" in content.lower()
    assert resp.choices[0].logprobs is None
    assert field(resp, "x_groq")["id"].startswith("req_")


def test_chat_completion_with_served_model_id(openai_client, served_model):
    model = _served_id(served_model) or DEFAULT_ID
    if _served_id(served_model) is None:
        pytest.skip("served model is a GGUF path")
    resp = openai_client.chat.completions.create(model=model, messages=SHORT_ANSWER, max_tokens=SHORT)
    assert_chat_completion(resp, model=model, max_tokens=SHORT)


def test_multi_turn_conversation(openai_client):
    resp = openai_client.chat.completions.create(
        model="llama-3.1-8b-instant",
        messages=[
            {"role": "system", "content": "You are a helpful assistant. Answer with a single word."},
            {"role": "user", "content": "My name is Zorblax. Remember it."},
            {"role": "assistant", "content": "OK."},
            {"role": "user", "content": "What is my name? Answer with the name only."},
        ],
        max_completion_tokens=SHORT,
        temperature=0,
    )
    content = assert_chat_completion(resp, model="llama-3.1-8b-instant", max_tokens=SHORT)
    assert "zorb" in content.lower(), content


def test_v1_prefix_also_served(base_url, api_key):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=600)
    try:
        resp = client.chat.completions.create(model=GROQ_ALIAS, messages=SHORT_ANSWER, max_tokens=4)
        assert_chat_completion(resp, model=GROQ_ALIAS, max_tokens=4)
        assert any(m.id == GROQ_ALIAS for m in client.models.list())
    finally:
        client.close()


def test_streaming_with_include_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=[SYSTEM_HELPFUL, FAST_LM_PROMPT],
        max_completion_tokens=SHORT,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    summary = check_stream_chunks(chunks, model=GROQ_ALIAS, include_usage=True)
    assert summary.content.strip()
    assert summary.finish_reason in ("stop", "length")
    usage = summary.usage_chunk.usage
    assert_usage(usage, max_tokens=SHORT, finish_reason=summary.finish_reason)
    x_usage = field(summary.finish_chunk, "x_groq")["usage"]
    assert x_usage["total_tokens"] == usage.total_tokens
    assert x_usage["completion_tokens"] == usage.completion_tokens
    # Only the include_usage chunk has empty choices; intermediate chunks carry no usage.
    assert sum(1 for c in chunks if not c.choices) == 1
    for c in chunks[:-2]:
        assert c.usage is None


def test_stream_matches_non_stream_for_same_seed(openai_client):
    kwargs = dict(model=GROQ_ALIAS, messages=[SYSTEM_HELPFUL, FAST_LM_PROMPT], max_tokens=12,
                  temperature=1, seed=1234)
    plain = openai_client.chat.completions.create(**kwargs)
    chunks = list(openai_client.chat.completions.create(stream=True, **kwargs))
    summary = check_stream_chunks(chunks, model=GROQ_ALIAS)
    assert summary.content == plain.choices[0].message.content
    assert summary.finish_reason == plain.choices[0].finish_reason
    assert field(summary.finish_chunk, "x_groq")["usage"]["completion_tokens"] == plain.usage.completion_tokens


def test_stop_list_of_four(openai_client):
    stop = [", 6", ", six", ", Six", "6"]
    resp = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=[SYSTEM_HELPFUL, COUNT_PROMPT],
        temperature=0,
        max_completion_tokens=48,
        stop=stop,
    )
    content = assert_chat_completion(resp, model=GROQ_ALIAS, max_tokens=48, finish_reasons=("stop",))
    for s in stop:
        assert s not in content, (s, content)
    assert "1, 2, 3, 4, 5" in content


def test_stop_single_character_streamed(openai_client):
    """A one-character stop string: generation halts before it, in a stream too."""
    stream = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=[SYSTEM_HELPFUL, COUNT_PROMPT],
        temperature=0,
        max_completion_tokens=48,
        stop=["4"],
        stream=True,
    )
    summary = check_stream_chunks(list(stream), model=GROQ_ALIAS)
    assert summary.finish_reason == "stop"
    assert "4" not in summary.content
    assert summary.content.startswith("1, 2, 3"), summary.content


def test_logprobs_top3(openai_client):
    resp = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=SHORT_ANSWER,
        max_completion_tokens=4,
        logprobs=True,
        top_logprobs=3,
    )
    assert_chat_completion(resp, model=GROQ_ALIAS, max_tokens=4)
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.content, lp
    assert len(lp.content) == resp.usage.completion_tokens
    text = "".join(t.token for t in lp.content)
    assert text == resp.choices[0].message.content
    for tok in lp.content:
        assert tok.logprob <= 0 and math.isfinite(tok.logprob)
        assert tok.bytes == list(tok.token.encode("utf-8"))
        assert len(tok.top_logprobs) == 3
        alts = [a.logprob for a in tok.top_logprobs]
        assert all(a <= 0 for a in alts)
        assert alts == sorted(alts, reverse=True)
        assert len({a.token for a in tok.top_logprobs}) == 3
        # The sampled token is one of the candidates or less likely than all of them.
        assert tok.logprob <= alts[0] + 1e-6
        # Probabilities of distinct alternatives cannot sum above 1.
        assert sum(math.exp(a) for a in alts) <= 1 + 1e-4


def test_logprobs_streamed(openai_client):
    stream = openai_client.chat.completions.create(
        model=GROQ_ALIAS,
        messages=SHORT_ANSWER,
        max_completion_tokens=3,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    chunks = list(stream)
    summary = check_stream_chunks(chunks, model=GROQ_ALIAS)
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs
              for t in (c.choices[0].logprobs.content or [])]
    assert tokens, "no logprobs in the stream"
    assert "".join(t.token for t in tokens) == summary.content
    for t in tokens:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 2


def test_models_list(openai_client, served_model):
    models = openai_client.models.list()
    ids = [m.id for m in models.data]
    assert GROQ_ALIAS in ids
    assert "llama-3.1-8b-instant" in ids
    assert "openai/gpt-oss-20b" in ids
    expected = _served_id(served_model)
    if expected is not None:
        assert expected in ids
    assert len(ids) == len(set(ids)), "duplicate model ids"
    for m in models.data:
        assert m.object == "model"
        assert isinstance(m.created, int) and m.created > 0
        assert m.owned_by
        extra = m.model_extra or {}
        assert extra.get("active") is True
        assert isinstance(extra.get("context_window"), int) and extra["context_window"] > 0


def test_models_list_default_model(openai_client, served_model):
    if served_model != DEFAULT_ID:
        pytest.skip("not serving the default model")
    assert DEFAULT_ID in [m.id for m in openai_client.models.list()]


@pytest.mark.parametrize("model_id", [GROQ_ALIAS, "openai/gpt-oss-20b"])
def test_models_retrieve(openai_client, model_id):
    m = openai_client.models.retrieve(model_id)
    assert m.id == model_id
    assert m.object == "model"
    assert m.owned_by
    listed = {x.id: x for x in openai_client.models.list()}
    assert listed[model_id].model_dump() == m.model_dump()


def test_models_retrieve_unknown(openai_client):
    with pytest.raises(openai.NotFoundError) as ei:
        openai_client.models.retrieve("no-such-model-xyz")
    assert ei.value.status_code == 404
    err = ei.value.response.json()["error"]
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"


def test_groq_models_api(groq_client):
    ids = [m.id for m in groq_client.models.list().data]
    assert GROQ_ALIAS in ids
    assert groq_client.models.retrieve(GROQ_ALIAS).id == GROQ_ALIAS
