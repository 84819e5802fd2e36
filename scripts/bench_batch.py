#!/usr/bin/env python3
"""Interactive decode speed with a batch running, as a ratio to the same measurement without it,
in one run (issue 5). Starts `peregrine serve` on a fresh data directory, then:

  1. alone:       N streamed interactive requests, one at a time;
  2. with batch:  uploads a 200-line batch, waits until its lines run, the same N requests;
  3. alone again: after cancelling the batch (drift check).

Time per output token = (last token time - first token time) / (tokens - 1), per request,
median over the N requests. Prints the ratio with/without (target <= 1.3x) and how many batch
lines finished during phase 2, which shows that the batch did run.

Usage: scripts/bench_batch.py [--model ID] [--requests N] [--tokens T] [--lines L] [-- serve args]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import groq  # noqa: E402
from conftest import ServerProcess  # noqa: E402

KEY = "gsk_bench_batch"
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. Do not stop early."


def per_token(client: groq.Groq, tokens: int) -> float:
    stream = client.chat.completions.create(
        model="llama-3.1-8b-instant",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    first = last = None
    n = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
        if chunk.x_groq and chunk.x_groq.usage:
            n = chunk.x_groq.usage.completion_tokens
    if n < 2 or first is None or last == first:
        raise SystemExit(f"the interactive request produced {n} tokens; need at least 2")
    return (last - first) / (n - 1)


def measure(client: groq.Groq, requests: int, tokens: int) -> float:
    return statistics.median(per_token(client, tokens) for _ in range(requests))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--line-tokens", type=int, default=64)
    ap.add_argument("serve_args", nargs="*")
    a = ap.parse_args()

    data = tempfile.mkdtemp(prefix="peregrine-bench-batch-")
    server = ServerProcess(KEY, a.model, data, tuple(a.serve_args))
    url = server.start()
    client = groq.Groq(base_url=url, api_key=KEY, max_retries=0, timeout=600)
    try:
        per_token(client, 8)  # warm-up
        alone = measure(client, a.requests, a.tokens)

        path = Path(data) / "bench_batch.jsonl"
        with open(path, "w") as f:
            for i in range(a.lines):
                body = {
                    "model": "llama-3.1-8b-instant",
                    "messages": [{"role": "user", "content": f"Tell me fact number {i} about the sea."}],
                    "max_tokens": a.line_tokens,
                }
                f.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                    "url": "/v1/chat/completions", "body": body}) + "\n")
        with open(path, "rb") as f:
            up = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(completion_window="24h", endpoint="/v1/chat/completions",
                                      input_file_id=up.id)
        while True:
            b = client.batches.retrieve(batch.id)
            if b.status == "in_progress" and b.request_counts.completed >= 1:
                break
            if b.status not in ("validating", "in_progress"):
                raise SystemExit(f"batch ended early: {b.status} {b.errors}")
            time.sleep(0.2)
        done_before = b.request_counts.completed
        with_batch = measure(client, a.requests, a.tokens)
        b = client.batches.retrieve(batch.id)
        done_during = b.request_counts.completed - done_before
        still_running = b.status == "in_progress"
        client.batches.cancel(batch.id)
        while client.batches.retrieve(batch.id).status != "cancelled":
            time.sleep(0.5)
        after = measure(client, a.requests, a.tokens)
    finally:
        client.close()
        server.stop()

    print(f"model {a.model}, {a.requests} interactive requests x {a.tokens} tokens per phase, "
          f"batch of {a.lines} lines x {a.line_tokens} tokens, serve args {a.serve_args or '[]'}")
    print(f"  interactive ms/token alone:        {alone * 1e3:7.2f}")
    print(f"  interactive ms/token with batch:   {with_batch * 1e3:7.2f}")
    print(f"  interactive ms/token alone again:  {after * 1e3:7.2f}")
    print(f"  batch lines finished meanwhile:    {done_during} (batch still running: {still_running})")
    print(f"  ratio with batch / alone:          {with_batch / alone:.3f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
