#!/usr/bin/env python3
"""Issue 15's two figures in one run: decode speed with a LoRA adapter against without
(`scripts/bench_lora.py`), then image prefill against text prefill (`scripts/bench_vision.py`),
one after the other on the same idle machine, each against its own baseline in the same run.

    python3 scripts/bench_lora_vision.py [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_lora  # noqa: E402
import bench_vision  # noqa: E402


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"{cpu()}, load average {os.getloadavg()[0]:.2f}")
    print(f"== LoRA: default model, base against adapter a ({args.rounds} rounds, {args.tokens} tokens)")
    for line in bench_lora.run(args.rounds, args.tokens):
        print(line, flush=True)
    print(f"== Vision: text, new image, same image again ({args.rounds} rounds)")
    for line in bench_vision.run(args.rounds):
        print(line, flush=True)


if __name__ == "__main__":
    main()
