"""End-to-end fixtures: one real `peregrine serve` for the whole session, plus SDK clients.

Environment:
  PEREGRINE_BIN        server binary (default <repo>/target/release/peregrine)
  PEREGRINE_E2E_MODEL  catalogue id or GGUF path to serve (default qwen2.5-coder-0.5b-instruct)
  PEREGRINE_E2E_URL    use an already running server at this URL instead of starting one
                       (it must accept PEREGRINE_E2E_API_KEY, default the fixture's test key)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import groq
import openai
import pytest
import pytest_asyncio

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "peregrine"
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
TEST_API_KEY = os.environ.get("PEREGRINE_E2E_API_KEY", "gsk_peregrine_e2e_test_key_0123456789")
STARTUP_TIMEOUT_S = 120.0
# Generation on a shared CPU can be slow; never let the SDK's 60 s default cut a request short.
CLIENT_TIMEOUT_S = 600.0
LISTEN_RE = re.compile(r"^peregrine listening on (http://\S+)\s*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _stderr_tail(path: Path, lines: int = 40, drop: str | None = None) -> str:
    """The last `lines` lines of a server's log, less those containing `drop`."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:  # pragma: no cover - diagnostics only
        return f"<could not read server stderr: {e}>"
    all_lines = [x for x in ANSI_RE.sub("", text).splitlines() if drop is None or drop not in x]
    # With RUST_BACKTRACE set, an anyhow error is followed by dozens of frames that would push
    # the actual message out of the tail: keep what comes before the backtrace.
    for i, line in enumerate(all_lines):
        if line.strip() == "Stack backtrace:":
            all_lines = all_lines[:i] + [f"(backtrace of {len(all_lines) - i - 1} lines omitted)"]
            break
    return "\n".join(all_lines[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


MODELS_VENV = Path(os.environ.get(
    "PEREGRINE_MODELS_VENV", Path.home() / ".cache" / "peregrine" / "venv-models"))


def hf_test_models(kind: str) -> dict:
    """`scripts/make_hf_test_models.py KIND` in the model-tools venv (cached by the script):
    test models made with transformers, peft and llama.cpp's conversion scripts."""
    python = MODELS_VENV / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"{python} is missing: run scripts/setup.sh --python")
    out = subprocess.run([str(python), str(REPO_ROOT / "scripts" / "make_hf_test_models.py"), kind],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"make_hf_test_models.py {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def api_key() -> str:
    return TEST_API_KEY


@pytest.fixture(scope="session")
def served_model() -> str:
    return os.environ.get("PEREGRINE_E2E_MODEL", DEFAULT_MODEL)


@pytest.fixture(scope="session")
def server(api_key: str, served_model: str):
    """Starts `peregrine serve --port 0` and yields its base URL (no trailing slash)."""
    external = os.environ.get("PEREGRINE_E2E_URL")
    if external:
        yield external.rstrip("/")
        return
    yield from start_server(api_key, served_model)


# Extra arguments of each of two replicas run at once on this machine: one thread each. Two
# llama.cpp thread pools of a thread per core on a 2-core machine spin against each other at
# every op's barrier: a 30-line batch over two replicas took 26-42 s that way against 8 s with
# one thread each, and in one CI run did not finish in 300 s.
REPLICA_ARGS = ("--threads", "1")


class ServerProcess:
    """A `peregrine serve --port 0` that a test controls: start, SIGKILL, stop, start again on
    the same data directory (or database)."""

    def __init__(self, api_key: str, served_model: str, data_dir: str, extra_args: tuple = ()):
        self.cmd = [
            os.environ.get("PEREGRINE_BIN", str(DEFAULT_BIN)), "serve",
            "--port", "0",
            "--model", served_model,
            "--api-key", api_key,
            "--data-dir", data_dir,
            *extra_args,
        ]
        self.proc: subprocess.Popen | None = None
        self.stderr_file: Path | None = None

    def start(self) -> str:
        """Starts the server and returns its base URL (no trailing slash)."""
        binary = Path(self.cmd[0])
        if not binary.is_file():
            pytest.fail(f"server binary not found: {binary} (build it or set PEREGRINE_BIN)")
        self.stderr_file = Path(tempfile.mkstemp(prefix="peregrine-e2e-", suffix=".stderr")[1])
        with open(self.stderr_file, "wb") as err:
            proc = subprocess.Popen(
                self.cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT, text=True, bufsize=1,
            )
        self.proc = proc
        found: dict[str, str] = {}
        ready = threading.Event()

        def read_stdout() -> None:
            # Keeps draining stdout for the server's whole life so it can never block on a full pipe.
            assert proc.stdout is not None
            for line in proc.stdout:
                m = LISTEN_RE.match(line)
                if m and "url" not in found:
                    found["url"] = m.group(1)
                    ready.set()
            ready.set()  # EOF: the server exited

        threading.Thread(target=read_stdout, name="peregrine-stdout", daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready.wait(timeout=0.2):
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(
                    f"peregrine did not print its listening line within {STARTUP_TIMEOUT_S:.0f} s\n"
                    f"command: {' '.join(self.cmd)}\n--- server stderr (tail) ---\n{self.stderr_tail()}"
                )
        if "url" not in found:
            code = proc.wait(timeout=10)
            pytest.fail(
                f"peregrine exited (status {code}) before listening\n"
                f"command: {' '.join(self.cmd)}\n--- server stderr (tail) ---\n{self.stderr_tail()}"
            )
        return found["url"].rstrip("/")

    def stderr_tail(self, lines: int = 40, drop: str | None = None) -> str:
        return _stderr_tail(self.stderr_file, lines, drop) if self.stderr_file else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None:
            return
        _stop(self.proc)
        if self.proc.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
            print(f"\nperegrine exited with status {self.proc.returncode}\n{self.stderr_tail()}")
        if self.stderr_file:
            self.stderr_file.unlink(missing_ok=True)


def start_server(api_key: str, served_model: str):
    """Generator: starts a server, yields its URL, stops it when resumed."""
    # Each server keeps its files and batches in a directory of its own.
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-data-")
    server = ServerProcess(api_key, served_model, data_dir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def module_server(api_key: str, served_model: str):
    """A server of the requesting module's own: its KV cache holds nothing from other modules'
    tests. Sampling is repeatable for the same request in the same cache state, but llama.cpp's
    attention kernels change with the batch shape and the cache size (docs/decisions/0003), so
    tests that compare runs token for token use this, one request at a time.
    PEREGRINE_E2E_URL, when set, is used instead, as for the session server."""
    external = os.environ.get("PEREGRINE_E2E_URL")
    if external:
        yield external.rstrip("/")
        return
    gen = start_server(api_key, served_model)
    url = next(gen)
    yield url
    gen.close()


@pytest.fixture(scope="module")
def module_groq_client(module_server: str, api_key: str):
    client = groq.Groq(base_url=module_server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_url(server: str) -> str:
    return server


@pytest.fixture(scope="session")
def groq_client(server: str, api_key: str):
    # The groq SDK appends /openai/v1 itself: base_url is the bare server URL.
    client = groq.Groq(base_url=server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield client
    client.close()


@pytest_asyncio.fixture
async def async_groq_client(server: str, api_key: str):
    # Function-scoped: an async HTTP pool must not outlive the event loop of one test.
    client = groq.AsyncGroq(base_url=server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield client
    await client.close()


@pytest.fixture(scope="session")
def openai_client(server: str, api_key: str):
    client = openai.OpenAI(
        base_url=f"{server}/openai/v1", api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    yield client
    client.close()
