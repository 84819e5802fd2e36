"""Rate limits and service tiers end to end, through the groq SDK: Groq's `x-ratelimit-*`
headers checked request by request against a model of its token buckets; RPM, RPD, TPM and
TPD each tripping with Groq's 429 body and `retry-after`; cached prompt tokens and batch lines
not counted; keys made by the CLI acting for organizations with their own tiers; `flex`
refused with 498 while the engine is full and `on_demand` queues; `performance` overtaking
queued `on_demand` requests; and two replicas on one PostgreSQL, or one Redis, admitting,
together, exactly the configured requests per minute."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import groq
import httpx
import pytest
from conftest import CLIENT_TIMEOUT_S, REPLICA_ARGS, ServerProcess
from test_batches import BATCH_MODEL, line, upload, wait_for

PG = os.environ.get("PEREGRINE_TEST_POSTGRES")
REDIS = os.environ.get("PEREGRINE_TEST_REDIS")
BIN = os.environ.get("PEREGRINE_BIN")

# Each model id has its own limits (Groq's are per model); all of them are aliases of the
# one small served model.
CONFIG = """
[rate_limits."llama-3.1-8b-instant"]
rpm = 1000
rpd = 1000
tpm = 6000

[rate_limits."llama-3.3-70b-versatile"]
rpm = 3

[rate_limits."openai/gpt-oss-20b"]
rpd = 2

[rate_limits."openai/gpt-oss-120b"]
tpm = 400

[rate_limits."qwen/qwen3-32b"]
rpm = 1000
tpd = 300

[rate_limits."moonshotai/kimi-k2-instruct"]
rpm = 1
rpd = 1000

[orgs.org_small]
service_tiers = ["on_demand"]
"""

GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}


def go_seconds(text: str) -> float:
    """A Go duration string (`2m52.8s`, `547ms`) in seconds."""
    parts = re.findall(r"([0-9.]+)(h|ms|µs|us|ns|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Go duration: {text!r}"
    return sum(float(n) * GO_UNITS[u] for n, u in parts)


@pytest.fixture(scope="module")
def limited(api_key):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-limits-")
    config = Path(data_dir) / "peregrine.toml"
    config.write_text(CONFIG)
    server = ServerProcess(api_key, BATCH_MODEL, data_dir, ("--config", str(config), "--parallel", "1"))
    url = server.start()
    yield url, data_dir
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def client(url: str, key: str) -> groq.Groq:
    return groq.Groq(base_url=url, api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


def ask(c: groq.Groq, model: str, content: str = "Say hi.", **kw):
    """A chat completion with its raw response (headers)."""
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 8), temperature=0, **kw,
    )
    return raw.parse(), raw.headers


def err_of(e: groq.APIStatusError) -> dict:
    """The error object (the SDK gives the envelope's `error`, or the whole body)."""
    return e.body.get("error", e.body) if isinstance(e.body, dict) else {}


def refused(call) -> groq.APIStatusError:
    with pytest.raises(groq.APIStatusError) as info:
        call()
    return info.value


def test_headers_follow_a_model_of_the_buckets_request_by_request(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    tpm, rpd = 6000, 1000
    rate = tpm / 60.0
    prev_remaining, prev_at = tpm, time.monotonic()
    start = prev_at
    for i in range(6):
        chat, h = ask(c, "llama-3.1-8b-instant", f"Say the number {i}.")
        at = time.monotonic()
        u = chat.usage
        cached = (u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0) or 0
        counted = u.prompt_tokens - cached + u.completion_tokens
        # Requests: the per-day bucket; one request each, nothing refilled to speak of.
        assert int(h["x-ratelimit-limit-requests"]) == rpd
        assert int(h["x-ratelimit-remaining-requests"]) == rpd - 1 - i
        reset_req = go_seconds(h["x-ratelimit-reset-requests"])
        # (i + 1) requests of 86.4 s each, less what refilled since the first was admitted.
        full = (i + 1) * 86400 / rpd
        assert full - (at - start) - 0.05 <= reset_req <= full + 0.01, (i, reset_req, at - start)
        # Tokens: the per-minute bucket, after this request's real use was charged; it
        # refilled at most `rate` per second since the last answer.
        assert int(h["x-ratelimit-limit-tokens"]) == tpm
        remaining = int(h["x-ratelimit-remaining-tokens"])
        low = prev_remaining - counted - 1
        # (+0.1 s: the answer's own trip after the server charged it.)
        high = min(tpm, prev_remaining - counted + rate * (at - prev_at + 0.1) + 1)
        assert low <= remaining <= high, (i, remaining, low, high, counted)
        reset_tok = go_seconds(h["x-ratelimit-reset-tokens"])
        assert abs(reset_tok - (tpm - remaining) / rate) <= 1.0 / rate + 0.05, (reset_tok, remaining)
        assert "retry-after" not in h
        prev_remaining, prev_at = remaining, at
    c.close()


def test_rpm_trips_with_groqs_429_and_retry_after(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    for _ in range(3):
        ask(c, "llama-3.3-70b-versatile")
    e = refused(lambda: ask(c, "llama-3.3-70b-versatile"))
    assert e.status_code == 429
    err = err_of(e)
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    assert err["message"].startswith(
        "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_default` "
        "service tier `on_demand` on requests per minute (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in "
    ), err["message"]
    wait = go_seconds(err["message"].rsplit("Please try again in ", 1)[1].rstrip("."))
    assert 0 < wait <= 20.0
    assert int(e.response.headers["retry-after"]) == int(-(-wait // 1))
    c.close()


def test_rpd_trips(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    for _ in range(2):
        ask(c, "openai/gpt-oss-20b")
    e = refused(lambda: ask(c, "openai/gpt-oss-20b"))
    err = err_of(e)
    assert e.status_code == 429 and err["type"] == "requests"
    assert "on requests per day (RPD): Limit 2, Used 2, Requested 1. Please try again in " in err["message"]
    # A day's bucket refills 2 per 86400 s: the wait is about 12 hours.
    assert int(e.response.headers["retry-after"]) > 40000
    c.close()


def test_tpm_trips_on_the_reserved_completion(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    first, _ = ask(c, "openai/gpt-oss-120b", "Tell me about the sea in one sentence.", max_tokens=30)
    assert first.usage.total_tokens > 50, first.usage
    # The prompt plus 340 asked-for tokens fit in 400, but no longer in what is left.
    e = refused(lambda: ask(c, "openai/gpt-oss-120b", max_tokens=340))
    err = err_of(e)
    assert e.status_code == 429 and err["type"] == "tokens"
    assert "on tokens per minute (TPM): Limit 400, Used " in err["message"]
    assert int(e.response.headers["retry-after"]) >= 1
    # More than the whole budget is 413, never worth retrying.
    e = refused(lambda: ask(c, "openai/gpt-oss-120b", max_tokens=1000))
    assert e.status_code == 413
    assert "Request too large for model `openai/gpt-oss-120b`" in err_of(e)["message"]
    c.close()


def test_tpd_trips(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    with pytest.raises(groq.APIStatusError) as info:
        for _ in range(20):
            ask(c, "qwen/qwen3-32b", "Write a long story.", max_tokens=40)
    e = info.value
    err = err_of(e)
    assert e.status_code == 429 and err["type"] == "tokens", err
    assert "on tokens per day (TPD): Limit 300, Used " in err["message"]
    c.close()


def test_cached_prompt_tokens_are_not_counted(limited, api_key):
    url, _ = limited
    c = client(url, api_key)
    long = "Remember these words: " + " ".join(f"word{i}" for i in range(150)) + ". Say ok."
    first, h1 = ask(c, "llama-3.1-8b-instant", long, max_tokens=2)
    second, h2 = ask(c, "llama-3.1-8b-instant", long, max_tokens=2)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached and cached > 100, second.usage
    spent = int(h1["x-ratelimit-remaining-tokens"]) - int(h2["x-ratelimit-remaining-tokens"])
    # The second request cost only its uncached prompt tokens and its completion (plus
    # what refilled meanwhile, which only lowers it).
    assert spent <= second.usage.prompt_tokens - cached + second.usage.completion_tokens
    assert spent < second.usage.prompt_tokens - 100
    c.close()


def test_batch_lines_do_not_count(limited, api_key, tmp_path):
    url, _ = limited
    c = client(url, api_key)
    _, before = ask(c, "moonshotai/kimi-k2-instruct")
    lines = [line(i, max_tokens=2) for i in range(3)]
    for ln in lines:
        ln["body"]["model"] = "moonshotai/kimi-k2-instruct"
    f = upload(c, tmp_path, lines)
    batch = c.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
    done = wait_for(c, batch.id, ("completed",))
    assert done.request_counts.completed == 3
    # The model's one request per minute is spent (by the first ask, not the batch) and the
    # day's count did not move with the batch's three lines.
    e = refused(lambda: ask(c, "moonshotai/kimi-k2-instruct"))
    assert e.status_code == 429
    assert e.response.headers["x-ratelimit-remaining-requests"] == before["x-ratelimit-remaining-requests"]
    c.close()


def keys(data_dir: str, *args: str) -> str:
    out = subprocess.run(
        [BIN, "keys", "--data-dir", data_dir, *args],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


def test_cli_keys_act_for_organizations_with_their_tiers(limited, api_key):
    url, data_dir = limited
    small = client(url, keys(data_dir, "create", "--name", "small", "--org", "org_small"))
    chat, h = ask(small, "llama-3.3-70b-versatile", service_tier="on_demand")
    assert chat.service_tier == "on_demand"
    # Its own organization: its own buckets, untouched by org_default's requests.
    assert h["x-ratelimit-remaining-requests"] == "2"
    e = refused(lambda: ask(small, "llama-3.1-8b-instant", service_tier="flex"))
    assert e.status_code == 400
    err = err_of(e)
    assert err["code"] == "service_tier_not_available" and err["param"] == "service_tier"
    small.close()


def hold_the_slot(url: str, api_key: str):
    """Starts a long stream and returns it once it holds the engine's only slot."""
    c = client(url, api_key)
    stream = c.chat.completions.create(
        model="llama-3.1-8b-instant",
        messages=[{"role": "user", "content": "Count from 1 to 200, one number per line."}],
        max_tokens=2000, temperature=0, stream=True,
        logit_bias={str(t): -100 for t in (0, 1, 2)},
    )
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    return c, stream


def queue_depth(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=10).json()["models"][0]["queue_depth"]


def test_flex_gets_498_on_a_full_engine_while_on_demand_queues(limited, api_key):
    url, _ = limited
    holder, stream = hold_the_slot(url, api_key)
    c = client(url, api_key)
    e = refused(lambda: ask(c, "llama-3.1-8b-instant", service_tier="flex"))
    assert e.status_code == 498
    err = err_of(e)
    assert err["code"] == "capacity_exceeded"
    with cf.ThreadPoolExecutor(1) as pool:
        queued = pool.submit(ask, c, "llama-3.1-8b-instant")
        while queue_depth(url) < 1:
            time.sleep(0.02)
        stream.close()
        chat, _ = queued.result(timeout=120)
    assert chat.service_tier == "on_demand"
    holder.close()
    c.close()


def test_performance_overtakes_queued_on_demand_requests(limited, api_key):
    url, _ = limited
    holder, stream = hold_the_slot(url, api_key)
    c = client(url, api_key)
    order: list[str] = []
    lock = threading.Lock()

    def run(tier: str):
        chat, _ = ask(c, "llama-3.1-8b-instant", service_tier=tier, max_tokens=4)
        with lock:
            order.append(chat.service_tier)

    with cf.ThreadPoolExecutor(3) as pool:
        futures = []
        for n, tier in enumerate(["on_demand", "on_demand", "performance"], start=1):
            futures.append(pool.submit(run, tier))
            while queue_depth(url) < n:
                time.sleep(0.02)
        stream.close()
        for f in futures:
            f.result(timeout=120)
    assert order[0] == "performance", order
    holder.close()
    c.close()


def two_replicas_admit_exactly_the_rpm(api_key, args: tuple) -> None:
    """Two servers with `args` (where their counters are shared) get 30 requests for a model
    limited to 10 per minute, alternately: exactly 10 pass between them."""
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-limit-replicas-")
    config = Path(data_dir) / "peregrine.toml"
    config.write_text('[rate_limits."llama-3.1-8b-instant"]\nrpm = 10\n')
    args = (*args, "--config", str(config), *REPLICA_ARGS)
    a = ServerProcess(api_key, BATCH_MODEL, data_dir, args)
    b = ServerProcess(api_key, BATCH_MODEL, data_dir, args)
    try:
        urls = [a.start(), b.start()]

        def fire(i: int) -> int:
            r = httpx.post(
                f"{urls[i % 2]}/openai/v1/chat/completions",
                headers={"authorization": f"Bearer {api_key}"},
                json={"model": "llama-3.1-8b-instant", "max_tokens": 1,
                      "messages": [{"role": "user", "content": "Hi"}]},
                timeout=CLIENT_TIMEOUT_S,
            )
            return r.status_code

        # All 30 at once: a request is admitted (or refused) before it waits for the engine,
        # so the admissions all fall within the first second or so, and the bucket (10 a
        # minute, one more every 6 s) cannot refill in between, however long the admitted
        # ones then take to run.
        with cf.ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(fire, range(30)))
        assert codes.count(200) == 10, codes
        assert codes.count(429) == 20, codes
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.skipif(not PG, reason="set PEREGRINE_TEST_POSTGRES to a PostgreSQL server URL")
def test_two_replicas_on_postgres_admit_exactly_the_rpm_together(api_key):
    name = f"peregrine_e2e_limits_{int(time.time() * 1000)}"
    subprocess.run(["psql", PG, "-At", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    db = PG.rsplit("/", 1)[0] + "/" + name
    two_replicas_admit_exactly_the_rpm(api_key, ("--database-url", db))


@pytest.mark.skipif(not REDIS, reason="set PEREGRINE_TEST_REDIS to a Redis server URL")
def test_two_replicas_on_redis_admit_exactly_the_rpm_together(api_key):
    # A database of its own (0-15), emptied first: other runs' buckets are not in the way.
    db = f"{REDIS.rstrip('/')}/{int(time.time()) % 15 + 1}"
    subprocess.run(["redis-cli", "-u", db, "FLUSHDB"], check=True, capture_output=True)
    two_replicas_admit_exactly_the_rpm(api_key, ("--redis-url", db))
