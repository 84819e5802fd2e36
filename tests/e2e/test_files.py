"""The Files API through the official groq SDK, as the batch docs use it: upload a JSONL file
with `client.files.create`, list, retrieve, download with `client.files.content`, delete."""

from __future__ import annotations

import json

import groq
import pytest

LINES = [
    {
        "custom_id": f"request-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "llama-3.1-8b-instant",
            "messages": [{"role": "user", "content": f"What is {i}+{i}?"}],
        },
    }
    for i in range(3)
]


def test_files_round_trip_with_the_groq_sdk(groq_client, tmp_path):
    path = tmp_path / "batch_file.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    with open(path, "rb") as f:
        created = groq_client.files.create(file=f, purpose="batch")
    assert created.id.startswith("file_")
    assert created.object == "file"
    assert created.purpose == "batch"
    assert created.filename == "batch_file.jsonl"
    assert created.bytes == path.stat().st_size

    listed = groq_client.files.list()
    assert created.id in [f.id for f in listed.data]
    assert groq_client.files.info(created.id).bytes == created.bytes

    content = groq_client.files.content(created.id)
    assert content.read() == path.read_bytes()

    deleted = groq_client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True
    with pytest.raises(groq.NotFoundError):
        groq_client.files.info(created.id)


def test_upload_with_a_wrong_purpose_is_a_400(groq_client, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    with open(path, "rb") as f, pytest.raises(groq.BadRequestError) as err:
        groq_client.files.create(file=f, purpose="assistants")
    assert "purpose" in str(err.value)



def test_file_objects_validate_as_openai_typed_file_objects(openai_client, tmp_path):
    # OpenAI's FileObject requires `status` (Groq's objects omit it): strict validation of the
    # raw JSON, since the SDK itself builds its models without validating.
    from openai.types import FileObject

    path = tmp_path / "batch_file.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    with open(path, "rb") as f:
        raw = openai_client.files.with_raw_response.create(file=f, purpose="batch")
    created = FileObject.model_validate(raw.http_response.json())
    assert created.status == "processed" and created.purpose == "batch"
    listed = openai_client.files.with_raw_response.list().http_response.json()
    for item in listed["data"]:
        FileObject.model_validate(item)
    openai_client.files.delete(created.id)
