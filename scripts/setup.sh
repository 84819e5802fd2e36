#!/usr/bin/env bash
# Installs what building and testing Peregrine needs on a fresh Debian machine:
# cmake + clang + libclang (llama.cpp through llama-cpp-2), bubblewrap and the system Python
# (the code sandbox), and with --python the Python
# packages of the end-to-end suite. Idempotent and quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

# bubblewrap, python3 and util-linux (setpriv): the code sandbox (crates/tools);
# python3-matplotlib (with numpy): figures come back from code execution as PNGs.
PACKAGES="cmake clang libclang-dev bubblewrap python3 util-linux python3-matplotlib"
if ! dpkg -s $PACKAGES >/dev/null 2>&1; then
  echo "==> installing $PACKAGES (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PACKAGES >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if [ "${1:-}" = "--python" ]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  python3 -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
  # Clients whose pins conflict with the suite's get virtual environments of their own,
  # which the suite runs them in: the OpenAI Agents SDK (tests/e2e/test_agents_sdk.py), and
  # langchain-groq, langchain-openai, instructor and litellm (tests/e2e/test_clients_python.py;
  # they pin groq<1 and openai 3.3).
  client_venv() { # <venv dir> <requirements file>
    if [ ! -x "$1/bin/python" ]; then
      if ! python3 -m venv "$1" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$1"
      fi
    fi
    "$1/bin/python" -m pip install -q --disable-pip-version-check -r "$2"
  }
  client_venv "${PEREGRINE_AGENTS_VENV:-$HOME/.cache/peregrine/venv-agents}" tests/e2e/requirements-agents.txt
  client_venv "${PEREGRINE_CLIENTS_VENV:-$HOME/.cache/peregrine/venv-clients}" tests/e2e/requirements-clients.txt
  # torch, transformers and peft make test models with llama.cpp's conversion scripts
  # (scripts/make_hf_test_models.py): the default model's LoRA adapters and a vision projector.
  client_venv "${PEREGRINE_MODELS_VENV:-$HOME/.cache/peregrine/venv-models}" tests/e2e/requirements-models.txt
  # openai-node, groq-sdk and the Vercel AI SDK at the versions tests/e2e/node's lockfile
  # pins (tests/e2e/test_clients_node.py), with the machine's Node.js (20 or later).
  if ! command -v npm >/dev/null; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  (cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error)
  # A real Prometheus scrapes /metrics in the end-to-end suite (tests/e2e/test_metrics.py).
  if ! command -v prometheus >/dev/null; then
    echo "==> installing prometheus (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
  fi
fi
