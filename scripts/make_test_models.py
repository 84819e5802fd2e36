#!/usr/bin/env python3
"""Builds tiny GGUF models for Peregrine's end-to-end tests, and caches them.

    python3 scripts/make_test_models.py templates   # prints the extracted templates' folder
    python3 scripts/make_test_models.py lora        # prints a JSON object of paths

Models land in ${PEREGRINE_TEST_MODELS:-~/.cache/peregrine/test-models}. Each is keyed by a
hash of this file, of its inputs and of the `gguf` package's version (a `.key` file beside
it), so a second run with nothing changed writes nothing. Progress goes to stderr.

The reasoning model's design lives here (`design_weights`, `verify_reasoning`, the
vocabulary and template helpers); `scripts/make_hf_test_models.py reasoning` builds the model
with transformers and llama.cpp's converter around it. The design: the Qwen2.5/Qwen3
byte-level BPE vocabulary of the cached default model with Qwen3's four extra non-special
tokens (151665 <tool_response>, 151666 </tool_response>, 151667 <think>, 151668 </think>)
in place of Qwen2.5's padding entries; Qwen3's real chat template (Qwen/Qwen3-0.6B's, from
vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja of the pinned llama-cpp-python sdist,
verified by its sha256; nothing of it is committed here); and weights that make greedy
decoding a bigram model following a fixed script: every block's attn_output and ffn_down
are zero (the residual stream stays the last token's embedding), the chain tokens get
orthogonal embedding directions and the output matrix maps each to its successor with a
large margin, every other token leads to <think>. After `<|im_start|>assistant\\n` the
model says `<think>Okay thinking.</think>\\n\\nHello!<|im_end|>`; after Qwen3's
enable_thinking=false prompt (ending `<think>\\n\\n</think>\\n\\n`) it says
`Hello!<|im_end|>`. It is not a language model: everything off the script is noise.

`templates` also leaves openai-gpt-oss-120b.jinja and
deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja from the same sdist in the templates folder.

`lora` -> LoRA test material for SmolLM2-135M-Instruct (the cached
models/smollm2-135m-instruct.gguf: llama, Q4_1), printed as
{"base", "zero", "a", "b", "merged_a", "peft_a_zip"}, written with `gguf` and numpy:

* smollm2-lora-base.gguf: the SmolLM2 GGUF with all its metadata (tokenizer, chat
  template) and tensors, but every blk.N.attn_q / attn_v dequantized to F32; every other
  tensor byte-identical (still Q4_1 / Q8_0 / F32);
* smollm2-lora-{zero,a,b}.gguf: adapters in llama.cpp's format (what its
  convert_lora_to_gguf.py writes: general.type "adapter", adapter.type "lora",
  adapter.lora.alpha 16, blk.N.<attn_q|attn_v>.weight.lora_a numpy (r, n_in) and .lora_b
  (n_out, r), F32, r = 8, so scale alpha/r = 2). zero: random A, B = 0. a, b (seeds 2, 3):
  random A and B sized so that ||scale * B @ A||_F is about half of ||W||_F per tensor;
* smollm2-lora-merged-a.gguf: the base copy with W + scale * B @ A of adapter a in place of
  each target (float32): serving base + adapter a must give the merged file's greedy tokens;
* smollm2-lora-a-peft.zip (only when the `safetensors` package is installed, else null):
  adapter a as PEFT saves it (adapter_model.safetensors, float16, q_proj/v_proj lora_A/B,
  and adapter_config.json), in HF space: q_proj's lora_B rows carry the inverse of
  convert_hf_to_gguf.py's rotary permutation, so converting the zip gives adapter a.

What they prove: that adapters load and apply through llama.cpp (names, shapes, alpha,
scale), that a zero-B adapter reproduces the base exactly, that a and b change greedy
output and differ from each other, and that base + a matches the merged oracle. Not any
quality: the adapters are random.

The vision projector and the default model's LoRA adapters are made with transformers,
peft and llama.cpp's conversion scripts instead: `scripts/make_hf_test_models.py`.

Later models go in as further entries of MODELS below.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

# The llama-cpp-python sdist whose vendored llama.cpp carries the chat templates.
LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_CPP_PYTHON_VERSION = "0.3.16"
LLAMA_CPP_PYTHON_SDIST = "llama_cpp_python-0.3.16.tar.gz"
LLAMA_CPP_PYTHON_SHA256 = "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6"
TEMPLATES_IN_SDIST = "llama_cpp_python-0.3.16/vendor/llama.cpp/models/templates/"
TEMPLATES = (
    "Qwen-Qwen3-0.6B.jinja",
    "openai-gpt-oss-120b.jinja",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
)
QWEN3_TEMPLATE = "Qwen-Qwen3-0.6B.jinja"


def peregrine_home() -> Path:
    return Path(os.environ.get("PEREGRINE_HOME", Path.home() / ".cache" / "peregrine"))


def cache_dir() -> Path:
    env = os.environ.get("PEREGRINE_TEST_MODELS")
    return Path(env) if env else peregrine_home() / "test-models"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_memo(path: Path) -> str:
    """sha256 of a big input, remembered beside the outputs against its size and mtime."""
    st = path.stat()
    stamp = f"{path.resolve()} {st.st_size} {st.st_mtime_ns}"
    memo = cache_dir() / f".sha256-{path.name}"
    try:
        old_stamp, digest = memo.read_text().rsplit(" ", 1)
        if old_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    log(f"hashing {path} ...")
    digest = sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(f"{stamp} {digest}")
    return digest


def own_source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in (own_source_hash(), importlib.metadata.version("gguf"), *parts):
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def is_fresh(path: Path, key: str) -> bool:
    keyfile = path.with_name(path.name + ".key")
    try:
        return path.is_file() and keyfile.read_text().strip() == key
    except OSError:
        return False


def mark_fresh(path: Path, key: str) -> None:
    path.with_name(path.name + ".key").write_text(key + "\n")


# --------------------------------------------------------------------------------------
# Templates: from the llama-cpp-python sdist on PyPI
# --------------------------------------------------------------------------------------


def templates_dir() -> Path:
    return cache_dir() / "templates"


def fetch_sdist(dest: Path) -> Path:
    """The pinned sdist, through pip (hash-checked), or $PEREGRINE_LLAMA_CPP_SDIST."""
    local = os.environ.get("PEREGRINE_LLAMA_CPP_SDIST")
    if local:
        path = Path(local)
    else:
        req = dest / "requirements.txt"
        req.write_text(
            f"{LLAMA_CPP_PYTHON}=={LLAMA_CPP_PYTHON_VERSION} "
            f"--hash=sha256:{LLAMA_CPP_PYTHON_SHA256}\n"
        )
        log(f"downloading the {LLAMA_CPP_PYTHON} {LLAMA_CPP_PYTHON_VERSION} sdist (pip) ...")
        # pip prepares the sdist's metadata, which needs its build backend
        # (scikit-build-core) in an isolated environment; nothing gets compiled.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-binary", ":all:", "-d", str(dest), "-r", str(req)],
            check=True, stdout=sys.stderr,
        )
        path = dest / LLAMA_CPP_PYTHON_SDIST
    digest = sha256_file(path)
    if digest != LLAMA_CPP_PYTHON_SHA256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {LLAMA_CPP_PYTHON_SHA256}")
    return path


def ensure_templates() -> Path:
    """Extracts TEMPLATES from the pinned sdist into the cache (once); returns the folder."""
    out = templates_dir()
    # Keyed by what is extracted only, so that editing this file does not download again.
    key = hashlib.sha256("\0".join((LLAMA_CPP_PYTHON_SHA256, *TEMPLATES)).encode()).hexdigest()
    stamp = out / "SOURCE"
    if all((out / t).is_file() for t in TEMPLATES) and is_fresh(stamp, key):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdist = fetch_sdist(Path(tmp))
        with tarfile.open(sdist, "r:gz") as tar:
            for name in TEMPLATES:
                member = tar.extractfile(TEMPLATES_IN_SDIST + name)
                if member is None:
                    raise SystemExit(f"{sdist}: no {TEMPLATES_IN_SDIST + name}")
                part = out / (name + ".part")
                part.write_bytes(member.read())
                part.replace(out / name)
    stamp.write_text(
        f"{LLAMA_CPP_PYTHON}=={LLAMA_CPP_PYTHON_VERSION} sdist "
        f"sha256:{LLAMA_CPP_PYTHON_SHA256}\n{TEMPLATES_IN_SDIST}\n"
    )
    mark_fresh(stamp, key)
    log(f"templates extracted into {out}")
    return out


# --------------------------------------------------------------------------------------
# Byte-level BPE helpers (GPT-2's byte <-> unicode map, as the Qwen vocabulary uses)
# --------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}


def decode_piece(token: str, token_type: int) -> str:
    """A token's text as llama.cpp renders it (special-aware): byte tokens are decoded."""
    if token_type in (3, 4):  # CONTROL, USER_DEFINED: literal text
        return token
    return bytes(BYTE_DECODER[c] for c in token).decode("utf-8")


# --------------------------------------------------------------------------------------
# reasoning: qwen3-reasoning-tiny.gguf
# --------------------------------------------------------------------------------------

QWEN3_ADDED = {
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}
QWEN3_ADDED_IDS = {v: k for k, v in QWEN3_ADDED.items()}
TOKEN_TYPE_USER_DEFINED = 4
BOS_ID = 151643  # <|endoftext|>, also padding, as in Qwen3's GGUFs
EOS_ID = 151645  # <|im_end|>

# The script greedy decoding follows, as token strings of the vocabulary (byte-level BPE:
# "Ġ" is a space, "Ċ" a newline). Each token leads to the next one; every other token
# (the chain's last one included) leads to the first, <think>.
CHAIN = ["<think>", "Okay", "Ġthinking", ".", "</think>", "ĊĊ", "Hello", "!", "<|im_end|>"]

N_EMBD = 64
N_LAYER = 2
N_HEAD = 2
N_HEAD_KV = 1
HEAD_DIM = 32
N_FF = 128
N_CTX = 4096
ROPE_BASE = 1e6
RMS_EPS = 1e-6
LOGIT_WEIGHT = 4.0  # a chain logit is about LOGIT_WEIGHT * sqrt(N_EMBD) = 32
SEED = 20250607


def read_vocab(path: Path):
    import gguf

    log(f"reading the vocabulary of {path} ...")
    r = gguf.GGUFReader(path)

    def field(name):
        f = r.get_field(name)
        if f is None:
            raise SystemExit(f"{path}: no {name}")
        return f.contents()

    vocab = {
        "model": field("tokenizer.ggml.model"),
        "pre": field("tokenizer.ggml.pre"),
        "tokens": list(field("tokenizer.ggml.tokens")),
        "types": [int(t) for t in field("tokenizer.ggml.token_type")],
        "merges": list(field("tokenizer.ggml.merges")),
    }
    for i in QWEN3_ADDED:
        old = vocab["tokens"][i]
        if old != f"[PAD{i}]":
            raise SystemExit(f"{path}: token {i} is {old!r}, expected a padding entry")
    for i, text in QWEN3_ADDED.items():
        vocab["tokens"][i] = text
        vocab["types"][i] = TOKEN_TYPE_USER_DEFINED
    if vocab["tokens"][BOS_ID] != "<|endoftext|>" or vocab["tokens"][EOS_ID] != "<|im_end|>":
        raise SystemExit(f"{path}: not the Qwen2.5 vocabulary")
    return vocab


def chain_ids(tokens: list[str]) -> list[int]:
    index = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    ids = []
    for t in CHAIN:
        if t not in index:
            raise SystemExit(f"{t!r} is not one token of the vocabulary")
        ids.append(index[t])
    return ids


def design_weights(n_vocab: int, chain: list[int]) -> dict[str, np.ndarray]:
    """Tensors by GGUF name, numpy shape (rows = outputs, columns = inputs)."""
    rng = np.random.default_rng(SEED)
    d, k = N_EMBD, len(chain) - 1  # k chain tokens have a successor: directions e_1..e_k
    assert k + 1 < d
    scale = np.sqrt(d)  # RMSNorm leaves sqrt(d) * e_i as it is

    # Embeddings: chain token c_i (i < k) is sqrt(d) e_{i+1}; every other token (the last
    # chain token included) is sqrt(d) e_0 plus noise in the dimensions the chain leaves.
    embd = np.zeros((n_vocab, d), dtype=np.float32)
    embd[:, 0] = scale
    embd[:, k + 1:] = rng.normal(0.0, 0.5, (n_vocab, d - k - 1))
    for i, tok in enumerate(chain[:-1]):
        embd[tok] = 0.0
        embd[tok, i + 1] = scale

    # Output: small noise, but the successor of c_i reads e_{i+1}, and <think> reads e_0.
    out = rng.normal(0.0, 0.02, (n_vocab, d)).astype(np.float32)
    out[chain[0]] = 0.0
    out[chain[0], 0] = LOGIT_WEIGHT
    for i, tok in enumerate(chain[1:]):
        out[tok] = 0.0
        out[tok, i + 1] = LOGIT_WEIGHT

    t = {
        "token_embd.weight": embd.astype(np.float16),
        "output_norm.weight": np.ones(d, dtype=np.float32),
        "output.weight": out.astype(np.float16),
    }
    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
    for b in range(N_LAYER):
        p = f"blk.{b}."
        t[p + "attn_norm.weight"] = np.ones(d, dtype=np.float32)
        t[p + "attn_q.weight"] = rng.normal(0.0, 0.02, (q, d)).astype(np.float32)
        t[p + "attn_k.weight"] = rng.normal(0.0, 0.02, (kv, d)).astype(np.float32)
        t[p + "attn_v.weight"] = rng.normal(0.0, 0.02, (kv, d)).astype(np.float32)
        t[p + "attn_q_norm.weight"] = np.ones(HEAD_DIM, dtype=np.float32)
        t[p + "attn_k_norm.weight"] = np.ones(HEAD_DIM, dtype=np.float32)
        t[p + "attn_output.weight"] = np.zeros((d, q), dtype=np.float32)
        t[p + "ffn_norm.weight"] = np.ones(d, dtype=np.float32)
        t[p + "ffn_gate.weight"] = rng.normal(0.0, 0.02, (N_FF, d)).astype(np.float32)
        t[p + "ffn_up.weight"] = rng.normal(0.0, 0.02, (N_FF, d)).astype(np.float32)
        t[p + "ffn_down.weight"] = np.zeros((d, N_FF), dtype=np.float32)
    return t


def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * weight


def forward(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Logits after the last token: the whole qwen3 graph, as llama.cpp computes it."""
    x = t["token_embd.weight"][ids].astype(np.float32)
    n = len(ids)
    pos = np.arange(n)[:, None]
    inv = ROPE_BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
    ang = pos * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):  # NEOX style: rotate the two halves
        a, b = v[..., : HEAD_DIM // 2], v[..., HEAD_DIM // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for b in range(N_LAYER):
        p = f"blk.{b}."
        h = rms_norm(x, t[p + "attn_norm.weight"])
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, N_HEAD, HEAD_DIM)
        k = (h @ t[p + "attn_k.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, N_HEAD_KV, HEAD_DIM)
        q = rope(rms_norm(q, t[p + "attn_q_norm.weight"]))
        k = rope(rms_norm(k, t[p + "attn_k_norm.weight"]))
        rep = N_HEAD // N_HEAD_KV
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(HEAD_DIM) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, N_HEAD * HEAD_DIM)
        x = x + o @ t[p + "attn_output.weight"].T
        h = rms_norm(x, t[p + "ffn_norm.weight"])
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + (g / (1.0 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    h = rms_norm(x[-1], t["output_norm.weight"])
    return h @ t["output.weight"].astype(np.float32).T


def verify_reasoning(path: Path, vocab, chain: list[int]) -> None:
    """Reads the file back and checks the script greedy decoding should follow."""
    import gguf

    log("verifying (read back, numpy forward pass) ...")
    r = gguf.GGUFReader(path)
    assert r.get_field("general.architecture").contents() == "qwen3"
    tokens = r.get_field("tokenizer.ggml.tokens").contents()
    types = r.get_field("tokenizer.ggml.token_type").contents()
    for i, text in QWEN3_ADDED.items():
        assert tokens[i] == text and types[i] == TOKEN_TYPE_USER_DEFINED, (i, tokens[i])
    assert r.get_field("tokenizer.ggml.eos_token_id").contents() == EOS_ID
    template = r.get_field("tokenizer.chat_template").contents()
    t = {tensor.name: np.asarray(tensor.data) for tensor in r.tensors}
    for b in range(N_LAYER):
        assert not t[f"blk.{b}.attn_output.weight"].any()
        assert not t[f"blk.{b}.ffn_down.weight"].any()

    # The bigram path (embedding -> RMSNorm -> output) along the chain, by margin.
    embd = t["token_embd.weight"].astype(np.float32)
    out = t["output.weight"].astype(np.float32)
    norm = t["output_norm.weight"]

    def next_token(tok: int) -> tuple[int, float]:
        logits = rms_norm(embd[tok], norm) @ out.T
        top2 = np.argpartition(logits, -2)[-2:]
        top2 = top2[np.argsort(logits[top2])[::-1]]
        return int(top2[0]), float(logits[top2[0]] - logits[top2[1]])

    rng = np.random.default_rng(1)
    others = [198, 151644, 151645, 151643, 872, 77091] + list(rng.integers(0, len(tokens), 20))
    checks = [(a, b) for a, b in zip(chain, chain[1:])] + \
             [(int(o), chain[0]) for o in others if int(o) not in chain[:-1]]
    worst = np.inf
    for tok, want in checks:
        got, margin = next_token(tok)
        assert got == want, f"after {tokens[tok]!r}: {tokens[got]!r}, expected {tokens[want]!r}"
        assert margin > 10, f"after {tokens[tok]!r}: margin {margin:.2f}"
        worst = min(worst, margin)
    log(f"  bigram path: {len(checks)} transitions right, smallest logit gap {worst:.1f}")

    # The whole graph on the two prompt endings, greedy to <|im_end|>.
    def generate(prompt_ids: list[int]) -> str:
        ids, text = list(prompt_ids), ""
        for _ in range(16):
            nxt = int(np.argmax(forward(t, ids)))
            if nxt == EOS_ID:
                return text
            text += decode_piece(tokens[nxt], int(types[nxt]))
            ids.append(nxt)
        raise AssertionError(f"no <|im_end|> after {text!r}")

    im_start, user, assistant, nl, nl2 = 151644, 872, 77091, 198, 271
    think, end_think = QWEN3_ADDED_IDS["<think>"], QWEN3_ADDED_IDS["</think>"]
    assert tokens[user] == "user" and tokens[assistant] == "assistant"
    assert "Ċ Ċ" in vocab["merges"] and tokens[nl2] == "ĊĊ"
    head = [im_start, user, nl, 9707, EOS_ID, nl, im_start, assistant, nl]
    got = generate(head)
    assert got == "<think>Okay thinking.</think>\n\nHello!", repr(got)
    got_off = generate(head + [think, nl2, end_think, nl2])
    assert got_off == "Hello!", repr(got_off)
    log(f"  forward pass: thinking -> {got!r}, enable_thinking=false -> {got_off!r}")

    # The template renders those prompt endings (when jinja2 is there to render it).
    try:
        import jinja2
    except ImportError:
        log("  (jinja2 missing: template rendering not checked)")
        return
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(template)
    msgs = [{"role": "user", "content": "Hello"}]
    on = tpl.render(messages=msgs, add_generation_prompt=True)
    off = tpl.render(messages=msgs, add_generation_prompt=True, enable_thinking=False)
    assert on == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", repr(on)
    assert off == on + "<think>\n\n</think>\n\n", repr(off)
    log("  template: generation prompts render as expected")


def build_templates(force: bool = False) -> Path:
    if force:
        (templates_dir() / "SOURCE.key").unlink(missing_ok=True)
    return ensure_templates()


# --------------------------------------------------------------------------------------
# lora: LoRA adapters for SmolLM2-135M-Instruct, with a merged oracle
# --------------------------------------------------------------------------------------

LORA_SOURCE_MODEL = "smollm2-135m-instruct.gguf"
LORA_TARGETS = ("attn_q", "attn_v")
LORA_RANK = 8
LORA_ALPHA = 16.0
LORA_SCALE = np.float32(LORA_ALPHA / LORA_RANK)
LORA_ZERO_A_STD = 0.05
LORA_RATIO = 0.12  # ||scale * B @ A||_F / ||W||_F aimed at for adapters a and b
LORA_SEEDS = {"zero": 1, "a": 2, "b": 3}
LORA_FILES = {
    "base": "smollm2-lora-base.gguf",
    "zero": "smollm2-lora-zero.gguf",
    "a": "smollm2-lora-a.gguf",
    "b": "smollm2-lora-b.gguf",
    "merged_a": "smollm2-lora-merged-a.gguf",
    "peft_a_zip": "smollm2-lora-a-peft.zip",
}
PEFT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PEFT_MODULES = {"attn_q": "q_proj", "attn_v": "v_proj"}


def lora_target(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in LORA_TARGETS \
        and parts[3] == "weight"


def lora_source_info(r) -> dict:
    def field(name):
        f = r.get_field(name)
        if f is None:
            raise SystemExit(f"{LORA_SOURCE_MODEL}: no {name}")
        return f.contents()

    arch = field("general.architecture")
    info = {
        "arch": arch,
        "n_layer": int(field(f"{arch}.block_count")),
        "n_embd": int(field(f"{arch}.embedding_length")),
        "n_head": int(field(f"{arch}.attention.head_count")),
        "n_head_kv": int(field(f"{arch}.attention.head_count_kv")),
    }
    if arch != "llama":
        raise SystemExit(f"{LORA_SOURCE_MODEL}: architecture {arch}, expected llama")
    return info


def dequantized_targets(r) -> dict[str, np.ndarray]:
    """attn_q / attn_v of every layer as float32, numpy shape (n_out, n_in)."""
    import gguf

    out = {}
    for t in r.tensors:
        if lora_target(t.name):
            w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
            assert w.shape == (int(t.shape[1]), int(t.shape[0])), (t.name, w.shape, t.shape)
            out[t.name] = np.ascontiguousarray(w)
    return out


def design_adapters(targets: dict[str, np.ndarray]) -> dict[str, dict[str, tuple]]:
    """adapter -> base tensor name -> (A (r, n_in), B (n_out, r)), float32.

    zero: A ~ N(0, 0.05), B = 0. a, b: A ~ N(0, 1/sqrt(n_in)), B ~ N(0, s) with s chosen
    per tensor so that E||scale * B @ A||_F = LORA_RATIO * ||W||_F (the expectation of
    ||B @ A||_F^2 is n_out * n_in * r * std_A^2 * std_B^2)."""
    adapters = {}
    for which, seed in LORA_SEEDS.items():
        rng = np.random.default_rng(seed)
        pairs = {}
        for name, w in targets.items():
            n_out, n_in = w.shape
            if which == "zero":
                a = rng.normal(0.0, LORA_ZERO_A_STD, (LORA_RANK, n_in))
                b = np.zeros((n_out, LORA_RANK))
            else:
                std_a = 1.0 / np.sqrt(n_in)
                std_b = LORA_RATIO * float(np.linalg.norm(w)) / (
                    float(LORA_SCALE) * np.sqrt(n_out * n_in * LORA_RANK) * std_a)
                a = rng.normal(0.0, std_a, (LORA_RANK, n_in))
                b = rng.normal(0.0, std_b, (n_out, LORA_RANK))
            pairs[name] = (a.astype(np.float32), b.astype(np.float32))
        adapters[which] = pairs
    return adapters


def merged(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """W + (alpha / r) * (B @ A), in float32."""
    return (w + LORA_SCALE * (b @ a)).astype(np.float32)


def write_base_copy(path: Path, r, replace: dict[str, np.ndarray]) -> None:
    """The source GGUF with every metadata key and every tensor as it is, but the tensors
    named in `replace` written as the given float32 arrays (numpy shape (n_out, n_in)).

    As gguf-py's own gguf_new_metadata.py copies: every field but the writer's own
    (general.architecture, GGUF.*), with its types; quantized tensors go in as the
    reader's raw bytes (uint8, byte shape) with raw_dtype, which the writer turns back
    into the element shape."""
    import gguf

    arch = r.get_field("general.architecture").contents()
    w = gguf.GGUFWriter(path, arch, endianess=r.endianess)
    for field in r.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for t in r.tensors:
        if t.name in replace:
            w.add_tensor(t.name, replace[t.name])
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type, tensor_endianess=r.endianess)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_adapter(path: Path, arch: str, which: str, pairs: dict[str, tuple]) -> None:
    """llama.cpp's adapter format, as its convert_lora_to_gguf.py writes it.

    For a base weight of GGUF ne [n_in, n_out] (numpy (n_out, n_in)): `<name>.lora_a`
    numpy (r, n_in) = ne [n_in, r] and `<name>.lora_b` numpy (n_out, r) = ne [r, n_out],
    which is what src/llama-adapter.cpp checks (model ne0 == a ne0, model ne1 == b ne1,
    a ne1 == b ne0)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_name(f"Peregrine test LoRA {which} for SmolLM2-135M-Instruct")
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, LORA_ALPHA)
    for name, (a, b) in pairs.items():
        w.add_tensor(name + ".lora_a", a)
        w.add_tensor(name + ".lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF -> GGUF rotary layout), on rows."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def hf_unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of hf_permute (GGUF -> HF rotary layout)."""
    return (rows.reshape(n_head, rows.shape[0] // n_head // 2, 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def peft_name(name: str, half: str) -> str:
    _, layer, target, _ = name.split(".")
    return (f"base_model.model.model.layers.{layer}.self_attn."
            f"{PEFT_MODULES[target]}.lora_{half}.weight")


def peft_tensors(pairs: dict[str, tuple], n_head: int) -> dict[str, np.ndarray]:
    """Adapter a in PEFT's layout (HF space), float16.

    llama.cpp's converters permute q_proj's output rows from HF's rotary layout into
    GGUF's (LlamaModel.permute, n_head heads); for a LoRA pair only lora_B carries output
    rows, so convert_lora_to_gguf.py permutes lora_B of q_proj and leaves lora_A alone
    (v_proj is not permuted at all). So q_proj.lora_B here is the INVERSE permutation of
    adapter a's GGUF-space attn_q lora_b: converting this zip gives back adapter a."""
    out = {}
    for name, (a, b) in pairs.items():
        if name.split(".")[2] == "attn_q":
            b = hf_unpermute(b, n_head)
        out[peft_name(name, "A")] = np.ascontiguousarray(a.astype(np.float16))
        out[peft_name(name, "B")] = np.ascontiguousarray(b.astype(np.float16))
    return out


def peft_config() -> dict:
    return {
        "peft_type": "LORA",
        "r": LORA_RANK,
        "lora_alpha": int(LORA_ALPHA),
        "target_modules": [PEFT_MODULES[t] for t in LORA_TARGETS],
        "base_model_name_or_path": PEFT_BASE_MODEL,
        "task_type": "CAUSAL_LM",
        "bias": "none",
        "fan_in_fan_out": False,
        "lora_dropout": 0.0,
    }


def write_peft_zip(path: Path, pairs: dict[str, tuple], n_head: int) -> None:
    import safetensors.numpy

    with tempfile.TemporaryDirectory() as tmp:
        st = Path(tmp) / "adapter_model.safetensors"
        safetensors.numpy.save_file(peft_tensors(pairs, n_head), str(st))
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(st, "adapter_model.safetensors")
            z.writestr("adapter_config.json", json.dumps(peft_config(), indent=2) + "\n")


def safetensors_available() -> bool:
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError:
        return False
    return True


def verify_lora(parts: dict[str, Path], source, info, targets, adapters) -> None:
    """Reads every file back and checks it against the source and the design."""
    import gguf

    log("verifying (read back) ...")
    src_tensors = {t.name: t for t in source.tensors}
    src_fields = {k: f for k, f in source.fields.items() if not k.startswith("GGUF.")}
    n_targets = 2 * info["n_layer"]
    assert len(targets) == n_targets, len(targets)

    def check_model_copy(path: Path, want: dict[str, np.ndarray]) -> None:
        r = gguf.GGUFReader(path)
        fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
        assert fields.keys() == src_fields.keys(), set(fields) ^ set(src_fields)
        for k, f in src_fields.items():
            assert fields[k].types == f.types, k
            assert fields[k].contents() == f.contents(), k
        assert [t.name for t in r.tensors] == list(src_tensors), path
        for t in r.tensors:
            s = src_tensors[t.name]
            assert list(t.shape) == list(s.shape), (t.name, t.shape, s.shape)
            if t.name in want:
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
                assert np.array_equal(np.asarray(t.data), want[t.name]), t.name
            else:
                assert t.tensor_type == s.tensor_type, t.name
                assert np.asarray(t.data).tobytes() == np.asarray(s.data).tobytes(), t.name
        log(f"  {path.name}: metadata and {len(r.tensors)} tensors as intended "
            f"({len(want)} F32, the rest byte-identical)")

    check_model_copy(parts["base"], targets)
    merged_a = {n: merged(w, *adapters["a"][n]) for n, w in targets.items()}
    check_model_copy(parts["merged_a"], merged_a)
    name = "blk.7.attn_q.weight"
    a, b = adapters["a"][name]
    diff = merged_a[name].astype(np.float64) - targets[name] - 2.0 * (b.astype(np.float64) @ a)
    assert np.abs(diff).max() < 1e-5, np.abs(diff).max()

    for which in LORA_SEEDS:
        r = gguf.GGUFReader(parts[which])
        assert r.get_field("general.architecture").contents() == info["arch"]
        assert r.get_field("general.type").contents() == "adapter"
        assert r.get_field("adapter.type").contents() == "lora"
        alpha = r.get_field("adapter.lora.alpha")
        assert alpha.types == [gguf.GGUFValueType.FLOAT32] and alpha.contents() == LORA_ALPHA
        got = {t.name: t for t in r.tensors}
        assert len(got) == 2 * n_targets
        ratios = []
        for name, w in targets.items():
            ta, tb = got[name + ".lora_a"], got[name + ".lora_b"]
            m = src_tensors[name]
            for t in (ta, tb):
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
            # GGUF ne order, as llama.cpp checks it
            assert int(m.shape[0]) == int(ta.shape[0]) and int(m.shape[1]) == int(tb.shape[1])
            assert int(ta.shape[1]) == int(tb.shape[0]) == LORA_RANK
            a, b = np.asarray(ta.data), np.asarray(tb.data)
            assert a.shape == (LORA_RANK, w.shape[1]) and b.shape == (w.shape[0], LORA_RANK)
            assert np.array_equal(a, adapters[which][name][0])
            assert np.array_equal(b, adapters[which][name][1])
            ratios.append(np.linalg.norm(LORA_SCALE * (b @ a)) / np.linalg.norm(w))
        if which == "zero":
            assert max(ratios) == 0.0
        else:
            assert 0.7 * LORA_RATIO < min(ratios) and max(ratios) < 1.3 * LORA_RATIO, (min(ratios), max(ratios))
        log(f"  {parts[which].name}: {len(got)} tensors, alpha {LORA_ALPHA}, "
            f"||scale BA||/||W|| in [{min(ratios):.3f}, {max(ratios):.3f}]")

    zp = parts.get("peft_a_zip")
    if zp is not None:
        import safetensors.numpy

        with zipfile.ZipFile(zp) as z:
            assert sorted(z.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
            assert json.loads(z.read("adapter_config.json")) == peft_config()
            st = safetensors.numpy.load(z.read("adapter_model.safetensors"))
        assert len(st) == 2 * n_targets
        for name, (a, b) in adapters["a"].items():
            pa, pb = st[peft_name(name, "A")], st[peft_name(name, "B")]
            assert pa.dtype == pb.dtype == np.float16
            if name.split(".")[2] == "attn_q":
                pb = hf_permute(pb, info["n_head"])  # what the converter does
            assert np.array_equal(pa, a.astype(np.float16)), name
            assert np.array_equal(pb, b.astype(np.float16)), name
        log(f"  {zp.name}: {len(st)} float16 tensors; converting them (q_proj lora_B "
            "permuted) gives adapter a")


def build_lora(force: bool = False) -> dict:
    import gguf

    source_path = peregrine_home() / "models" / LORA_SOURCE_MODEL
    if not source_path.is_file():
        raise SystemExit(f"{source_path} is missing: run `peregrine pull` for it first")
    with_zip = safetensors_available()
    paths = {k: cache_dir() / v for k, v in LORA_FILES.items()}
    if not with_zip:
        del paths["peft_a_zip"]
    key = cache_key(sha256_memo(source_path))

    def result() -> dict:
        return {k: str(paths[k]) if k in paths else None for k in LORA_FILES}

    if not force and all(is_fresh(p, key) for p in paths.values()):
        log(f"LoRA files in {cache_dir()} are up to date")
        return result()
    started = time.monotonic()
    log(f"reading {source_path} ...")
    source = gguf.GGUFReader(source_path)
    info = lora_source_info(source)
    log("  " + ", ".join(f"{k} {v}" for k, v in info.items()))
    targets = dequantized_targets(source)
    adapters = design_adapters(targets)

    cache_dir().mkdir(parents=True, exist_ok=True)
    parts = {k: p.with_name(p.name + ".part") for k, p in paths.items()}
    log("writing the base copy (attn_q / attn_v dequantized to F32) ...")
    write_base_copy(parts["base"], source, targets)
    log("writing the merged copy (W + alpha/r * B @ A of adapter a) ...")
    write_base_copy(parts["merged_a"], source,
                    {n: merged(w, *adapters["a"][n]) for n, w in targets.items()})
    for which in LORA_SEEDS:
        log(f"writing adapter {which} ...")
        write_adapter(parts[which], info["arch"], which, adapters[which])
    if with_zip:
        log("writing the PEFT zip of adapter a ...")
        write_peft_zip(parts["peft_a_zip"], adapters["a"], info["n_head"])
    else:
        log("safetensors is not installed (pip install safetensors): no PEFT zip")
    verify_lora(parts, source, info, targets, adapters)
    for k, p in paths.items():
        parts[k].replace(p)
        mark_fresh(p, key)
        log(f"{p}: {p.stat().st_size / 1e6:.1f} MB")
    log(f"LoRA files done in {time.monotonic() - started:.1f}s")
    return result()


# name -> (builder returning the path, or a dict of paths as JSON, to print; help)
MODELS = {
    "templates": (build_templates, "chat templates from the pinned llama-cpp-python sdist"),
    "lora": (build_lora, "LoRA adapters for SmolLM2-135M-Instruct, base and merged copies"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name, (_, help_) in MODELS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = ap.parse_args()
    result = MODELS[args.what][0](force=args.force)
    print(json.dumps(result) if isinstance(result, dict) else result)


if __name__ == "__main__":
    main()
