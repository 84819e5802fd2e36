"""Assertions shared by the end-to-end tests (work on groq and openai SDK objects alike)."""

from __future__ import annotations

import re
from typing import Any, Iterable

CHATCMPL_RE = re.compile(r"^chatcmpl-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REQ_RE = re.compile(r"^req_[0-9a-z]{26}$")
FP_RE = re.compile(r"^fp_[0-9a-f]{10}$")

# Small budgets keep the suite fast on a CPU; seeds that need more say so where they are used.
SHORT = 16
MEDIUM = 32

SYSTEM_HELPFUL = {"role": "system", "content": "You are a helpful assistant."}
FAST_LM_PROMPT = {"role": "user", "content": "Explain the importance of fast language models"}
COUNT_PROMPT = {
    "role": "user",
    "content": "Count to 10.  Your response must begin with \"1, \".  example: 1, 2, 3, ...",
}
# A prompt the model answers in a few tokens, so finish_reason "stop" is reachable under SHORT.
SHORT_ANSWER = [
    {"role": "system", "content": "You are a helpful assistant. Answer with a single word."},
    {"role": "user", "content": "What is the capital of France? Answer with one word only."},
]


def field(obj: Any, name: str) -> Any:
    """Attribute or dict key (SDK models keep unknown keys as extra attributes/dict items)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None:
        extra = getattr(obj, "model_extra", None) or {}
        value = extra.get(name)
    return value


def assert_usage(usage: Any, *, max_tokens: int | None = None, finish_reason: str | None = None) -> None:
    assert usage is not None, "usage missing"
    prompt = field(usage, "prompt_tokens")
    completion = field(usage, "completion_tokens")
    total = field(usage, "total_tokens")
    assert isinstance(prompt, int) and prompt > 0, usage
    assert isinstance(completion, int) and completion > 0, usage
    assert total == prompt + completion, usage
    prompt_time = field(usage, "prompt_time")
    completion_time = field(usage, "completion_time")
    total_time = field(usage, "total_time")
    queue_time = field(usage, "queue_time")
    assert prompt_time is not None and prompt_time > 0, usage
    assert completion_time is not None and completion_time > 0, usage
    assert total_time is not None and total_time > 0, usage
    assert abs(total_time - (prompt_time + completion_time)) < 1e-3, usage
    assert queue_time is not None and queue_time >= 0, usage
    if max_tokens is not None:
        assert completion <= max_tokens, usage
        if finish_reason == "length":
            assert completion == max_tokens, usage


def assert_chat_completion(
    resp: Any,
    *,
    model: str,
    max_tokens: int | None = None,
    finish_reasons: Iterable[str] = ("stop", "length"),
) -> str:
    """Checks a non-streaming ChatCompletion and returns its content."""
    assert CHATCMPL_RE.match(resp.id), resp.id
    assert resp.object == "chat.completion"
    assert isinstance(resp.created, int) and resp.created > 1_600_000_000
    assert resp.model == model
    assert resp.system_fingerprint and FP_RE.match(resp.system_fingerprint), resp.system_fingerprint
    x_groq = field(resp, "x_groq")
    assert x_groq is not None, "x_groq missing"
    assert REQ_RE.match(field(x_groq, "id")), x_groq
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert isinstance(content, str) and content.strip(), f"empty content: {content!r}"
    assert choice.finish_reason in tuple(finish_reasons), choice.finish_reason
    assert_usage(resp.usage, max_tokens=max_tokens, finish_reason=choice.finish_reason)
    return content


class StreamSummary:
    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.content = ""
        self.finish_reason: str | None = None
        self.finish_chunk: Any = None
        self.usage_chunk: Any = None  # include_usage chunk (empty choices)


def check_stream_chunks(chunks: list[Any], *, model: str, include_usage: bool = False) -> StreamSummary:
    """Checks the sequence of ChatCompletionChunks of one streamed completion."""
    assert chunks, "stream produced no chunks"
    out = StreamSummary()
    out.chunks = chunks
    first = chunks[0]
    ids = {c.id for c in chunks}
    assert len(ids) == 1, ids
    assert CHATCMPL_RE.match(first.id), first.id
    fingerprints = {c.system_fingerprint for c in chunks}
    assert len(fingerprints) == 1 and FP_RE.match(first.system_fingerprint or ""), fingerprints
    for c in chunks:
        assert c.object == "chat.completion.chunk"
        assert c.model == model
        assert c.created == first.created

    # First chunk: role assistant, x_groq id (+ seed).
    assert first.choices and first.choices[0].delta.role == "assistant", first
    first_x = field(first, "x_groq")
    assert first_x is not None and REQ_RE.match(field(first_x, "id")), first_x
    request_id = field(first_x, "id")

    body = chunks
    if include_usage:
        last = chunks[-1]
        assert last.choices == [], last
        assert last.usage is not None, last
        out.usage_chunk = last
        body = chunks[:-1]
    for c in body:
        assert len(c.choices) == 1, f"only the include_usage chunk may have empty choices: {c}"
        assert c.choices[0].index == 0

    finishers = [c for c in body if c.choices[0].finish_reason is not None]
    assert len(finishers) == 1 and finishers[0] is body[-1], "finish_reason must be set on the last chunk only"
    out.finish_chunk = body[-1]
    out.finish_reason = out.finish_chunk.choices[0].finish_reason
    out.content = "".join(c.choices[0].delta.content or "" for c in body)

    finish_x = field(out.finish_chunk, "x_groq")
    assert finish_x is not None, "x_groq missing on the finish chunk"
    assert field(finish_x, "id") == request_id
    return out
