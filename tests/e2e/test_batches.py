"""The Batch API through the official groq SDK (the batch docs' flow: `files.create`,
`batches.create`, poll `batches.retrieve`, `files.content`), its errors, cancellation, and
durability: a server killed with SIGKILL mid-batch and restarted delivers every line exactly
once; two replicas on one PostgreSQL (when PEREGRINE_TEST_POSTGRES names a server) never run a
line twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import groq
import pytest
from conftest import CLIENT_TIMEOUT_S, REPLICA_ARGS, ServerProcess

# Batches here run on the small test model when the suite has one: they are about the
# machinery, not the answers.
BATCH_MODEL = os.environ.get("PEREGRINE_TEST_MODEL", "smollm2-135m-instruct")
POLL_TIMEOUT_S = 300.0


def line(i: int, *, max_tokens: int = 8, **over) -> dict:
    body = {
        "model": "llama-3.1-8b-instant",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"What is {i}+{i}?"},
        ],
        "max_tokens": max_tokens,
    }
    out = {"custom_id": f"request-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    out.update(over)
    return out


def upload(client: groq.Groq, tmp_path, lines: list, name: str = "batch_file.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="batch")


def wait_for(client: groq.Groq, batch_id: str, statuses: tuple, timeout: float = POLL_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        assert time.monotonic() < deadline, f"batch still {b.status}: {b}"
        time.sleep(0.5)


def wait_until_done(client: groq.Groq, batch_id: str, lines: int, timeout: float = POLL_TIMEOUT_S):
    """Polls until at least `lines` lines of a running batch are done; returns the batch."""
    deadline = time.monotonic() + timeout
    while True:
        cur = client.batches.retrieve(batch_id)
        if cur.status == "in_progress" and cur.request_counts.completed >= lines:
            return cur
        assert cur.status in ("validating", "in_progress"), cur
        assert time.monotonic() < deadline
        time.sleep(0.1)


def read_jsonl(client: groq.Groq, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text()
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def batch_server(api_key):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-batch-")
    server = ServerProcess(api_key, BATCH_MODEL, data_dir)
    url = server.start()
    yield url
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(batch_server, api_key):
    c = groq.Groq(base_url=batch_server, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()


def test_seed_batch_flow(client, tmp_path):
    """The batch docs' steps, with only the base URL and key changed."""
    lines = [line(i) for i in range(4)]
    file_response = upload(client, tmp_path, lines)
    response = client.batches.create(
        completion_window="24h",
        endpoint="/v1/chat/completions",
        input_file_id=file_response.id,
        metadata={"job": "nightly"},
    )
    assert response.id.startswith("batch_")
    assert response.object == "batch"
    assert response.status == "validating"
    assert response.input_file_id == file_response.id
    assert response.expires_at - response.created_at == 24 * 3600
    assert response.metadata == {"job": "nightly"}

    done = wait_for(client, response.id, ("completed", "failed"))
    assert done.status == "completed", done.errors
    assert done.request_counts.total == 4
    assert done.request_counts.completed == 4
    assert done.request_counts.failed == 0
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.error_file_id is None
    assert done.failed_at is None and done.cancelled_at is None

    info = client.files.info(done.output_file_id)
    assert info.purpose == "batch_output"
    results = read_jsonl(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in results) == [f"request-{i}" for i in range(4)]
    for r in results:
        assert r["id"].startswith("batch_req_out_")
        assert r["error"] is None
        resp = r["response"]
        assert resp["status_code"] == 200
        assert resp["request_id"].startswith("req_")
        body = resp["body"]
        # The same body the live endpoint returns.
        assert body["object"] == "chat.completion"
        assert body["id"].startswith("chatcmpl-")
        assert body["model"] == "llama-3.1-8b-instant"
        assert body["x_groq"]["id"] == resp["request_id"]
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        assert 0 < body["usage"]["completion_tokens"] <= 8

    # Listing: newest first, the repeated `id` filter, cursor paging.
    listed = client.batches.list()
    assert response.id in [b.id for b in listed.data]
    raw = client.get(
        f"/openai/v1/batches?id={response.id}&id=batch_01jh6xa7reempvjyh6n3yst2zw", cast_to=object
    )
    assert [b["id"] for b in raw["data"]] == [response.id]


def test_paging_follows_next_cursor(client, tmp_path):
    f = upload(client, tmp_path, [line(0)])
    made = [
        client.batches.create(completion_window="7d", endpoint="/v1/chat/completions", input_file_id=f.id).id
        for _ in range(3)
    ]
    seen: list[str] = []
    url = "/openai/v1/batches?limit=2"
    while url:
        page = client.get(url, cast_to=object)
        assert len(page["data"]) <= 2
        seen.extend(b["id"] for b in page["data"])
        cursor = page["paging"]["next_cursor"]
        url = f"/openai/v1/batches?limit=2&cursor={cursor}" if cursor else None
    assert seen == sorted(seen, reverse=True)
    assert set(made) <= set(seen)
    assert len(seen) == len(set(seen))
    for b in made:
        wait_for(client, b, ("completed",))


def test_invalid_lines_fail_validation_with_line_numbers(client, tmp_path):
    lines = [
        line(0),
        "{not json",
        line(2, custom_id="request-0"),
        line(3, method="GET"),
        {**line(4), "body": {**line(4)["body"], "model": "no-such-model"}},
        line(5, url="/v1/embeddings"),
    ]
    f = upload(client, tmp_path, lines)
    b = client.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
    failed = wait_for(client, b.id, ("failed", "completed", "in_progress"))
    assert failed.status == "failed"
    assert failed.failed_at is not None
    errors = {e.line: e for e in failed.errors.data}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2].code == "invalid_json_line"
    assert errors[3].code == "duplicate_custom_id" and errors[3].param == "custom_id"
    assert errors[4].code == "invalid_method"
    assert errors[4].message == "Invalid value: 'GET'. Supported values are: 'POST'"
    assert errors[4].param == "method"
    assert errors[5].code == "model_not_found"
    assert errors[6].code == "invalid_url"
    assert failed.output_file_id is None and failed.error_file_id is None


def test_create_errors(client, tmp_path):
    f = upload(client, tmp_path, [line(0)])
    with pytest.raises(groq.BadRequestError) as e:
        client.batches.create(completion_window="1h", endpoint="/v1/chat/completions", input_file_id=f.id)
    err = e.value.body["error"] if "error" in e.value.body else e.value.body
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "completion_window"
    assert "24h" in err["message"]
    with pytest.raises(groq.BadRequestError) as e:
        client.batches.create(completion_window="8d", endpoint="/v1/chat/completions", input_file_id=f.id)
    with pytest.raises(groq.BadRequestError) as e:
        client.batches.create(
            completion_window="24h", endpoint="/v1/chat/completions", input_file_id="file_01jh6x76wtemjr74t1fh0faj5t"
        )
    err = e.value.body["error"] if "error" in e.value.body else e.value.body
    assert err["param"] == "input_file_id"
    assert "not found" in err["message"]
    with pytest.raises(groq.BadRequestError):
        client.batches.create(completion_window="24h", endpoint="/v1/completions", input_file_id=f.id)
    with pytest.raises(groq.NotFoundError):
        client.batches.retrieve("batch_01jh6xa7reempvjyh6n3yst2zw")
    with pytest.raises(groq.NotFoundError):
        client.batches.cancel("batch_01jh6xa7reempvjyh6n3yst2zw")


def test_failed_requests_go_to_the_error_file(client, tmp_path):
    # Valid lines whose requests the live endpoint would refuse: a 400 each, in the error file.
    bad = line(1, max_tokens=10_000_000)
    f = upload(client, tmp_path, [line(0), bad])
    b = client.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
    done = wait_for(client, b.id, ("completed", "failed"))
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [ok] = read_jsonl(client, done.output_file_id)
    assert ok["custom_id"] == "request-0"
    [err] = read_jsonl(client, done.error_file_id)
    assert err["custom_id"] == "request-1"
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert err["error"] is None


def test_cancel_delivers_finished_lines_and_cancels_the_rest(client, tmp_path):
    lines = [line(i, max_tokens=48) for i in range(40)]
    f = upload(client, tmp_path, lines)
    b = client.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
    wait_for(client, b.id, ("in_progress",), timeout=60)
    cancelling = client.batches.cancel(b.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None
    done = wait_for(client, b.id, ("cancelled",))
    assert done.cancelled_at >= done.cancelling_at
    out = read_jsonl(client, done.output_file_id)
    errs = read_jsonl(client, done.error_file_id)
    ids = [r["custom_id"] for r in out + errs]
    assert sorted(ids) == sorted(x["custom_id"] for x in lines)
    assert errs, "40 lines cannot all finish before the cancel"
    for e in errs:
        assert e["response"] is None
        assert e["error"]["code"] == "batch_cancelled"
    assert done.request_counts.total == 40
    assert done.request_counts.completed == len(out)
    assert done.request_counts.failed == len(errs)
    with pytest.raises(groq.BadRequestError):
        client.batches.cancel(b.id)


def _exactly_once(client, batch, lines):
    out = read_jsonl(client, batch.output_file_id)
    errs = read_jsonl(client, batch.error_file_id)
    ids = [r["custom_id"] for r in out + errs]
    assert sorted(ids) == sorted(x["custom_id"] for x in lines), "every line exactly once"
    assert len({r["id"] for r in out + errs}) == len(ids)
    return out, errs


def test_sigkill_mid_batch_resumes_with_every_line_exactly_once(api_key, tmp_path):
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-crash-")
    # A short lease so the dead server's claimed lines are taken over quickly.
    server = ServerProcess(api_key, BATCH_MODEL, data_dir, ("--batch-lease-secs", "2"))
    try:
        url = server.start()
        c = groq.Groq(base_url=url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        lines = [line(i, max_tokens=32) for i in range(24)]
        f = upload(c, tmp_path, lines)
        b = c.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
        cur = wait_until_done(c, b.id, 3)
        assert cur.request_counts.completed < 24, "the batch finished before the kill"
        server.kill()
        c.close()

        url = server.start()
        c = groq.Groq(base_url=url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        done = wait_for(c, b.id, ("completed",))
        out, errs = _exactly_once(c, done, lines)
        assert len(out) == 24 and errs == []
        assert done.request_counts.completed == 24
        c.close()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


PG = os.environ.get("PEREGRINE_TEST_POSTGRES")


def _psql(url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.skipif(not PG, reason="set PEREGRINE_TEST_POSTGRES to a PostgreSQL server URL")
def test_two_replicas_on_postgres_share_a_batch_without_running_a_line_twice(api_key, tmp_path):
    name = f"peregrine_e2e_{int(time.time() * 1000)}"
    _psql(PG, f"CREATE DATABASE {name}")
    db = PG.rsplit("/", 1)[0] + "/" + name
    # One database and one file directory (file contents are on local disk) for both.
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-replicas-")
    args = ("--database-url", db, *REPLICA_ARGS)
    a = ServerProcess(api_key, BATCH_MODEL, data_dir, args)
    b = ServerProcess(api_key, BATCH_MODEL, data_dir, args)
    try:
        ca = groq.Groq(base_url=a.start(), api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        cb = groq.Groq(base_url=b.start(), api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        lines = [line(i, max_tokens=24) for i in range(30)]
        f = upload(ca, tmp_path, lines)
        batch = cb.batches.create(completion_window="24h", endpoint="/v1/chat/completions", input_file_id=f.id)
        try:
            done = wait_for(ca, batch.id, ("completed",))
        except AssertionError as e:
            # What each replica's worker did is in its log (less the polls' request lines,
            # which would fill any tail): a stalled batch is unexplained without it.
            logs = "".join(
                f"\n--- replica {n} ---\n{p.stderr_tail(drop='peregrine::request')}"
                for n, p in (("a", a), ("b", b))
            )
            raise AssertionError(f"{e}{logs}") from None
        out, errs = _exactly_once(ca, done, lines)
        assert len(out) == 30 and errs == []
        # Every line was claimed once, and both replicas worked.
        assert _psql(db, "SELECT max(attempts) FROM batch_lines") == "1"
        owners = _psql(db, "SELECT count(DISTINCT claimed_by) FROM batch_lines")
        assert owners == "2", f"one replica did all the work ({owners} claimants)"
        ca.close()
        cb.close()
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
