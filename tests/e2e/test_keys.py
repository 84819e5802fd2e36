"""Managed API keys end to end: keys made by `peregrine keys create` work with the groq SDK,
act for their organization only (files of another organization are 404s and not listed), and
get 401 `invalid_api_key` once revoked with `peregrine keys revoke`; `--api-key` is not left
in the process list."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import groq
import pytest
from conftest import CLIENT_TIMEOUT_S, DEFAULT_BIN, ServerProcess

MODEL = os.environ.get("PEREGRINE_TEST_MODEL", "smollm2-135m-instruct")
BIN = os.environ.get("PEREGRINE_BIN", str(DEFAULT_BIN))


def keys(data_dir: str, *args: str) -> str:
    out = subprocess.run(
        [BIN, "keys", "--data-dir", data_dir, *args],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def keyed(api_key):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-keys-")
    server = ServerProcess(api_key, MODEL, data_dir)
    url = server.start()
    yield url, data_dir, server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def client(url: str, key: str) -> groq.Groq:
    return groq.Groq(base_url=url, api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


def upload(c: groq.Groq, tmp_path: Path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n')
    with open(path, "rb") as f:
        return c.files.create(file=f, purpose="batch")


def test_cli_keys_work_per_organization_and_stop_when_revoked(keyed, tmp_path):
    url, data_dir, _ = keyed
    alice = keys(data_dir, "create", "--name", "alice", "--org", "org_a")
    bob = keys(data_dir, "create", "--name", "bob", "--org", "org_b")
    assert alice.startswith("gsk_") and len(alice) == 56
    listing = keys(data_dir, "list")
    assert "alice" in listing and "org_a" in listing and alice not in listing
    a, b = client(url, alice), client(url, bob)
    chat = a.chat.completions.create(
        model="llama-3.1-8b-instant", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert chat.choices[0].message.content is not None
    f = upload(a, tmp_path)
    assert f.id in [x.id for x in a.files.list().data]
    assert f.id not in [x.id for x in b.files.list().data]
    with pytest.raises(groq.NotFoundError):
        b.files.info(f.id)
    with pytest.raises(groq.NotFoundError):
        b.files.delete(f.id)
    assert a.files.info(f.id).id == f.id

    key_id = next(line.split()[0] for line in listing.splitlines() if " alice " in line)
    keys(data_dir, "revoke", key_id)
    deadline = time.monotonic() + 10
    while True:
        try:
            a.models.list()
        except groq.AuthenticationError as e:
            assert e.status_code == 401
            assert "invalid_api_key" in str(e.body)
            break
        assert time.monotonic() < deadline, "a revoked key still works after 10 s"
        time.sleep(0.5)
    assert b.models.list().data, "other keys keep working"


def test_a_key_given_as_a_flag_is_not_in_the_process_list(keyed, api_key):
    _, _, server = keyed
    pid = server.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert "serve" in cmdline
    assert api_key not in cmdline
    assert "--api-key" not in cmdline
