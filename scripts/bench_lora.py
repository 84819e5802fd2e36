#!/usr/bin/env python3
"""Decode speed with a LoRA adapter against without, in one run on one server.

    python3 scripts/bench_lora.py [--rounds 6] [--tokens 128]

Starts `peregrine serve` (target/release/peregrine) on the default model
(qwen2.5-coder-0.5b-instruct, as pulled) with adapter `a` of `scripts/make_hf_test_models.py lora`
(made by peft: rank 8 on q_proj, v_proj, o_proj and down_proj of all 24 layers; run in the
model-tools environment that `scripts/setup.sh --python` makes). Alternates requests to the base and to the adapter (greedy, the same
prompt, one at a time) and reports each one's decode speed from Groq's usage
(completion_tokens / completion_time), median over the rounds, and the ratio. Then the same
with two requests at once: two on the base (one forward pass per step), against one on the
base and one on the adapter (two passes per step: llama.cpp applies adapters per context).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("PEREGRINE_BIN", REPO / "target" / "release" / "peregrine"))
PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
ADAPTER = "ft:qwen2.5-coder-0.5b-instruct:org_local:a-0001"
BASE = "qwen2.5-coder-0.5b-instruct"
MODELS_VENV = Path(os.environ.get(
    "PEREGRINE_MODELS_VENV", Path.home() / ".cache" / "peregrine" / "venv-models"))


def start(files: dict) -> tuple[subprocess.Popen, str]:
    d = tempfile.mkdtemp(prefix="peregrine-bench-lora-")
    cfg = Path(d) / "peregrine.toml"
    cfg.write_text(
        f'[[models]]\nmodel = "{BASE}"\nid = "{BASE}"\ndefault_aliases = false\n'
        f"ctx_size = 1024\nparallel = 2\n\n"
        f'[[models.adapters]]\nid = "{ADAPTER}"\npath = "{files["a_llamacpp"]}"\n'
    )
    proc = subprocess.Popen(
        # Without speculation every token is one forward pass on both sides: the adapter's
        # random answer repeats itself, and drafts from it would be measured, not the adapter.
        [str(BIN), "serve", "--config", str(cfg), "--port", "0", "--data-dir", d,
         "--speculation", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:
        m = re.match(r"peregrine listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server did not start")


def speed(url: str, model: str, tokens: int) -> float:
    r = httpx.post(
        f"{url}/openai/v1/chat/completions",
        json={"model": model, "messages": PROMPT, "temperature": 0, "max_completion_tokens": tokens},
        timeout=600,
    ).json()
    u = r["usage"]
    return u["completion_tokens"] / u["completion_time"]


def pair(url: str, models: tuple[str, str], tokens: int) -> float:
    """Aggregate decode tokens/s of two requests run together."""
    with cf.ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        futs = [pool.submit(httpx.post, f"{url}/openai/v1/chat/completions", json={
            "model": m, "messages": PROMPT, "temperature": 0, "max_completion_tokens": tokens,
        }, timeout=600) for m in models]
        n = sum(f.result().json()["usage"]["completion_tokens"] for f in futs)
        return n / (time.perf_counter() - t0)


def adapters() -> dict:
    return json.loads(subprocess.run(
        [str(MODELS_VENV / "bin" / "python"), str(REPO / "scripts" / "make_hf_test_models.py"), "lora"],
        check=True, capture_output=True, text=True).stdout)


def run(rounds: int, tokens: int) -> list[str]:
    """The measurement; its report lines."""
    proc, url = start(adapters())
    try:
        speed(url, BASE, 16)  # warm-up
        speed(url, ADAPTER, 16)
        base, lora, two_base, mixed = [], [], [], []
        for _ in range(rounds):
            base.append(speed(url, BASE, tokens))
            lora.append(speed(url, ADAPTER, tokens))
            two_base.append(pair(url, (BASE, BASE), tokens))
            mixed.append(pair(url, (BASE, ADAPTER), tokens))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    med = statistics.median
    return [
        f"single stream decode: base {med(base):.1f} tok/s, adapter {med(lora):.1f} tok/s, "
        f"ratio {med(lora) / med(base):.2f}x (min/max base {min(base):.1f}/{max(base):.1f}, "
        f"adapter {min(lora):.1f}/{max(lora):.1f})",
        f"two at once (wall clock, aggregate): base+base {med(two_base):.1f} tok/s, "
        f"base+adapter {med(mixed):.1f} tok/s, ratio {med(mixed) / med(two_base):.2f}x",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    print("\n".join(run(args.rounds, args.tokens)))


if __name__ == "__main__":
    main()
