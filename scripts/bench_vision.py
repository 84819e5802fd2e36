#!/usr/bin/env python3
"""Image prefill time against text prefill, in one run on one server.

    python3 scripts/bench_vision.py [--rounds 8]

Starts `peregrine serve` (target/release/peregrine) on the test material of
`scripts/make_hf_test_models.py vision` (run in the model-tools venv that
`scripts/setup.sh --python` makes): SmolLM2-135M-Instruct with the random 64-position CLIP
encoder and LLaVA projector. Alternates three requests (one completion token each, greedy): the prompt with
text only, the same prompt with a new image each round (the projector's encoder, then 64
positions of embeddings), and the same image again (its cells reused from the prefix
cache). Reports Groq's `usage.prompt_time` for each, median over the rounds, and the ratios.
The image is a 256x256 PNG (resized to the projector's 64x64 by llama.cpp).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("PEREGRINE_BIN", REPO / "target" / "release" / "peregrine"))
MODELS_VENV = Path(os.environ.get(
    "PEREGRINE_MODELS_VENV", Path.home() / ".cache" / "peregrine" / "venv-models"))
TEXT = "Describe what you see in as much detail as you can, then say what it reminds you of."


def png(width: int, height: int, seed: int) -> bytes:
    rows = b"".join(
        b"\0" + bytes((x * seed + y * 7 + c * 50) % 256 for x in range(width) for c in range(3))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def start(files: dict) -> tuple[subprocess.Popen, str]:
    d = tempfile.mkdtemp(prefix="peregrine-bench-vision-")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--model", files["model"], "--mmproj", files["mmproj"],
         "--port", "0", "--data-dir", d, "--parallel", "1", "--ctx-size", "1024"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:
        m = re.match(r"peregrine listening on (\S+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server did not start")


def prompt_time(url: str, image: bytes | None) -> tuple[float, int]:
    parts = [{"type": "text", "text": TEXT}]
    if image is not None:
        parts.append({"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(image).decode()}})
    else:
        parts.append({"type": "text", "text": ""})
    r = httpx.post(
        f"{url}/openai/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "temperature": 0, "max_completion_tokens": 1,
              "messages": [{"role": "system", "content": "You describe images."},
                           {"role": "user", "content": parts}]},
        timeout=600,
    )
    r.raise_for_status()
    u = r.json()["usage"]
    return u["prompt_time"], u["prompt_tokens"]


def run(rounds: int) -> list[str]:
    """The measurement; its report lines."""
    out = subprocess.run([str(MODELS_VENV / "bin" / "python"),
                          str(REPO / "scripts" / "make_hf_test_models.py"), "vision"],
                         check=True, capture_output=True, text=True)
    proc, url = start(json.loads(out.stdout))
    try:
        text, new, cached = [], [], []
        tokens = {}
        for i in range(rounds + 1):
            image = png(256, 256, 3 + 2 * i)
            # Each request reuses the cached prefix up to where the image goes (the system
            # prompt and the text): the text-only one computes the tail after it, the new
            # image the image and that tail, the repeat only its last token.
            t, tokens["text"] = prompt_time(url, None)
            n, tokens["image"] = prompt_time(url, image)
            c, _ = prompt_time(url, image)
            if i > 0:  # the first round warms up
                text.append(t)
                new.append(n)
                cached.append(c)
    finally:
        proc.terminate()
        proc.wait()
    med = {k: statistics.median(v) for k, v in
           {"text": text, "new image": new, "cached image": cached}.items()}
    lines = [f"prompt tokens: text {tokens['text']}, with the image {tokens['image']}"]
    for k, v in med.items():
        lines.append(f"{k:>13}: prompt_time median {v * 1e3:8.2f} ms over {rounds} rounds")
    image_ms = (med["new image"] - med["text"]) * 1e3
    lines.append(f"the image itself (new image - text): {image_ms:.2f} ms for "
                 f"{tokens['image'] - tokens['text']} positions")
    lines.append(f"new image / text: {med['new image'] / med['text']:.2f}x; "
                 f"cached image / new image: {med['cached image'] / med['new image']:.2f}x")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    print("\n".join(run(args.rounds)))


if __name__ == "__main__":
    main()
