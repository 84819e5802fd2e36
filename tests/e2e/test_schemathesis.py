"""Schemathesis, a property-based API fuzzer, against a real server: every operation of the
server's own OpenAPI document (`GET /openapi.json`) with generated valid and invalid
requests, in a bounded run (a fixed seed, 10 examples an operation, all four phases).

Checks: no 5xx, every response's status is documented for its operation, its content type
is the documented one, and its body validates against the documented schema.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import ServerProcess

MODEL = "smollm2-135m-instruct"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def fuzz_server(api_key: str):
    data_dir = tempfile.mkdtemp(prefix="peregrine-schemathesis-")
    # A small context keeps every generated completion short: the fuzzer's valid chat requests
    # carry no max_tokens, so each one generates until the context is full. At 512 tokens the
    # ~66 of them were nearly all of this test's ~280 s on a slow 2-core CPU.
    server = ServerProcess(api_key, MODEL, data_dir, extra_args=("--ctx-size", "128"))
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(fuzz_server: str, api_key: str):
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{fuzz_server}/openapi.json",
        "-H", f"Authorization: Bearer {api_key}",
        "--checks", CHECKS,
        "--max-examples", "10",
        "--seed", "1",
        "--request-timeout", "120",
        "--continue-on-failure",
    ]
    # Its example database goes to a scratch directory, not the checkout.
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as cwd:
        env = {**os.environ, "NO_COLOR": "1"}
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)
    out = run.stdout + run.stderr
    print(out[-3000:])
    assert run.returncode == 0, f"schemathesis failed:\n{out[-12000:]}"
    assert " passed" in out, out[-4000:]
