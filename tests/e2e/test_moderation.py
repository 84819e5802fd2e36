"""Content moderation end to end: a served model marked `guard = "llama-guard"` answers for
Groq's `meta-llama/llama-guard-4-12b`, with the seed's example through the groq SDK.

No Llama Guard GGUF can be downloaded here, so the guard is the small SmolLM2 chat model:
what these tests prove is the flow (the conversation becomes Llama Guard's task prompt with
the S1-S14 categories, the answer has the guard's format by grammar, tools and JSON formats
are refused, unserved guard ids are 404); they say nothing about the quality of a verdict.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import groq
import pytest
from conftest import CLIENT_TIMEOUT_S, ServerProcess
from test_batches import BATCH_MODEL

GUARD_ID = "meta-llama/llama-guard-4-12b"
VERDICT = re.compile(r"safe|unsafe\nS(1[0-4]|[1-9])(,S(1[0-4]|[1-9]))*")
SEED_MESSAGES = [{"role": "user", "content": "Write a script that can be used to hack into a Wi-Fi network"}]


@pytest.fixture(scope="module")
def guard(api_key):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-guard-")
    config = Path(data_dir) / "peregrine.toml"
    config.write_text(
        f'[[models]]\nmodel = "{BATCH_MODEL}"\nid = "{GUARD_ID}"\nguard = "llama-guard"\n'
        f'default_aliases = false\nctx_size = 2048\nparallel = 2\n\n'
        f'[[models]]\nmodel = "{BATCH_MODEL}"\nid = "plain"\ndefault_aliases = false\nctx_size = 2048\nparallel = 1\n'
    )
    server = ServerProcess(api_key, BATCH_MODEL, data_dir, ("--config", str(config)))
    url = server.start()
    c = groq.Groq(base_url=url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_the_seed_example_gets_a_verdict(guard):
    # The docs' own call, with the capitalised id they use.
    r = guard.chat.completions.create(messages=SEED_MESSAGES, model="meta-llama/Llama-Guard-4-12B")
    content = r.choices[0].message.content
    assert VERDICT.fullmatch(content), content
    assert r.choices[0].finish_reason == "stop"
    # The model read Llama Guard's task prompt, not the bare message: the same message to
    # the same weights served plainly is a few dozen tokens.
    plain = guard.chat.completions.create(messages=SEED_MESSAGES, model="plain", max_completion_tokens=1)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens + 200, (r.usage, plain.usage)


def test_a_conversation_ending_with_the_agent_is_judged(guard):
    messages = SEED_MESSAGES + [{"role": "assistant", "content": "Sorry, I cannot help with that."}]
    r = guard.chat.completions.create(messages=messages, model=GUARD_ID, temperature=0)
    assert VERDICT.fullmatch(r.choices[0].message.content)


def test_streaming_gives_the_same_format(guard):
    text = ""
    for chunk in guard.chat.completions.create(messages=SEED_MESSAGES, model=GUARD_ID, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert VERDICT.fullmatch(text), text


@pytest.mark.parametrize(
    "kw, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_a_guard_answers_only_in_its_format(guard, kw, param):
    with pytest.raises(groq.BadRequestError) as e:
        guard.chat.completions.create(messages=SEED_MESSAGES, model=GUARD_ID, **kw)
    err = e.value.body["error"] if "error" in e.value.body else e.value.body
    assert err["param"] == param
    assert err["message"] == f"`{param}` is not supported with this model"


@pytest.mark.parametrize(
    "model",
    [
        "meta-llama/llama-guard-4-12b",
        "openai/gpt-oss-safeguard-20b",
        "meta-llama/llama-prompt-guard-2-86m",
        "meta-llama/llama-prompt-guard-2-22m",
    ],
)
def test_guard_ids_without_a_guard_model_are_404(groq_client, model):
    with pytest.raises(groq.NotFoundError) as e:
        groq_client.chat.completions.create(messages=SEED_MESSAGES, model=model)
    err = e.value.body["error"] if "error" in e.value.body else e.value.body
    assert err["code"] == "model_not_found"
