"""`GET /metrics` scraped by a real Prometheus server (Debian's package, which the test command
installs): the series Prometheus stores move with the traffic sent through the groq SDK, under
vLLM's metric names and the model label."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import groq
import httpx
import pytest
from conftest import CLIENT_TIMEOUT_S

PROMETHEUS = shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(module_server: str):
    """A Prometheus that scrapes the module's server every second; yields its query URL."""
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed (scripts/setup.sh --python installs Debian's package)")
    target = urlparse(module_server).netloc
    work = Path(tempfile.mkdtemp(prefix="peregrine-e2e-prometheus-"))
    (work / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: peregrine\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prometheus did not start:\n{(work / 'prometheus.log').read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    shutil.rmtree(work, ignore_errors=True)


def query(prom: str, promql: str) -> float | None:
    """The one value of an instant query, or None when it has no series yet."""
    r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_value(prom: str, promql: str, want, timeout: float = 30.0) -> float:
    """Polls until the query's value satisfies `want` (scrapes come every second)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = query(prom, promql)
        if last is not None and want(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{promql} stayed at {last}")


def test_prometheus_scrapes_series_that_move_with_the_traffic(prometheus, module_server, api_key, served_model):
    scraped = httpx.get(f"{module_server}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    up = wait_for_value(prometheus, 'up{job="peregrine"}', lambda v: v == 1.0)
    assert up == 1.0

    label = f'model_name="{served_model}"'
    prompt_q = f"vllm:prompt_tokens_total{{{label}}}"
    gen_q = f"vllm:generation_tokens_total{{{label}}}"
    ttft_q = f"vllm:time_to_first_token_seconds_count{{{label}}}"
    before = {q: wait_for_value(prometheus, q, lambda v: v >= 0) for q in (prompt_q, gen_q, ttft_q)}

    client = groq.Groq(base_url=module_server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    prompt = completion = 0
    for i in range(3):
        r = client.chat.completions.create(
            model=served_model,
            messages=[{"role": "user", "content": f"Say the number {i}."}],
            max_tokens=8,
            temperature=0,
        )
        prompt += r.usage.prompt_tokens
        completion += r.usage.completion_tokens
    stream = client.chat.completions.create(
        model=served_model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, stream=True,
    )
    for chunk in stream:
        # Groq puts a stream's usage in the last chunk's `x_groq`.
        usage = chunk.x_groq.usage if chunk.x_groq else None
        if usage:
            prompt += usage.prompt_tokens
            completion += usage.completion_tokens
    client.close()

    got_prompt = wait_for_value(prometheus, prompt_q, lambda v: v >= before[prompt_q] + prompt)
    assert got_prompt == before[prompt_q] + prompt
    got_gen = wait_for_value(prometheus, gen_q, lambda v: v >= before[gen_q] + completion)
    assert got_gen == before[gen_q] + completion
    assert wait_for_value(prometheus, ttft_q, lambda v: v >= before[ttft_q] + 4) == before[ttft_q] + 4
    # A histogram Prometheus can take quantiles of, and gauges back at rest.
    assert query(prometheus, f"histogram_quantile(0.5, rate(vllm:e2e_request_latency_seconds_bucket{{{label}}}[1m]))") is not None
    assert wait_for_value(prometheus, f"vllm:num_requests_running{{{label}}}", lambda v: v == 0) == 0


def test_ready_says_loading_until_the_models_are_loaded_and_each_request_leaves_a_json_log_line(
    served_model, api_key, tmp_path
):
    """The listener is bound before the models load: `/ready` answers 503 `loading`, then 200.
    With `--log-format json`, every request leaves one JSON line naming it."""
    import json
    import os

    from conftest import DEFAULT_BIN, LISTEN_RE

    port = free_port()
    stderr = open(tmp_path / "stderr", "wb")
    proc = subprocess.Popen(
        [os.environ.get("PEREGRINE_BIN", str(DEFAULT_BIN)), "serve", "--port", str(port),
         "--model", served_model, "--data-dir", str(tmp_path / "data"), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PEREGRINE_API_KEYS": api_key},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(f"{url}/ready", timeout=5)
                seen.append((r.status_code, r.json()))
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not bound yet
            time.sleep(0.02)
        assert seen and seen[-1] == (200, {"status": "ready"}), seen[-3:]
        assert (503, {"status": "loading"}) in seen, seen[:3]
        assert LISTEN_RE.match(proc.stdout.readline())

        client = groq.Groq(base_url=url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        raw = client.chat.completions.with_raw_response.create(
            model=served_model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5,
            service_tier="on_demand",
        )
        chat = raw.parse()
        request_id = raw.headers["x-request-id"]
        client.close()

        line = None
        deadline = time.monotonic() + 10
        while line is None and time.monotonic() < deadline:
            for text in (tmp_path / "stderr").read_text().splitlines():
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if record.get("target") == "peregrine::request" and record["fields"].get("request_id") == request_id:
                    line = record["fields"]
            time.sleep(0.1)
        assert line is not None, "no request log line"
        assert line["path"] == "/openai/v1/chat/completions"
        assert (line["status"], line["model"], line["tier"]) == (200, served_model, "on_demand")
        assert line["prompt_tokens"] == chat.usage.prompt_tokens
        assert line["completion_tokens"] == chat.usage.completion_tokens
        assert line["total_s"] > 0 and line["queue_s"] >= 0 and line["prompt_s"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        stderr.close()
