#!/usr/bin/env python3
"""Soak benchmark: many concurrent streaming clients for a long time, some of which hang up
mid-stream, while the server's memory is watched (issue 11).

Starts its own `peregrine serve --port 0` on a fresh data directory, then runs N asyncio workers
(httpx) until the time is up. Each worker loops: one streaming chat completion with a random
short prompt and `max_tokens` in 16..128; with probability 0.3 it disconnects after a random
number of content chunks. Responses are counted by status (200, 429, other); a stream that
breaks without the worker cutting it (a transport error, an error event, no finish chunk or no
`[DONE]`) is a broken stream. The server's VmRSS is sampled every 5 s.

After the warm-up (the first 2 minutes; half the run when the run is shorter) it reports the
RSS of the rest of the run (first, last, min, max, least-squares slope in MiB per minute),
request and error counts and completion tokens per second, and prints a markdown table for
docs/benchmarks.md.

Exit status: 1 when any response had a status other than 200 or 429, any stream broke that the
client did not cut, the server died, or the RSS grew after the warm-up by more than
--max-growth-mib (the least-squares fit over the post-warm-up span); else 0.

Usage:
  python3 scripts/soak.py --bin target/release/peregrine --model smollm2-135m-instruct \\
      --minutes 10 --streams 64 [--parallel 8] [--ctx-size 2048] [-- extra serve args]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
LISTEN_RE = re.compile(r"^peregrine listening on (http://\S+)\s*$")
KEY = "gsk_peregrine_soak"
CHAT = "/openai/v1/chat/completions"
RSS_EVERY_S = 5.0
PROGRESS_EVERY_S = 30.0

TOPICS = [
    "the sea", "a lighthouse", "bread", "the moon", "a bicycle", "rain", "a library", "tea",
    "mountains", "a clock", "bees", "a train station", "winter", "a garden", "chess", "rivers",
]
ASKS = [
    "Write two sentences about {t}.", "Give three facts about {t}.", "Describe {t} briefly.",
    "Write a haiku about {t}.", "Explain {t} to a child.", "List some words related to {t}.",
]


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- Server ---------------------------------------------------------------------------------------


class Server:
    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.stderr_path = Path(tempfile.mkstemp(prefix="peregrine-soak-", suffix=".stderr")[1])
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300.0) -> str:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, bufsize=1,
            )
        found: dict[str, str] = {}
        ready = threading.Event()
        proc = self.proc

        def drain() -> None:  # keeps reading stdout for the server's life
            assert proc.stdout is not None
            for line in proc.stdout:
                m = LISTEN_RE.match(line)
                if m and "url" not in found:
                    found["url"] = m.group(1).rstrip("/")
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or "url" not in found:
            self.stop()
            raise SystemExit(f"the server did not start: {' '.join(self.cmd)}\n{self.stderr_tail()}")
        return found["url"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


# --- Load ---------------------------------------------------------------------------------------


@dataclass
class Stats:
    statuses: Counter = field(default_factory=Counter)
    completed: int = 0
    cut: int = 0
    broken: int = 0
    broken_reasons: Counter = field(default_factory=Counter)
    tokens: int = 0  # completion tokens (usage of whole streams, content chunks of cut ones)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (minutes since start, MiB)

    def breaks(self, reason: str) -> None:
        self.broken += 1
        self.broken_reasons[reason[:160]] += 1


async def one_request(client: httpx.AsyncClient, model: str, rng: random.Random, cut_p: float, st: Stats) -> None:
    max_tokens = rng.randint(16, 128)
    prompt = rng.choice(ASKS).format(t=rng.choice(TOPICS)) + f" ({rng.randint(1, 10**6)})"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "stream": True,
    }
    cut_after = rng.randint(1, max_tokens) if rng.random() < cut_p else None
    try:
        async with client.stream("POST", CHAT, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
            st.statuses[r.status_code] += 1
            if r.status_code != 200:
                text = (await r.aread())[:200].decode(errors="replace")
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")) * (0.5 + rng.random()))
                else:
                    st.broken_reasons[f"status {r.status_code}: {text}"] += 1
                return
            chunks = 0
            usage_tokens = None
            finished = done = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if "error" in obj:
                    st.breaks(f"error event: {obj['error'].get('message', '')}")
                    return
                for choice in obj.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                    if choice.get("finish_reason"):
                        finished = True
                usage = (obj.get("x_groq") or {}).get("usage") or obj.get("usage")
                if usage:
                    usage_tokens = usage.get("completion_tokens")
                if cut_after is not None and chunks >= cut_after and not finished:
                    # Leaving the block with the body unread closes the connection: a hang-up.
                    st.cut += 1
                    st.tokens += chunks
                    return
            if not done:
                st.breaks("the stream ended without [DONE]")
            elif not finished:
                st.breaks("no finish_reason before [DONE]")
            elif usage_tokens is None:
                st.breaks("no usage in the finish chunk")
            else:
                st.completed += 1
                st.tokens += usage_tokens
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        st.breaks(f"{type(e).__name__}: {e}")


async def worker(i: int, client: httpx.AsyncClient, model: str, seed: int, cut_p: float, end: float, st: Stats):
    rng = random.Random(seed * 100_003 + i)
    while time.monotonic() < end:
        await one_request(client, model, rng, cut_p, st)


async def watch_rss(server: Server, t0: float, end: float, st: Stats) -> None:
    last_progress = t0
    while True:
        now = time.monotonic()
        mib = rss_mib(server.proc.pid) if server.alive() else None
        if mib is None:
            return
        st.rss.append(((now - t0) / 60, mib))
        if now - last_progress >= PROGRESS_EVERY_S:
            last_progress = now
            done = sum(st.statuses.values())
            print(
                f"  {(now - t0) / 60:5.1f} min  requests {done}  completed {st.completed}  cut {st.cut}  "
                f"broken {st.broken}  429 {st.statuses[429]}  RSS {mib:.0f} MiB",
                flush=True,
            )
        if now >= end:
            return
        await asyncio.sleep(RSS_EVERY_S)


async def run_load(url: str, model: str, server: Server, a: argparse.Namespace, st: Stats) -> float:
    t0 = time.monotonic()
    end = t0 + a.minutes * 60
    limits = httpx.Limits(max_connections=a.streams * 2, max_keepalive_connections=a.streams)
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        watcher = asyncio.create_task(watch_rss(server, t0, end, st))
        tasks = [
            asyncio.create_task(worker(i, client, model, a.seed, a.cut_probability, end, st))
            for i in range(a.streams)
        ]
        # Workers stop taking new requests at the deadline; in-flight ones get a grace period.
        _, pending = await asyncio.wait(tasks, timeout=a.minutes * 60 + a.grace_secs)
        for t in pending:
            t.cancel()
        if pending:
            print(f"  cancelled {len(pending)} requests still running {a.grace_secs:.0f} s after the deadline")
        await asyncio.gather(*pending, return_exceptions=True)
        await watcher
    return time.monotonic() - t0


# --- Report -------------------------------------------------------------------------------------


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO_ROOT / "target" / "release" / "peregrine"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=64, help="concurrent client workers")
    ap.add_argument("--parallel", type=int, default=8,
                    help="the server's decoding slots (`serve --parallel`); the rest of the streams wait "
                         "in its queue (default size), or get 429 past it")
    ap.add_argument("--ctx-size", type=int, default=2048, help="`serve --ctx-size` (prompts here are short)")
    ap.add_argument("--warmup-minutes", type=float, default=2.0)
    ap.add_argument("--max-growth-mib", type=float, default=64.0,
                    help="most RSS growth allowed after the warm-up (least-squares fit over that span)")
    ap.add_argument("--cut-probability", type=float, default=0.3)
    ap.add_argument("--grace-secs", type=float, default=120.0, help="time in-flight requests get after the deadline")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("serve_args", nargs="*", help="extra `peregrine serve` arguments (after --)")
    a = ap.parse_args()

    warmup = a.warmup_minutes
    if warmup >= a.minutes:
        warmup = a.minutes / 2
        print(f"note: a {a.minutes:g}-minute run is not longer than the warm-up; using {warmup:g} min of warm-up")

    data_dir = tempfile.mkdtemp(prefix="peregrine-soak-data-")
    cmd = [
        a.bin, "serve", "--port", "0", "--model", a.model, "--api-key", KEY, "--data-dir", data_dir,
        "--parallel", str(a.parallel), "--ctx-size", str(a.ctx_size), *a.serve_args,
    ]
    server = Server(cmd)
    st = Stats()
    print(f"starting: {' '.join(cmd)}", flush=True)
    try:
        url = server.start()
        models = httpx.get(f"{url}/openai/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        models.raise_for_status()
        model = models.json()["data"][0]["id"]
        print(f"serving {model} at {url}; {a.streams} streams for {a.minutes:g} min", flush=True)
        elapsed = asyncio.run(run_load(url, model, server, a, st))
        died = not server.alive()
        if not died:
            final = rss_mib(server.proc.pid)
            if final is not None:
                st.rss.append((elapsed / 60, final))
    finally:
        code = server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    if died:
        print(f"the server died (status {code}):\n{server.stderr_tail()}")
    server.stderr_path.unlink(missing_ok=True)

    post = [(t, m) for t, m in st.rss if t >= warmup]
    requests = sum(st.statuses.values())
    other = requests - st.statuses[200] - st.statuses[429]
    tok_s = st.tokens / elapsed if elapsed > 0 else 0.0
    failures = []
    if died:
        failures.append("the server died")
    if other:
        failures.append(f"{other} responses with a status other than 200/429")
    if st.broken:
        failures.append(f"{st.broken} broken streams")
    if len(post) >= 2:
        values = [m for _, m in post]
        slope = least_squares_slope(post)
        span = post[-1][0] - post[0][0]
        growth = slope * span
        rss_row = (
            f"{values[0]:.0f} / {values[-1]:.0f} / {min(values):.0f} / {max(values):.0f} MiB "
            f"({len(post)} samples)"
        )
        slope_row = (
            f"{slope:+.2f} MiB/min: fitted growth {growth:+.1f} MiB over {span:.1f} min "
            f"(last - first {values[-1] - values[0]:+.1f} MiB; threshold {a.max_growth_mib:g} MiB)"
        )
        if growth > a.max_growth_mib:
            failures.append(f"RSS grew {growth:.1f} MiB after the warm-up (threshold {a.max_growth_mib:g})")
    else:
        rss_row = slope_row = "too few samples after the warm-up"
        failures.append("too few RSS samples after the warm-up to judge growth")

    if st.broken_reasons:
        print("errors (first kinds):")
        for reason, n in st.broken_reasons.most_common(10):
            print(f"  {n} x {reason}")
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(st.statuses.items()))
    today = datetime.date.today().isoformat()
    cmdline = " ".join(["python3", "scripts/soak.py", *sys.argv[1:]])
    print()
    print(f"### Soak: {a.model}, {a.streams} streams, {a.minutes:g} min ({today}, {git_rev()})")
    print()
    print("| metric | value |")
    print("|---|---|")
    print(f"| command | `{cmdline}` |")
    print(f"| server | `--parallel {a.parallel} --ctx-size {a.ctx_size}`{' ' + ' '.join(a.serve_args) if a.serve_args else ''}, default queue |")
    print(f"| run / warm-up | {elapsed / 60:.1f} min / {warmup:g} min |")
    print(f"| requests | {requests} ({statuses or 'none'}) |")
    print(f"| streams completed / cut by the client / broken | {st.completed} / {st.cut} / {st.broken} |")
    print(f"| completion tokens/s | {tok_s:.1f} ({st.tokens} tokens) |")
    print(f"| RSS after warm-up: first / last / min / max | {rss_row} |")
    print(f"| RSS slope (least squares) | {slope_row} |")
    print(f"| verdict | {'FAIL: ' + '; '.join(failures) if failures else 'pass'} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
