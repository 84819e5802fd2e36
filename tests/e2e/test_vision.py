"""Vision end to end, through the groq SDK: `image_url` parts (base64 `data:` URLs and URLs
fetched from an allow-listed loopback server) on a vision model loaded with its projector.

The material comes from `scripts/make_hf_test_models.py vision`: SmolLM2-135M-Instruct (the
real text model) with a random-weight CLIP ViT (transformers' CLIPVisionModel) + LLaVA MLP
projector, converted by llama.cpp's `convert_image_encoder_to_gguf.py` and loaded through
llama.cpp's multimodal library. What these tests prove: the seeds'
vision requests run, images reach the model (their positions in `prompt_tokens`, different
images giving different logits) and every limit has its error. Not any quality: the
projector is random, so the answers do not describe the images.
"""

from __future__ import annotations

import base64
import http.server
import shutil
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import groq
import pytest
from conftest import CLIENT_TIMEOUT_S, ServerProcess, hf_test_models

SEED_MODEL = "meta-llama/llama-4-scout-17b-16e-instruct"
IMAGE_TOKENS = 64  # the generated projector: 64x64 pixels in 8x8 patches


def png(width: int, height: int, pixel) -> bytes:
    """An RGB PNG, written by hand (zlib and CRCs from the standard library)."""
    rows = b"".join(
        b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RED = png(32, 24, lambda x, y: (220, 30, 30))
STRIPES = png(32, 24, lambda x, y: (0, 0, 0) if x % 8 < 4 else (255, 255, 255))


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def vision_files() -> dict:
    return hf_test_models("vision")


class Images(http.server.BaseHTTPRequestHandler):
    """Serves RED at /red.png and STRIPES at /stripes.png."""

    def do_GET(self):  # noqa: N802 (the handler's name)
        body = {"/red.png": RED, "/stripes.png": STRIPES}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(body or b"not found")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def served(api_key, image_server):
    f = vision_files()
    data_dir = tempfile.mkdtemp(prefix="peregrine-e2e-vision-")
    config = Path(data_dir) / "peregrine.toml"
    config.write_text(
        f'[[models]]\nmodel = "{f["model"]}"\nid = "smollm2-vision"\ndefault_aliases = false\n'
        f'aliases = ["{SEED_MODEL}"]\nmmproj = "{f["mmproj"]}"\nctx_size = 2048\nparallel = 2\n\n'
        f'[[models]]\nmodel = "{f["model"]}"\nid = "smollm2-text"\ndefault_aliases = false\n'
        f"ctx_size = 1024\nparallel = 1\n"
    )
    server = ServerProcess(api_key, f["model"], data_dir,
                           ("--config", str(config), "--visit-allow-host", image_server))
    url = server.start()
    yield url
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(served, api_key):
    c = groq.Groq(base_url=served, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()


def ask(client, url: str, **kw):
    return client.chat.completions.create(
        model=SEED_MODEL,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What's in this image?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
        **{"max_completion_tokens": 8, "temperature": 0, **kw},
    )


def test_the_vision_model_lists_image_input(client):
    models = {m.id: m for m in client.models.list().data}
    assert models[SEED_MODEL].input_modalities == ["text", "image"]
    assert models["smollm2-text"].input_modalities == ["text"]


def test_the_seeds_base64_example(client):
    r = ask(client, data_url(RED))
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens > IMAGE_TOKENS


def test_the_seeds_url_example_from_an_allow_listed_server(client, image_server):
    r = ask(client, f"http://{image_server}/stripes.png", temperature=1, top_p=1, stop=None)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_the_seeds_multi_turn_example(client, image_server):
    r = client.chat.completions.create(
        model=SEED_MODEL,
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": f"http://{image_server}/red.png"}},
            ]},
            {"role": "user", "content": "Tell me more about the area."},
        ],
        temperature=1, max_completion_tokens=8, top_p=1, stream=False, stop=None,
    )
    assert r.choices[0].message.role == "assistant"


def test_streaming_with_an_image(client):
    stream = ask(client, data_url(RED), stream=True)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_image_takes_its_positions(client):
    text_only = client.chat.completions.create(
        model=SEED_MODEL, max_completion_tokens=1, temperature=0,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What's in this image?"}, {"type": "text", "text": ""}]}],
    )
    with_image = ask(client, data_url(RED), max_completion_tokens=1)
    assert with_image.usage.prompt_tokens == text_only.usage.prompt_tokens + IMAGE_TOKENS


def first_token_logprobs(client, url: str) -> list[float]:
    r = ask(client, url, max_completion_tokens=1, logprobs=True, top_logprobs=5)
    return [t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs]


def max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def test_two_images_give_different_logits(client, image_server):
    red = first_token_logprobs(client, data_url(RED))
    # The same pixels by URL: the same logits (up to the rounding of a cached prefix).
    assert max_diff(red, first_token_logprobs(client, f"http://{image_server}/red.png")) < 1e-3
    assert max_diff(red, first_token_logprobs(client, data_url(STRIPES))) > 1e-3


@pytest.mark.parametrize("urls,status,words", [
    ([data_url(RED)] * 6, 400, "at most 5 images"),
    ([data_url(b"not an image")], 400, "could not be decoded"),
    (["data:image/png;base64," + "A" * (6 << 20)], 413, "at most 4194304 bytes"),
    (["http://127.0.0.1:9/private.png"], 400, "loopback"),
    (["ftp://example.com/a.png"], 400, "http(s) URL"),
])
def test_every_limit_has_its_error(client, urls, status, words):
    parts = [{"type": "text", "text": "Compare."}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    with pytest.raises(groq.APIStatusError) as err:
        client.chat.completions.create(model=SEED_MODEL, max_completion_tokens=4,
                                       messages=[{"role": "user", "content": parts}])
    assert err.value.status_code == status
    assert words in str(err.value)


def test_a_model_without_a_projector_refuses_images(client):
    with pytest.raises(groq.BadRequestError) as err:
        client.chat.completions.create(model="smollm2-text", max_completion_tokens=4, messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": data_url(RED)}}]}])
    assert "`image_url` is not supported with this model" in str(err.value)
