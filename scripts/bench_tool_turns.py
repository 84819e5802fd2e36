#!/usr/bin/env python3
"""Tool-use pass rates of two server binaries on the same cases, in one run.

    python3 scripts/bench_tool_turns.py --before /tmp/peregrine-before [--after target/release/peregrine]
        [--category multi_turn ...] [--model PATH.gguf]

Runs the 56 cases of tests/fixtures/tools/cases.json (single-turn `auto`, `required` and named
choices, and multi-turn conversations that end with a tool result) over HTTP against
`peregrine serve` on the default model (or `--model`), once per binary, greedy, `max_tokens` 160. A case
passes when the response calls exactly the expected tools, or answers in text (non-empty, no
call) where none is expected. Prints the pass rate per category for each binary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "tests" / "fixtures" / "tools" / "cases.json"
MODEL = os.environ.get(
    "PEREGRINE_DEFAULT_MODEL",
    str(Path.home() / ".cache/peregrine/models/qwen2.5-coder-0.5b-instruct.gguf"),
)


def start(binary: str, model: str) -> tuple[subprocess.Popen, str]:
    d = tempfile.mkdtemp(prefix="peregrine-bench-tools-")
    proc = subprocess.Popen(
        [binary, "serve", "--model", model, "--port", "0", "--data-dir", d],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:
        m = re.match(r"peregrine listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit(f"{binary} did not start")


def passes(case: dict, body: dict) -> bool:
    msg = body["choices"][0]["message"]
    called = sorted(c["function"]["name"] for c in msg.get("tool_calls") or [])
    want = sorted(case["expect"]["calls"])
    if want:
        return called == want
    return not called and bool((msg.get("content") or "").strip())


def run(binary: str, model: str, cases: list[dict]) -> dict[str, list[bool]]:
    proc, url = start(binary, model)
    results: dict[str, list[bool]] = collections.defaultdict(list)
    try:
        # The id the server serves the model under.
        served = httpx.get(f"{url}/openai/v1/models", timeout=60).json()["data"][0]["id"]
        for case in cases:
            req = {"model": "m", "messages": case["messages"], "tools": case["tools"],
                   "temperature": 0, "max_tokens": 160}
            for k in ("tool_choice", "parallel_tool_calls"):
                if k in case:
                    req[k] = case[k]
            req["model"] = served
            r = httpx.post(f"{url}/openai/v1/chat/completions", json=req, timeout=600)
            ok = r.status_code == 200 and passes(case, r.json())
            results[case["category"]].append(ok)
            print(f"{Path(binary).name} {case['id']}: {'pass' if ok else 'fail'}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=str(REPO / "target" / "release" / "peregrine"))
    ap.add_argument("--model", default=MODEL, help="the GGUF to serve (default: the default model)")
    ap.add_argument("--category", action="append",
                    help="only these categories (repeatable; default all)")
    args = ap.parse_args()
    cases = json.loads(CASES.read_text())
    if args.category:
        cases = [c for c in cases if c["category"] in args.category]
    before = run(args.before, args.model, cases)
    after = run(args.after, args.model, cases)
    print(f"{'category':<12} {'cases':>5} {'before':>8} {'after':>8}")
    for cat in sorted(before):
        n = len(before[cat])
        print(f"{cat:<12} {n:>5} {sum(before[cat]):>8} {sum(after[cat]):>8}")
    total = sum(len(v) for v in before.values())
    print(f"{'all':<12} {total:>5} {sum(map(sum, before.values())):>8} {sum(map(sum, after.values())):>8}")


if __name__ == "__main__":
    main()
